/**
 * Hostile input at the edge: ids that would be subject injections, huge and deeply nested
 * bodies, `__proto__` keys. Each request must get an error reply (never a timeout), nothing may
 * reach the stream, and the service (running in this process) must stay healthy and unpolluted.
 */
import { randomUUID } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { request, startTestApp, type Reply, type TestApp } from "../support/service.ts";
import {
  GET,
  STREAM,
  SUBMIT,
  expectError,
  brief,
  expectOk,
  streamSubjects,
  type GetBody,
} from "../support/service-replies.ts";

let server: NatsServer;
let nc: NatsConnection;
let app: TestApp;
let knownAggregate: string;

beforeAll(async () => {
  server = await startTestNats();
  app = await startTestApp(server.url);
  nc = await connectTest(server);
  // Something in the stream, so that "unchanged" is not trivially "still empty".
  knownAggregate = randomUUID();
  expectOk(
    await request(nc, SUBMIT, { aggregate_id: knownAggregate, payload: { type: "deposit", amount: 5 } }),
  );
  expectOk(
    await request(
      nc,
      SUBMIT,
      { aggregate_id: knownAggregate, payload: { type: "deposit", amount: 5 } },
      { "x-tenant-id": "tenant-a" },
    ),
  );
});
afterAll(async () => {
  await nc?.close();
  await app?.stop();
  await server?.stop();
});

const HOSTILE = [
  "a.b",
  "*",
  ">",
  "a b",
  "x\r\ny",
  "",
  "tenant.x.aggregate.bank-account.>",
  "a".repeat(5_000),
];
const show = (v: string) => JSON.stringify(v.length > 40 ? `${v.slice(0, 20)}…(${v.length})` : v);

describe("hostile ids never reach a subject", () => {
  it("rejects hostile aggregate_id, command_id and tenant values with 400 and leaves the stream unchanged", async () => {
    const before = await streamSubjects(nc);
    const lastSeqBefore = (await (await jetstreamManager(nc)).streams.info(STREAM)).state.last_seq;
    const deposit = { type: "deposit", amount: 1 };
    const attempts: Array<[string, Promise<Reply>, string]> = [];
    for (const value of HOSTILE) {
      attempts.push(
        [
          `submit aggregate_id ${show(value)}`,
          request(nc, SUBMIT, { aggregate_id: value, payload: deposit }),
          "ValidationError",
        ],
        [
          `submit command_id ${show(value)}`,
          request(nc, SUBMIT, { command_id: value, payload: deposit }),
          "ValidationError",
        ],
        [`get aggregate_id ${show(value)}`, request(nc, GET, { aggregate_id: value }), "ValidationError"],
      );
      // The empty tenant is the default tenant (valid); everything else here is invalid.
      if (value !== "") {
        attempts.push([
          `body tenant_id ${show(value)}`,
          request(nc, SUBMIT, { tenant_id: value, aggregate_id: knownAggregate, payload: deposit }),
          "InvalidTenantId",
        ]);
        // CR/LF cannot be carried in a NATS header value at all (they end the header line),
        // and the client refuses to send them, so that case exists only in the body.
        if (!/[\r\n]/.test(value)) {
          attempts.push([
            `x-tenant-id ${show(value)}`,
            request(nc, SUBMIT, { aggregate_id: knownAggregate, payload: deposit }, { "x-tenant-id": value }),
            "InvalidTenantId",
          ]);
          attempts.push([
            `get x-tenant-id ${show(value)}`,
            request(nc, GET, { aggregate_id: knownAggregate }, { "x-tenant-id": value }),
            "InvalidTenantId",
          ]);
        }
      }
    }
    for (const [what, pending, code] of attempts) {
      const reply = await pending;
      expect(reply.status, `${what}: ${brief(reply.body)}`).toBe(400);
      expectError(reply, 400, code);
    }
    expect(await streamSubjects(nc)).toEqual(before);
    expect((await (await jetstreamManager(nc)).streams.info(STREAM)).state.last_seq).toBe(lastSeqBefore);
  });

  it("rejects a hostile x-correlation-id with 400 rather than writing it into a header", async () => {
    const before = await streamSubjects(nc);
    for (const value of ["a b", "x".repeat(5_000)]) {
      const reply = await request(
        nc,
        SUBMIT,
        { aggregate_id: knownAggregate, payload: { type: "deposit", amount: 1 } },
        { "x-correlation-id": value },
      );
      expectError(reply, 400, "ValidationError");
    }
    expect(await streamSubjects(nc)).toEqual(before);
  });
});

describe("malformed request storm", () => {
  it("answers 200 malformed, deep, huge and __proto__ requests, then still serves a valid command unpolluted", async () => {
    // nats-server's default max_payload is 1 MiB; stay just under it with the headers.
    const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
    const huge = maxPayload - 4 * 1024;
    const deepArray = "[".repeat(10_000) + "]".repeat(10_000);
    const deepPayload = `{"payload":${'{"a":'.repeat(10_000)}1${"}".repeat(10_000)}}`;
    const deepTypedPayload = `{"payload":{"type":"deposit","amount":1,"x":${"[".repeat(10_000)}${"]".repeat(10_000)}}}`;
    const protoTop = '{"__proto__":{"polluted":1},"payload":{"type":"deposit","amount":1}}';
    const protoPayload = '{"payload":{"type":"deposit","amount":1,"__proto__":{"polluted":1}}}';
    const protoMeta = '{"payload":{"type":"deposit","amount":1},"metadata":{"__proto__":{"polluted":1}}}';
    const constructorProto =
      '{"payload":{"type":"deposit","amount":1,"constructor":{"prototype":{"polluted":1}}}}';
    const hugeInvalid = "{" + "x".repeat(huge);
    const hugeUnknownKey = JSON.stringify({
      payload: { type: "deposit", amount: 1 },
      pad: "x".repeat(huge - 60),
    });
    // Valid: the pad is not part of the event, so this one must succeed.
    const hugeValid = JSON.stringify({ payload: { type: "deposit", amount: 1, pad: "x".repeat(huge - 60) } });

    type Kind = { body: string; expect: "400" | "400-or-ok" | "ok" };
    const kinds: Kind[] = [
      { body: "{not json", expect: "400" },
      { body: '{"payload":', expect: "400" },
      { body: deepArray, expect: "400" },
      { body: deepPayload, expect: "400" },
      { body: deepTypedPayload, expect: "400" },
      // An unknown top-level key, like any other; inside payload or metadata it is data.
      { body: protoTop, expect: "400" },
      { body: protoPayload, expect: "400-or-ok" },
      { body: protoMeta, expect: "400-or-ok" },
      { body: constructorProto, expect: "400-or-ok" },
      { body: "\u0000\u0001\u0002", expect: "400" },
    ];
    const hugeKinds: Kind[] = [
      { body: hugeInvalid, expect: "400" },
      { body: hugeUnknownKey, expect: "400" },
      { body: hugeValid, expect: "ok" },
    ];

    const outcomes: string[] = [];
    const send = async (kind: Kind, i: number) => {
      let reply: Reply;
      try {
        reply = await request(nc, SUBMIT, kind.body, {}, 15_000);
      } catch (err) {
        throw new Error(`request ${i} (${kind.body.slice(0, 40)}…) got no reply: ${String(err)}`, {
          cause: err,
        });
      }
      if (reply.status === undefined) {
        expect(kind.expect, `request ${i} (${kind.body.slice(0, 40)}) succeeded`).toMatch(/ok/);
        outcomes.push("ok");
      } else {
        expectError(
          reply,
          reply.status,
          reply.body["error"] ? (reply.body["error"] as { code: string }).code : "?",
        );
        const allowed = kind.expect
          .split("-or-")
          .filter((s) => s !== "ok")
          .map(Number);
        expect(allowed, `request ${i} (${kind.body.slice(0, 40)}): ${brief(reply.body)}`).toContain(
          reply.status,
        );
        outcomes.push(String(reply.status));
      }
    };

    // 200 requests: 195 small ones, 50 at a time, and 5 of about 1 MB.
    const plan: Kind[] = Array.from({ length: 195 }, (_, i) => kinds[i % kinds.length]!);
    for (let i = 0; i < plan.length; i += 50) {
      await Promise.all(plan.slice(i, i + 50).map((kind, j) => send(kind, i + j)));
    }
    for (const [i, kind] of [...hugeKinds, hugeKinds[0]!, hugeKinds[2]!].entries()) await send(kind, 195 + i);
    expect(outcomes).toHaveLength(200);

    // Still serving, and nothing leaked into Object.prototype of this process (the service runs here).
    const aggregateId = randomUUID();
    const body = expectOk(
      await request(nc, SUBMIT, { aggregate_id: aggregateId, payload: { type: "deposit", amount: 9 } }),
    );
    expect(body.version).toBe(1);
    expect(expectOk<GetBody>(await request(nc, GET, { aggregate_id: aggregateId })).state).toEqual({
      balance: 9,
      status: "open",
    });
    expect(({} as Record<string, unknown>)["polluted"]).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty("polluted");
    expect((Object.prototype as Record<string, unknown>)["polluted"]).toBeUndefined();
  });

  it("answers a valid command whose events exceed one message with 413 PayloadTooLarge", async () => {
    const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
    // The request itself fits (200 bytes to spare); the stored commit adds the event envelope
    // (ids, timestamp, ~370 bytes) around the owner, so it cannot.
    const owner = "x".repeat(maxPayload - 200);
    const before = await streamSubjects(nc);
    const reply = await request(
      nc,
      SUBMIT,
      { payload: { type: "open", initial_balance: 0, owner } },
      {},
      15_000,
    );
    expectError(reply, 413, "PayloadTooLarge");
    expect(await streamSubjects(nc)).toEqual(before);
  });
});

/**
 * The NATS micro protocol (`$SRV.PING/INFO/STATS`, io.nats.micro.v1) seen with raw requests, and
 * two replicas of the service in one queue group sharing commands, also on one aggregate.
 */
import { randomUUID } from "node:crypto";
import { createInbox, type NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { request, startTestApp, type TestApp } from "../support/service.ts";
import { GET, SUBMIT, expectError, expectOk, type GetBody } from "../support/service-replies.ts";

const SERVICE = "aggregate-bank-account";

interface EndpointStats {
  name: string;
  subject: string;
  queue_group?: string;
  num_requests: number;
  num_errors: number;
  data?: Record<string, unknown>;
}
interface StatsResponse {
  type: string;
  name: string;
  id: string;
  version: string;
  endpoints: EndpointStats[];
}

let server: NatsServer;
let nc: NatsConnection;
let first: TestApp;
let second: TestApp | undefined;

beforeAll(async () => {
  server = await startTestNats();
  first = await startTestApp(server.url);
  nc = await connectTest(server);
});
afterAll(async () => {
  await nc?.close();
  await second?.stop();
  await first?.stop();
  await server?.stop();
});

async function raw<T>(subject: string): Promise<T> {
  const msg = await nc.request(subject, "", { timeout: 2_000 });
  return msg.json<T>();
}

/** Every answer to a `$SRV` request within `waitMs` (one per service instance). */
async function all<T>(subject: string, waitMs = 500): Promise<T[]> {
  const inbox = createInbox();
  const out: T[] = [];
  const sub = nc.subscribe(inbox, {
    callback: (_err, msg) => {
      out.push(msg.json<T>());
    },
  });
  nc.publish(subject, "", { reply: inbox });
  await new Promise((resolve) => setTimeout(resolve, waitMs));
  sub.unsubscribe();
  return out;
}

describe("$SRV protocol", () => {
  it("answers $SRV.PING and $SRV.PING.aggregate-bank-account with a ping response", async () => {
    for (const subject of ["$SRV.PING", `$SRV.PING.${SERVICE}`]) {
      const ping = await raw<Record<string, unknown>>(subject);
      expect(ping["type"]).toBe("io.nats.micro.v1.ping_response");
      expect(ping["name"]).toBe(SERVICE);
      expect(ping["version"]).toBe("0.0.0-test");
      expect(typeof ping["id"]).toBe("string");
    }
  });

  it("answers $SRV.INFO.aggregate-bank-account listing the submit and get endpoints", async () => {
    const info = await raw<{
      type: string;
      name: string;
      description: string;
      metadata: Record<string, string>;
      endpoints: Array<{ name: string; subject: string; queue_group?: string }>;
    }>(`$SRV.INFO.${SERVICE}`);
    expect(info.type).toBe("io.nats.micro.v1.info_response");
    expect(info.name).toBe(SERVICE);
    expect(info.description.length).toBeGreaterThan(0);
    expect(info.metadata["aggregate_type"]).toBe("bank-account");
    const subjects = info.endpoints.map((e) => e.subject).sort();
    expect(subjects).toEqual(expect.arrayContaining([SUBMIT, GET]));
    for (const e of info.endpoints.filter((e) => e.subject === SUBMIT || e.subject === GET)) {
      // The default queue group: any replica can take any request.
      expect(e.queue_group).toBe("q");
    }
  });

  it("answers $SRV.STATS.aggregate-bank-account with request counts and custom endpoint data", async () => {
    const aggregateId = randomUUID();
    for (let i = 0; i < 3; i++) {
      expectOk(
        await request(nc, SUBMIT, { aggregate_id: aggregateId, payload: { type: "deposit", amount: 1 } }),
      );
    }
    expectError(
      await request(nc, SUBMIT, { aggregate_id: aggregateId, payload: { type: "withdraw", amount: 99 } }),
      422,
      "DecideError",
    );
    expectError(await request(nc, SUBMIT, "{"), 400, "ValidationError");
    expectOk(await request(nc, GET, { aggregate_id: aggregateId }));

    const stats = await raw<StatsResponse>(`$SRV.STATS.${SERVICE}`);
    expect(stats.type).toBe("io.nats.micro.v1.stats_response");
    expect(stats.name).toBe(SERVICE);
    const submit = stats.endpoints.find((e) => e.subject === SUBMIT);
    const get = stats.endpoints.find((e) => e.subject === GET);
    expect(submit?.num_requests).toBe(5);
    // num_errors is not asserted: @nats-io/services counts only synchronous throws, and every
    // handler here is async (its errors are counted in the custom data below instead).
    expect(get?.num_requests).toBe(1);
    // Custom counters of the aggregate type (submit and get together).
    expect(submit?.data).toMatchObject({
      in_flight: 0,
      requests: 6,
      ok: 4,
      errors: 2,
      errors_by_code: { DecideError: 1, ValidationError: 1 },
    });
  });
});

describe("two replicas", () => {
  it("share the load: both answer $SRV.PING and both take commands", async () => {
    second = await startTestApp(server.url);
    const pings = await all<{ id: string; name: string }>(`$SRV.PING.${SERVICE}`);
    expect(pings.map((p) => p.name)).toEqual([SERVICE, SERVICE]);
    expect(new Set(pings.map((p) => p.id)).size).toBe(2);

    const before = [
      first.services.stats("bank-account")!.requests,
      second.services.stats("bank-account")!.requests,
    ];
    const replies = await Promise.all(
      Array.from({ length: 40 }, () => request(nc, SUBMIT, { payload: { type: "deposit", amount: 1 } })),
    );
    replies.forEach((r) => expectOk(r));
    const after = [
      first.services.stats("bank-account")!.requests,
      second.services.stats("bank-account")!.requests,
    ];
    expect(after[0]! - before[0]!).toBeGreaterThan(0);
    expect(after[1]! - before[1]!).toBeGreaterThan(0);
    expect(after[0]! - before[0]! + (after[1]! - before[1]!)).toBe(40);

    // The same seen from outside through $SRV.STATS: one response per instance, each with requests.
    const stats = await all<StatsResponse>(`$SRV.STATS.${SERVICE}`);
    expect(stats).toHaveLength(2);
    for (const s of stats) {
      expect(s.endpoints.find((e) => e.subject === SUBMIT)?.num_requests).toBeGreaterThan(0);
    }
  });

  it("gives versions 1..100 exactly once for a storm of 100 commands on one aggregate over both", async () => {
    const aggregateId = randomUUID();
    const before = [
      first.services.stats("bank-account")!.requests,
      second!.services.stats("bank-account")!.requests,
    ];
    const amounts = Array.from({ length: 100 }, (_, i) => i + 1);
    const replies = await Promise.all(
      amounts.map((amount) =>
        request(nc, SUBMIT, { aggregate_id: aggregateId, payload: { type: "deposit", amount } }, {}, 30_000),
      ),
    );
    const bodies = replies.map((r) => expectOk(r));
    expect(bodies.map((b) => b.version).sort((a, b) => a - b)).toEqual(amounts);
    // Each command's single event carries the version its reply reports.
    for (const b of bodies) expect(b.events.map((e) => e.version)).toEqual([b.version]);
    const after = [
      first.services.stats("bank-account")!.requests,
      second!.services.stats("bank-account")!.requests,
    ];
    expect(after[0]! - before[0]!).toBeGreaterThan(0);
    expect(after[1]! - before[1]!).toBeGreaterThan(0);

    const state = expectOk<GetBody>(await request(nc, GET, { aggregate_id: aggregateId }));
    expect(state.version).toBe(100);
    expect(state.state["balance"]).toBe(5050);
  });
});

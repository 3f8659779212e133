/**
 * The seed's integration tests (T11.2–T11.10) as NATS requests against the service started
 * in-process on a real nats-server: concurrency, ordering, idempotency, restart recovery, the
 * bank scenario, tenant namespaces in the stream and the snapshot bucket.
 */
import { randomUUID } from "node:crypto";
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { FUNCTIONS_DIR, request, startTestApp, type TestApp } from "../support/service.ts";
import {
  BUCKET,
  GET,
  STREAM,
  SUBMIT,
  eventually,
  expectError,
  expectOk,
  streamSubjects,
  type EventEnvelope,
  type GetBody,
} from "../support/service-replies.ts";

/** A 1 s JetStream duplicate window (the smallest allowed): lets a test outlive it cheaply. */
const ENV = { AGGREGATE_DUPLICATE_WINDOW_MS: "1000" };

let server: NatsServer;
let nc: NatsConnection;
let app: TestApp;
let functionsWithoutThreshold: string;

beforeAll(async () => {
  server = await startTestNats();
  app = await startTestApp(server.url, ENV);
  nc = await connectTest(server);
  // The bank-account programs with a manifest that leaves snapshot_threshold to the service's
  // default, so that AGGREGATE_SNAPSHOT_THRESHOLD decides (the real manifest pins it to 100).
  functionsWithoutThreshold = await mkdtemp(path.join(tmpdir(), "aggregate-functions-"));
  const dir = path.join(functionsWithoutThreshold, "bank-account");
  await cp(path.join(FUNCTIONS_DIR, "bank-account"), dir, { recursive: true });
  await writeFile(
    path.join(dir, "manifest.yaml"),
    "decide: decide.js\napply: apply.js\ninitial_state: { balance: 0, status: new }\n",
  );
});
afterAll(async () => {
  await nc?.close();
  await app?.stop();
  await server?.stop();
  if (functionsWithoutThreshold) await rm(functionsWithoutThreshold, { recursive: true, force: true });
});

/** Replaces the running app with a new one on the same server and stream. */
async function restart(env: Record<string, string> = {}): Promise<void> {
  await app.stop();
  app = await startTestApp(server.url, { ...ENV, ...env });
}

const submit = (body: Record<string, unknown>, tenant?: string) =>
  request(nc, SUBMIT, body, tenant === undefined ? {} : { "x-tenant-id": tenant });
const get = (aggregateId: string, tenant?: string) =>
  request(nc, GET, { aggregate_id: aggregateId }, tenant === undefined ? {} : { "x-tenant-id": tenant });

/** Every commit on one subject, read straight from the stream in stream order. */
async function commitsOn(subject: string) {
  const jsm = await jetstreamManager(nc);
  const out: Array<{
    seq: number;
    version: string | undefined;
    msgId: string | undefined;
    body: { command_id: string; events: EventEnvelope[] };
  }> = [];
  let seq = 0;
  for (;;) {
    const m = await jsm.direct.getMessage(STREAM, { seq: seq + 1, next_by_subj: subject }).catch(() => null);
    if (!m) return out;
    out.push({
      seq: m.seq,
      version: m.header.get("Aggregate-Version") || undefined,
      msgId: m.header.get("Nats-Msg-Id") || undefined,
      body: m.json(),
    });
    seq = m.seq;
  }
}

/** The stream message at a sequence (from a reply's stream_seq). */
async function messageAt(seq: number | undefined) {
  expect(seq).toBeGreaterThan(0);
  const jsm = await jetstreamManager(nc);
  const m = await jsm.streams.getMessage(STREAM, { seq: seq! });
  if (!m) return expect.fail(`no message at stream sequence ${seq}`);
  return m;
}

describe("concurrency and ordering", () => {
  it("handles 10 concurrent commands to one aggregate: all succeed, versions 1..10 (T11.2)", async () => {
    const aggregateId = randomUUID();
    const replies = await Promise.all(
      Array.from({ length: 10 }, () =>
        submit({ aggregate_id: aggregateId, payload: { type: "deposit", amount: 10 } }, "tenant-a"),
      ),
    );
    const bodies = replies.map((r) => expectOk(r));
    expect(bodies.map((b) => b.version).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const seqs = bodies.map((b) => b.stream_seq);
    expect(new Set(seqs).size).toBe(10);
    const state = expectOk<GetBody>(await get(aggregateId, "tenant-a"));
    expect(state.version).toBe(10);
    expect(state.state["balance"]).toBe(100);
  });

  it("stores events in command order with contiguous versions (T11.3)", async () => {
    const aggregateId = randomUUID();
    const commandIds: string[] = [];
    for (let amount = 1; amount <= 10; amount++) {
      const commandId = randomUUID();
      commandIds.push(commandId);
      const body = expectOk(
        await submit(
          { aggregate_id: aggregateId, command_id: commandId, payload: { type: "deposit", amount } },
          "tenant-a",
        ),
      );
      expect(body.version).toBe(amount);
    }
    const commits = await commitsOn(`tenant.tenant-a.aggregate.bank-account.${aggregateId}`);
    expect(commits.map((c) => c.body.command_id)).toEqual(commandIds);
    expect(commits.map((c) => c.version)).toEqual(["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
    const events = commits.flatMap((c) => c.body.events);
    expect(events.map((e) => e.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(events.map((e) => e.payload["amount"])).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(commits.every((c, i) => i === 0 || c.seq > commits[i - 1]!.seq)).toBe(true);
    expect(commits[0]?.msgId).toContain(commandIds[0]);
  });
});

describe("idempotency (T11.4)", () => {
  it("answers the same command twice with the original reply and duplicate: true, appending once", async () => {
    const aggregateId = randomUUID();
    const command = {
      aggregate_id: aggregateId,
      command_id: randomUUID(),
      payload: { type: "deposit", amount: 100 },
    };
    const first = expectOk(await submit(command, "tenant-a"));
    const second = expectOk(await submit(command, "tenant-a"));
    expect(first.duplicate).toBe(false);
    expect(second.duplicate).toBe(true);
    expect({ ...second, duplicate: false }).toEqual(first);
    expect(second.events.map((e) => [e.event_id, e.timestamp])).toEqual(
      first.events.map((e) => [e.event_id, e.timestamp]),
    );

    // Recognised from the log too, not only from the worker's memory.
    app.handler.clearCache();
    const third = expectOk(await submit(command, "tenant-a"));
    expect({ ...third, duplicate: false }).toEqual(first);
    expect(third.duplicate).toBe(true);

    const subjects = await streamSubjects(nc);
    expect(subjects[`tenant.tenant-a.aggregate.bank-account.${aggregateId}`]).toBe(1);
    expect(expectOk<GetBody>(await get(aggregateId, "tenant-a")).state["balance"]).toBe(100);
  });

  it("keeps a retried command a duplicate after it is no longer the last one", async () => {
    const aggregateId = randomUUID();
    const command = {
      aggregate_id: aggregateId,
      command_id: randomUUID(),
      payload: { type: "deposit", amount: 7 },
    };
    const first = expectOk(await submit(command, "tenant-a"));
    expectOk(
      await submit({ aggregate_id: aggregateId, payload: { type: "deposit", amount: 1 } }, "tenant-a"),
    );
    const retry = expectOk(await submit(command, "tenant-a"));
    expect(retry.duplicate).toBe(true);
    expect(retry.version).toBe(1);
    expect(retry.stream_seq).toBe(first.stream_seq);
    expect(expectOk<GetBody>(await get(aggregateId, "tenant-a")).version).toBe(2);
  });
});

describe("restart recovery (T11.5)", () => {
  it("keeps state and recognises a retried command id after the app restarts, past the duplicate window", async () => {
    const aggregateId = randomUUID();
    const command = {
      aggregate_id: aggregateId,
      command_id: randomUUID(),
      payload: { type: "deposit", amount: 100 },
    };
    const first = expectOk(await submit(command, "tenant-a"));
    expectOk(
      await submit({ aggregate_id: aggregateId, payload: { type: "withdraw", amount: 30 } }, "tenant-a"),
    );

    await restart();
    // The stream's duplicate window is 1 s: past it, only the service itself can tell a retry.
    await new Promise((resolve) => setTimeout(resolve, 1_100));

    const state = expectOk<GetBody>(await get(aggregateId, "tenant-a"));
    expect(state.version).toBe(2);
    expect(state.state).toEqual({ balance: 70, status: "open" });

    const retry = expectOk(await submit(command, "tenant-a"));
    expect(retry.duplicate).toBe(true);
    expect(retry.version).toBe(1);
    expect(retry.events).toEqual(first.events);
    expect(retry.stream_seq).toBe(first.stream_seq);

    const next = expectOk(
      await submit({ aggregate_id: aggregateId, payload: { type: "deposit", amount: 5 } }, "tenant-a"),
    );
    expect(next.version).toBe(3);
    expect((await streamSubjects(nc))[`tenant.tenant-a.aggregate.bank-account.${aggregateId}`]).toBe(3);
  });
});

describe("full bank scenario (T11.6)", () => {
  it("open 0, deposit 100, deposit 50, withdraw 75 gives balance 75 at version 4", async () => {
    const aggregateId = randomUUID();
    const steps = [
      { type: "open_account", initial_balance: 0 },
      { type: "deposit", amount: 100 },
      { type: "deposit", amount: 50 },
      { type: "withdraw", amount: 75 },
    ];
    const types: string[] = [];
    for (const [i, payload] of steps.entries()) {
      const body = expectOk(await submit({ aggregate_id: aggregateId, payload }, "tenant-a"));
      expect(body.version).toBe(i + 1);
      types.push(...body.events.map((e) => e.event_type));
    }
    expect(types).toEqual(["opened", "deposited", "deposited", "withdrawn"]);
    const state = expectOk<GetBody>(await get(aggregateId, "tenant-a"));
    expect(state).toEqual({
      tenant_id: "tenant-a",
      aggregate_type: "bank-account",
      aggregate_id: aggregateId,
      version: 4,
      state: { balance: 75, status: "open" },
    });

    // The rules of the example: no overdraft, close only at 0, nothing after close.
    expectError(
      await submit({ aggregate_id: aggregateId, payload: { type: "withdraw", amount: 76 } }, "tenant-a"),
      422,
      "DecideError",
      "insufficient funds",
    );
    expectError(
      await submit({ aggregate_id: aggregateId, payload: { type: "close" } }, "tenant-a"),
      422,
      "DecideError",
    );
    expectError(
      await submit({ aggregate_id: aggregateId, payload: { type: "deposit", amount: 0 } }, "tenant-a"),
      422,
      "DecideError",
    );
    expectOk(
      await submit({ aggregate_id: aggregateId, payload: { type: "withdraw", amount: 75 } }, "tenant-a"),
    );
    expect(
      expectOk(await submit({ aggregate_id: aggregateId, payload: { type: "close" } }, "tenant-a")).version,
    ).toBe(6);
    expectError(
      await submit({ aggregate_id: aggregateId, payload: { type: "deposit", amount: 1 } }, "tenant-a"),
      422,
      "DecideError",
    );
    expect(expectOk<GetBody>(await get(aggregateId, "tenant-a")).state).toEqual({
      balance: 0,
      status: "closed",
    });
  });
});

describe("tenant namespaces (T11.7–T11.9)", () => {
  it("keeps the same aggregate id under two tenants as two aggregates", async () => {
    const aggregateId = randomUUID();
    const a = expectOk(
      await submit({ aggregate_id: aggregateId, payload: { type: "deposit", amount: 100 } }, "tenant-a"),
    );
    const b = expectOk(
      await submit({ aggregate_id: aggregateId, payload: { type: "deposit", amount: 200 } }, "tenant-b"),
    );
    expect(a.version).toBe(1);
    expect(b.version).toBe(1);

    const stateA = expectOk<GetBody>(await get(aggregateId, "tenant-a"));
    const stateB = expectOk<GetBody>(await get(aggregateId, "tenant-b"));
    expect([stateA.tenant_id, stateA.version, stateA.state["balance"]]).toEqual(["tenant-a", 1, 100]);
    expect([stateB.tenant_id, stateB.version, stateB.state["balance"]]).toEqual(["tenant-b", 1, 200]);
    expectError(await get(aggregateId, "tenant-c"), 404, "NotFound");
    expectError(await get(aggregateId), 404, "NotFound");

    const subjects = await streamSubjects(nc);
    expect(subjects[`tenant.tenant-a.aggregate.bank-account.${aggregateId}`]).toBe(1);
    expect(subjects[`tenant.tenant-b.aggregate.bank-account.${aggregateId}`]).toBe(1);
    expect((await messageAt(a.stream_seq)).subject).toBe(
      `tenant.tenant-a.aggregate.bank-account.${aggregateId}`,
    );
    expect((await messageAt(b.stream_seq)).subject).toBe(
      `tenant.tenant-b.aggregate.bank-account.${aggregateId}`,
    );
  });

  it("stores every commit of tenant acme-corp under tenant.acme-corp. and nothing else there", async () => {
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    const seqs: number[] = [];
    for (const id of ids) {
      for (const amount of [10, 20]) {
        seqs.push(
          expectOk(await submit({ aggregate_id: id, payload: { type: "deposit", amount } }, "acme-corp"))
            .stream_seq!,
        );
      }
    }
    for (const seq of seqs) {
      const m = await messageAt(seq);
      expect(m.subject.startsWith("tenant.acme-corp.")).toBe(true);
      const commit = m.json<{ events: EventEnvelope[] }>();
      expect(commit.events.every((e) => e.tenant_id === "acme-corp")).toBe(true);
    }
    // Every subject in the whole stream follows the contract's shape, and the acme-corp ones are
    // exactly this test's aggregates.
    const subjects = await streamSubjects(nc);
    for (const subject of Object.keys(subjects)) {
      expect(subject).toMatch(/^tenant\.[A-Za-z0-9_][A-Za-z0-9_-]*\.aggregate\.bank-account\.[0-9a-f-]{36}$/);
    }
    const acme = Object.entries(subjects).filter(([s]) => s.startsWith("tenant.acme-corp."));
    expect(acme.map(([s, n]) => [s, n]).sort()).toEqual(
      ids.map((id) => [`tenant.acme-corp.aggregate.bank-account.${id}`, 2]).sort(),
    );
  });
});

describe("default tenant (T11.10)", () => {
  it("stores the default tenant under tenant._ and its snapshot under key _.bank-account.<id>", async () => {
    await restart({ AGGREGATE_FUNCTIONS_DIR: functionsWithoutThreshold, AGGREGATE_SNAPSHOT_THRESHOLD: "1" });
    const aggregateId = randomUUID();
    const body = expectOk(
      await submit({ aggregate_id: aggregateId, payload: { type: "deposit", amount: 100 } }),
    );
    expect(body.tenant_id).toBe("");

    expect((await messageAt(body.stream_seq)).subject).toBe(`tenant._.aggregate.bank-account.${aggregateId}`);

    // Snapshots are written off the reply path: poll briefly.
    const kv = await new Kvm(nc).open(BUCKET);
    const entry = await eventually(
      "the snapshot",
      async () => (await kv.get(`_.bank-account.${aggregateId}`)) ?? undefined,
    );
    const snapshot = entry.json<Record<string, unknown>>();
    expect(snapshot).toMatchObject({
      tenant_id: "",
      aggregate_id: aggregateId,
      aggregate_type: "bank-account",
      version: 1,
      stream_seq: body.stream_seq,
      state: { balance: 100, status: "open" },
    });
    expect(typeof snapshot["created_at"]).toBe("string");

    // A named tenant's snapshot uses its own token.
    const other = expectOk(
      await submit({ aggregate_id: aggregateId, payload: { type: "deposit", amount: 3 } }, "tenant-a"),
    );
    const tenantEntry = await eventually(
      "tenant-a's snapshot",
      async () => (await kv.get(`tenant-a.bank-account.${aggregateId}`)) ?? undefined,
    );
    expect(tenantEntry.json<Record<string, unknown>>()).toMatchObject({
      tenant_id: "tenant-a",
      version: 1,
      stream_seq: other.stream_seq,
      state: { balance: 3 },
    });

    // The state survives a restart that has to start from the snapshot.
    await restart({ AGGREGATE_FUNCTIONS_DIR: functionsWithoutThreshold, AGGREGATE_SNAPSHOT_THRESHOLD: "1" });
    expect(expectOk<GetBody>(await get(aggregateId)).state).toEqual({ balance: 100, status: "open" });
  });
});

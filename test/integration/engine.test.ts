/**
 * The engine end to end below the service layer: the command handler with the real sandbox,
 * the real JetStream event log and the real KV snapshot store on a real nats-server.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createCommandHandler,
  type AggregateTypeRuntime,
  type CommandHandler,
} from "../../shared/aggregate/index.ts";
import {
  TenantAccessDenied,
  type AggregateId,
  type AggregateType,
  type Command,
  type CommandId,
  type JsonObject,
  type TenantId,
} from "../../shared/contract/index.ts";
import { createEventLog, ensureEventStream } from "../../shared/event-log/index.ts";
import { loadFunctions } from "../../shared/functions/index.ts";
import { DEFAULT_BUCKET, DEFAULT_STREAM } from "../../shared/naming/index.ts";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { compileProgramFile, createQuickJsSandbox, type Sandbox } from "../../shared/sandbox/index.ts";
import { payloadHash } from "../../shared/service/index.ts";
import { createSnapshotStore, openSnapshotBucket } from "../../shared/snapshot-store/index.ts";
import { memoryLogger } from "../support/memory-ports.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { FUNCTIONS_DIR } from "../support/service.ts";

const TYPE = "bank-account" as AggregateType;
/** Short, so a test can outwait JetStream's own dedup and prove the aggregate's record works. */
const DUPLICATE_WINDOW_MS = 1_000;

let server: NatsServer;
let nc: NatsConnection;
let kv: KV;
let sandbox: Sandbox;
let bank: Omit<AggregateTypeRuntime, "snapshotThreshold">;
const connections: NatsConnection[] = [];

beforeAll(async () => {
  server = await startTestNats();
  nc = await connectTest(server);
  await ensureEventStream(nc, DEFAULT_STREAM, { duplicateWindowMs: DUPLICATE_WINDOW_MS });
  kv = await openSnapshotBucket(nc, DEFAULT_BUCKET);
  sandbox = createQuickJsSandbox();
  const [fn] = await loadFunctions(
    FUNCTIONS_DIR,
    { snapshotThreshold: 100, timeoutMs: 1000, memoryMb: 32 },
    compileProgramFile,
  );
  bank = { program: await sandbox.load(fn!.source), initialState: fn!.initialState };
});

afterAll(async () => {
  for (const c of connections) await c.close();
  await nc.close();
  await sandbox.close();
  await server.stop();
});

/** A handler as one worker has it: its own NATS connection when `own` is set. */
async function handler(threshold = 100, own = false): Promise<CommandHandler> {
  let conn = nc;
  if (own) {
    conn = await connectTest(server);
    connections.push(conn);
  }
  return createCommandHandler({
    eventLog: createEventLog({ nc: conn, stream: DEFAULT_STREAM }),
    snapshots: createSnapshotStore({ kv, log: memoryLogger() }),
    types: new Map([[TYPE, { ...bank, snapshotThreshold: threshold }]]),
    env: { uuidv7: () => uuidv7(), now: () => Date.now(), sleep: (ms) => sleep(ms), random: Math.random },
    log: memoryLogger(),
    maxRetries: 50,
    cacheSize: 1000,
    idempotencyWindow: 100,
  });
}

function command(payload: JsonObject, over: Partial<Command> = {}): Command {
  const id = uuidv7() as CommandId;
  return {
    tenant_id: "tenant-a" as TenantId,
    aggregate_type: TYPE,
    aggregate_id: (over.aggregate_id ?? id) as AggregateId,
    command_id: id,
    payload: payload as Command["payload"],
    payload_hash: payloadHash(payload),
    metadata: {},
    correlation_id: randomUUID(),
    ...over,
  };
}

const ref = (c: Command) => ({
  tenant_id: c.tenant_id,
  aggregate_type: c.aggregate_type,
  aggregate_id: c.aggregate_id,
});
const snapshotOf = async (c: Command) =>
  (await kv.get(`${c.tenant_id || "_"}.${c.aggregate_type}.${c.aggregate_id}`))?.json<{
    version: number;
    state: { balance: number };
  }>();

async function subjectMessages(subject: string) {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(DEFAULT_STREAM, { subjects_filter: subject });
  return info.state.subjects?.[subject] ?? 0;
}

describe("engine on a real nats-server", () => {
  it("handles a command end to end and snapshots it with threshold 1 (T8.1)", async () => {
    const h = await handler(1);
    const c = command({ type: "deposit", amount: 100 });
    const reply = await h.submit(c);
    expect(reply.events).toHaveLength(1);
    await h.flush();
    expect(await snapshotOf(c)).toMatchObject({ version: 1, state: { balance: 100 } });
  });

  it("rehydrates from persisted state (T8.2) and respects the snapshot threshold (T8.5)", async () => {
    const h = await handler(3);
    const c = command({ type: "deposit", amount: 10 });
    await h.submit(c);
    for (let i = 0; i < 4; i++)
      await h.submit(command({ type: "deposit", amount: 10 }, { aggregate_id: c.aggregate_id }));
    await h.flush();
    expect(await snapshotOf(c)).toMatchObject({ version: 3, state: { balance: 30 } });
    const cold = await handler(3);
    expect(await cold.get(ref(c))).toMatchObject({ version: 5, state: { balance: 50 } });
  });

  it("stores a command's two events in ONE stream message with versions n+1, n+2", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "two-events-"));
    await writeFile(
      path.join(dir, "program.js"),
      `export function decide(state, command) {
         return [{ type: "added", n: command.n }, { type: "added", n: command.n * 10 }];
       }
       export function apply(state, event) { return { total: (state.total || 0) + event.n }; }`,
    );
    const code = await compileProgramFile(path.join(dir, "program.js"));
    const program = await sandbox.load({
      name: "pair",
      decide: code,
      apply: code,
      limits: { timeoutMs: 1000, memoryMb: 16 },
    });
    const h = createCommandHandler({
      eventLog: createEventLog({ nc, stream: DEFAULT_STREAM }),
      snapshots: createSnapshotStore({ kv, log: memoryLogger() }),
      types: new Map([["pair", { program, initialState: "{}", snapshotThreshold: 100 }]]),
      env: { uuidv7: () => uuidv7(), now: () => Date.now(), sleep: (ms) => sleep(ms), random: Math.random },
      log: memoryLogger(),
      maxRetries: 5,
      cacheSize: 10,
      idempotencyWindow: 10,
    });
    const first = command({ type: "add", n: 1 }, { aggregate_type: "pair" as AggregateType });
    await h.submit(first);
    const second = await h.submit(
      command(
        { type: "add", n: 2 },
        { aggregate_type: "pair" as AggregateType, aggregate_id: first.aggregate_id },
      ),
    );
    expect(second.events.map((e) => e.version)).toEqual([3, 4]);
    const subject = `tenant.tenant-a.aggregate.pair.${first.aggregate_id}`;
    expect(await subjectMessages(subject)).toBe(2);
    const jsm = await jetstreamManager(nc);
    const last = await jsm.streams.getMessage(DEFAULT_STREAM, { last_by_subj: subject });
    expect(last?.json<{ events: Array<{ version: number; payload: unknown }> }>().events).toMatchObject([
      { version: 3, payload: { type: "added", n: 2 } },
      { version: 4, payload: { type: "added", n: 20 } },
    ]);
    expect(last?.header.get("Aggregate-Version")).toBe("4");
    expect(last?.header.get("Aggregate-Program")).toBe(program.hash);
    expect((await h.get(ref(first))).state).toEqual({ total: 33 });
    await rm(dir, { recursive: true, force: true });
  });

  it("lets 50 concurrent commands through two workers all succeed with versions 1..50 exactly once", async () => {
    const [w1, w2] = [await handler(7, true), await handler(7, true)];
    const id = uuidv7() as AggregateId;
    const replies = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        (i % 2 ? w1 : w2).submit(command({ type: "deposit", amount: i + 1 }, { aggregate_id: id })),
      ),
    );
    expect(replies.map((r) => r.version).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    const js = jetstream(nc);
    const consumer = await js.consumers.get(DEFAULT_STREAM, {
      filter_subjects: `tenant.tenant-a.aggregate.${TYPE}.${id}`,
    });
    const versions: number[] = [];
    const batch = await consumer.fetch({ max_messages: 100, expires: 2000 });
    for await (const m of batch) {
      versions.push(...m.json<{ events: Array<{ version: number }> }>().events.map((e) => e.version));
      if (m.info.pending === 0) break;
    }
    expect(versions).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    const state = await (
      await handler()
    ).get({ tenant_id: "tenant-a" as TenantId, aggregate_type: TYPE, aggregate_id: id });
    expect(state.state).toMatchObject({ balance: (50 * 51) / 2 });
  });

  it("returns the original events for a retried command id: at once, after ten commands and two snapshots, cold, and after the dedup window", async () => {
    const h = await handler(5);
    const c = command({ type: "deposit", amount: 3 });
    const original = await h.submit(c);
    expect(await h.submit(c)).toEqual({ ...original, duplicate: true });
    for (let i = 0; i < 10; i++)
      await h.submit(command({ type: "deposit", amount: 1 }, { aggregate_id: c.aggregate_id }));
    await h.flush();
    expect((await snapshotOf(c))?.version).toBe(10);
    expect(await h.submit(c)).toEqual({ ...original, duplicate: true });
    expect(await (await handler(5)).submit(c)).toEqual({ ...original, duplicate: true });
    await sleep(DUPLICATE_WINDOW_MS + 200);
    expect(await (await handler(5)).submit(c)).toEqual({ ...original, duplicate: true });
    expect(await subjectMessages(`tenant.tenant-a.aggregate.${TYPE}.${c.aggregate_id}`)).toBe(11);
  });

  it("applies the same command sent to two workers at once exactly once (T8.4)", async () => {
    const [w1, w2] = [await handler(100, true), await handler(100, true)];
    const c = command({ type: "deposit", amount: 9 });
    const [a, b] = await Promise.all([w1.submit(c), w2.submit(c)]);
    expect([a.duplicate, b.duplicate].sort()).toEqual([false, true]);
    expect(a.events).toEqual(b.events);
    expect(await subjectMessages(`tenant.tenant-a.aggregate.${TYPE}.${c.aggregate_id}`)).toBe(1);
  });

  it("allows the empty tenant and stores it under `_` (T8.6)", async () => {
    const h = await handler(1);
    const c = command({ type: "deposit", amount: 1 }, { tenant_id: "" as TenantId });
    expect((await h.submit(c)).tenant_id).toBe("");
    await h.flush();
    expect(await snapshotOf(c)).toMatchObject({ version: 1 });
    expect(await subjectMessages(`tenant._.aggregate.${TYPE}.${c.aggregate_id}`)).toBe(1);
  });

  it("keeps the same aggregate id under two tenants as two aggregates (T11.8)", async () => {
    const h = await handler();
    const a = command({ type: "deposit", amount: 100 });
    const b = command(
      { type: "deposit", amount: 200 },
      { aggregate_id: a.aggregate_id, tenant_id: "tenant-b" as TenantId },
    );
    await h.submit(a);
    await h.submit(b);
    expect((await (await handler()).get(ref(a))).state).toMatchObject({ balance: 100 });
    expect((await (await handler()).get(ref(b))).state).toMatchObject({ balance: 200 });
  });

  it("refuses to load an aggregate whose subject holds another tenant's events (T8.3)", async () => {
    const h = await handler();
    const c = command({ type: "deposit", amount: 1 });
    const reply = await h.submit(c);
    const forged = { ...reply.events[0]!, tenant_id: "tenant-b", version: 2, event_id: uuidv7() };
    await jetstream(nc).publish(
      `tenant.tenant-a.aggregate.${TYPE}.${c.aggregate_id}`,
      JSON.stringify({ command_id: uuidv7(), events: [forged] }),
    );
    await expect(
      (await handler()).submit(command({ type: "deposit", amount: 1 }, { aggregate_id: c.aggregate_id })),
    ).rejects.toThrow(TenantAccessDenied);
  });

  it("rebuilds from events when the snapshot is garbage or another tenant's", async () => {
    const h = await handler(2);
    const c = command({ type: "deposit", amount: 10 });
    await h.submit(c);
    for (let i = 0; i < 2; i++)
      await h.submit(command({ type: "deposit", amount: 10 }, { aggregate_id: c.aggregate_id }));
    await h.flush();
    const key = `tenant-a.${TYPE}.${c.aggregate_id}`;
    await kv.put(key, new Uint8Array([0, 1, 2, 0xff]));
    expect((await (await handler(2)).get(ref(c))).state).toMatchObject({ balance: 30 });
    const foreign = {
      ...(await snapshotOf(command({ type: "x" }))),
      tenant_id: "tenant-b",
      aggregate_id: c.aggregate_id,
      aggregate_type: TYPE,
      version: 3,
      stream_seq: 1,
      state: { balance: 999_999 },
      created_at: "x",
    };
    await kv.put(key, JSON.stringify(foreign));
    expect((await (await handler(2)).get(ref(c))).state).toMatchObject({ balance: 30 });
    // and the next command still works on top of the events
    expect(
      (
        await (
          await handler(2)
        ).submit(command({ type: "withdraw", amount: 30 }, { aggregate_id: c.aggregate_id }))
      ).version,
    ).toBe(4);
  });
});

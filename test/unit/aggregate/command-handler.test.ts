import { createHash, randomUUID } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  CommandIdReused,
  DecideError,
  ProgramError,
  TenantAccessDenied,
  VersionConflict,
  type AggregateId,
  type AggregateType,
  type Command,
  type CommandId,
  type JsonObject,
  type TenantId,
} from "../../../shared/contract/index.ts";
import { createCommandHandler, type CommandHandler } from "../../../shared/aggregate/index.ts";
import {
  bankApply,
  bankDecide,
  jsProgram,
  memoryLogger,
  MemoryEventLog,
  MemorySnapshotStore,
  testEnvironment,
} from "../../support/memory-ports.ts";

const TYPE = "account" as AggregateType;

function setup(
  options: { threshold?: number; maxRetries?: number; cacheSize?: number; window?: number } = {},
) {
  const eventLog = new MemoryEventLog();
  const snapshots = new MemorySnapshotStore();
  const program = jsProgram(bankDecide, bankApply);
  const log = memoryLogger();
  const make = (): CommandHandler =>
    createCommandHandler({
      eventLog,
      snapshots,
      types: new Map([
        [
          TYPE,
          {
            program,
            initialState: '{"balance":0,"status":"new"}',
            snapshotThreshold: options.threshold ?? 100,
          },
        ],
      ]),
      env: testEnvironment(),
      log,
      maxRetries: options.maxRetries ?? 10,
      cacheSize: options.cacheSize ?? 1000,
      idempotencyWindow: options.window ?? 100,
    });
  return { eventLog, snapshots, program, log, handler: make(), make };
}

function command(payload: JsonObject, over: Partial<Command> = {}): Command {
  const id = randomUUID() as CommandId;
  return {
    tenant_id: "tenant-a" as TenantId,
    aggregate_type: TYPE,
    aggregate_id: (over.aggregate_id ?? id) as AggregateId,
    command_id: id,
    payload: payload as Command["payload"],
    payload_hash: createHash("sha256").update(JSON.stringify(payload)).digest("hex"),
    metadata: {},
    correlation_id: "corr-1",
    ...over,
  };
}

const ref = (c: Command) => ({
  tenant_id: c.tenant_id,
  aggregate_type: c.aggregate_type,
  aggregate_id: c.aggregate_id,
});

describe("command handler", () => {
  it("knows the cached state at exactly the cached version, and nothing else", async () => {
    const { handler } = setup({ cacheSize: 1 });
    const first = command({ type: "deposit", amount: 5 });
    const { stream_seq: seq } = await handler.submit(first);
    expect(JSON.parse(handler.knownState(ref(first), 1, seq!)!)).toEqual({ balance: 5, status: "open" });
    expect(handler.knownState(ref(first), 2, seq!)).toBeUndefined();
    expect(handler.knownState(ref(first), 0, seq!)).toBeUndefined();
    // Same version, another commit (a stream created again): unknown.
    expect(handler.knownState(ref(first), 1, seq! + 1000)).toBeUndefined();
    // Evicted (cache of one): unknown.
    await handler.submit(command({ type: "deposit", amount: 1 }));
    expect(handler.knownState(ref(first), 1, seq!)).toBeUndefined();
  });

  it("names each commit's predecessors: the 16 latest and every 16th further back", async () => {
    const { handler, eventLog } = setup();
    const seen: number[][] = [];
    const append = eventLog.append.bind(eventLog);
    eventLog.append = (r, commit, expected) => {
      seen.push([...(commit.previous_seqs ?? [])]);
      return append(r, commit, expected);
    };
    const id = randomUUID() as AggregateId;
    const seqs: number[] = [];
    for (let i = 0; i < 120; i++) {
      const reply = await handler.submit(command({ type: "deposit", amount: 1 }, { aggregate_id: id }));
      seqs.push(reply.stream_seq!);
    }
    expect(seen[0]).toEqual([]);
    expect(seen[1]).toEqual([seqs[0]]);
    const newestFirst = (n: number) => seqs.slice(0, n).reverse();
    // The 101st commit: 16 latest, then 32, 48, 64, 80, 96 back.
    const before = newestFirst(100);
    expect(seen[100]).toEqual([
      ...before.slice(0, 16),
      before[31],
      before[47],
      before[63],
      before[79],
      before[95],
    ]);
    // Past the idempotency window (100) only what the record still holds is named.
    expect(seen[119]!.length).toBe(21);
  });

  it.each([
    [99, 1],
    [256, 1],
    [300, 2],
  ])(
    "folds a cold aggregate's %i events after its snapshot in %i sandbox call(s), the command's decide included",
    async (tail, calls) => {
      // Threshold above the history: no snapshot, the whole history is the tail.
      const { handler, make, program } = setup({ threshold: 1_000, window: 20 });
      const id = randomUUID() as AggregateId;
      for (let i = 0; i < tail; i++) {
        await handler.submit(command({ type: "deposit", amount: 1 + (i % 3) }, { aggregate_id: id }));
      }
      const expected = Array.from({ length: tail }, (_, i) => 1 + (i % 3)).reduce((a, b) => a + b, 0);
      const cold = make();
      const before = program.calls;
      const reply = await cold.submit(command({ type: "deposit", amount: 10 }, { aggregate_id: id }));
      expect(program.calls - before).toBe(calls);
      expect(reply.version).toBe(tail + 1);
      // The caught-up state is what the command decided on, and what the cache holds now.
      const state = cold.knownState(ref(command({}, { aggregate_id: id })), tail + 1, reply.stream_seq!);
      expect(JSON.parse(state!)).toEqual({ balance: expected + 10, status: "open" });
      // A withdrawal of more than the balance is refused on the caught-up state, not the initial one.
      const again = make();
      await expect(
        again.submit(command({ type: "withdraw", amount: expected + 11 }, { aggregate_id: id })),
      ).rejects.toBeInstanceOf(DecideError);
      const ok = await again.submit(
        command({ type: "withdraw", amount: expected + 10 }, { aggregate_id: id }),
      );
      expect(ok.version).toBe(tail + 2);
    },
  );

  it("folds the tail on its own and decides again when the combined call hits a limit", async () => {
    const { handler, make, program } = setup({ threshold: 1_000 });
    const id = randomUUID() as AggregateId;
    for (let i = 0; i < 5; i++) {
      await handler.submit(command({ type: "deposit", amount: 2 }, { aggregate_id: id }));
    }
    const decide = program.decide.bind(program);
    const seen: string[] = [];
    program.decide = (state, cmd, ctx, pending) => {
      seen.push(pending === undefined ? "decide" : "decide+tail");
      if (pending !== undefined) {
        return Promise.reject(new ProgramError("t: timed out", { reason: "timeout" }));
      }
      return decide(state, cmd, ctx);
    };
    const applyAll = program.applyAll.bind(program);
    program.applyAll = (state, events) => {
      seen.push(`applyAll ${events.length}`);
      return applyAll(state, events);
    };
    const reply = await make().submit(command({ type: "deposit", amount: 1 }, { aggregate_id: id }));
    expect(seen).toEqual(["decide+tail", "applyAll 5", "decide"]);
    expect(reply.version).toBe(6);
    expect(reply.events[0]!.payload).toEqual({ type: "deposited", amount: 1 });
  });

  it("appends one commit per command and replies with enveloped events", async () => {
    const { handler, eventLog } = setup();
    const c = command({ type: "deposit", amount: 100 });
    const reply = await handler.submit(c);
    expect(reply).toMatchObject({
      tenant_id: "tenant-a",
      aggregate_type: "account",
      aggregate_id: c.aggregate_id,
      command_id: c.command_id,
      version: 1,
      stream_seq: 1,
      duplicate: false,
      correlation_id: "corr-1",
    });
    expect(reply.events).toHaveLength(1);
    expect(reply.events[0]).toMatchObject({
      tenant_id: "tenant-a",
      version: 1,
      event_type: "deposited",
      payload: { type: "deposited", amount: 100 },
      command_id: c.command_id,
    });
    expect(reply.events[0]!.timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(eventLog.messages).toHaveLength(1);
  });

  it("stores a command's two events in one commit with versions n+1 and n+2", async () => {
    const { handler, eventLog } = setup();
    const first = command({ type: "deposit", amount: 5 });
    await handler.submit(first);
    const reply = await handler.submit(
      command({ type: "split", amount: 10 }, { aggregate_id: first.aggregate_id }),
    );
    expect(reply.events.map((e) => e.version)).toEqual([2, 3]);
    expect(reply.version).toBe(3);
    expect(eventLog.messages).toHaveLength(2);
    expect(eventLog.messages[1]!.stored.commit.events).toHaveLength(2);
  });

  it("replies to an empty decision without appending", async () => {
    const { handler, eventLog } = setup();
    const first = command({ type: "deposit", amount: 5 });
    await handler.submit(first);
    const reply = await handler.submit(command({ type: "noop" }, { aggregate_id: first.aggregate_id }));
    expect(reply.events).toEqual([]);
    expect(reply.version).toBe(1);
    expect(reply.stream_seq).toBeUndefined();
    expect(eventLog.messages).toHaveLength(1);
  });

  it("passes a decide rejection on as DecideError and appends nothing", async () => {
    const { handler, eventLog } = setup();
    const c = command({ type: "withdraw", amount: 100 });
    await expect(handler.submit(c)).rejects.toThrow(DecideError);
    await expect(handler.submit(command({ type: "withdraw", amount: 100 }))).rejects.toThrow(
      "insufficient funds",
    );
    expect(eventLog.messages).toHaveLength(0);
  });

  it("returns the original reply for a retried command id, marked duplicate", async () => {
    const { handler } = setup();
    const c = command({ type: "deposit", amount: 7 });
    const original = await handler.submit(c);
    const retry = await handler.submit(c);
    expect(retry).toEqual({ ...original, duplicate: true });
  });

  it("refuses a command id reused with another payload", async () => {
    const { handler } = setup();
    const c = command({ type: "deposit", amount: 7 });
    await handler.submit(c);
    const other = command(
      { type: "deposit", amount: 8 },
      { command_id: c.command_id, aggregate_id: c.aggregate_id },
    );
    await expect(handler.submit(other)).rejects.toThrow(CommandIdReused);
  });

  it("recognises a retry after ten more commands and two snapshots, also from a cold handler", async () => {
    const { handler, make, snapshots } = setup({ threshold: 5 });
    const c = command({ type: "deposit", amount: 1 });
    const original = await handler.submit(c);
    for (let i = 0; i < 10; i++) {
      await handler.submit(command({ type: "deposit", amount: 1 }, { aggregate_id: c.aggregate_id }));
    }
    await handler.flush();
    const snap = await snapshots.get(ref(c));
    expect(snap?.snapshot?.version).toBe(10);
    expect((await handler.submit(c)).duplicate).toBe(true);
    const cold = await make().submit(c);
    expect(cold).toEqual({ ...original, duplicate: true });
  });

  it("refuses a command whose expected_version is not the aggregate's", async () => {
    const { handler } = setup();
    const c = command({ type: "deposit", amount: 1 });
    await handler.submit(c);
    await expect(
      handler.submit(
        command({ type: "deposit", amount: 1 }, { aggregate_id: c.aggregate_id, expected_version: 0 }),
      ),
    ).rejects.toThrow(VersionConflict);
    const ok = await handler.submit(
      command({ type: "deposit", amount: 1 }, { aggregate_id: c.aggregate_id, expected_version: 1 }),
    );
    expect(ok.version).toBe(2);
  });

  it("retries on a conflict with another handler and ends with contiguous versions", async () => {
    const { handler, make, eventLog } = setup();
    const other = make();
    const first = command({ type: "deposit", amount: 1 });
    await handler.submit(first);
    await other.submit(command({ type: "deposit", amount: 1 }, { aggregate_id: first.aggregate_id })); // handler's cache is now stale
    const reply = await handler.submit(
      command({ type: "deposit", amount: 1 }, { aggregate_id: first.aggregate_id }),
    );
    expect(reply.version).toBe(3);
    const state = await handler.get(ref(first));
    expect(state.state).toMatchObject({ balance: 3 });
    expect(eventLog.messages.map((m) => m.stored.commit.events[0]!.version)).toEqual([1, 2, 3]);
  });

  it("re-checks a refusal made on a stale cache before returning it", async () => {
    const { handler, make } = setup();
    const first = command({ type: "deposit", amount: 10 });
    await handler.submit(first);
    await make().submit(command({ type: "deposit", amount: 100 }, { aggregate_id: first.aggregate_id }));
    // handler still believes balance = 10; the log says 110
    const reply = await handler.submit(
      command({ type: "withdraw", amount: 50 }, { aggregate_id: first.aggregate_id }),
    );
    expect(reply.version).toBe(3);
  });

  it("gives up with VersionConflict after max_retries", async () => {
    const { snapshots, program, log } = setup();
    class AlwaysConflicting extends MemoryEventLog {
      attempts = 0;
      override append(): never {
        this.attempts++;
        throw new VersionConflict("always");
      }
    }
    const eventLog = new AlwaysConflicting();
    const handler = createCommandHandler({
      eventLog,
      snapshots,
      types: new Map([[TYPE, { program, initialState: '{"balance":0}', snapshotThreshold: 100 }]]),
      env: testEnvironment(),
      log,
      maxRetries: 3,
      cacheSize: 10,
      idempotencyWindow: 10,
    });
    await expect(handler.submit(command({ type: "deposit", amount: 1 }))).rejects.toThrow(
      /gave up after 3 retries/,
    );
    expect(eventLog.attempts).toBe(4);
  });

  it("rehydrates from a snapshot plus the tail (T7.2) and ignores a damaged snapshot", async () => {
    const { handler, make, snapshots } = setup({ threshold: 3 });
    const c = command({ type: "deposit", amount: 10 });
    await handler.submit(c);
    for (let i = 0; i < 4; i++)
      await handler.submit(command({ type: "deposit", amount: 10 }, { aggregate_id: c.aggregate_id }));
    await handler.flush();
    expect((await snapshots.get(ref(c)))?.snapshot?.version).toBe(3);
    expect((await make().get(ref(c))).state).toMatchObject({ balance: 50 });
    snapshots.setRaw(ref(c), "\u0000garbage");
    expect((await make().get(ref(c))).state).toMatchObject({ balance: 50 });
    snapshots.setRaw(
      ref(c),
      JSON.stringify({
        tenant_id: "tenant-b",
        aggregate_id: c.aggregate_id,
        aggregate_type: "account",
        version: 5,
        stream_seq: 5,
        state: { balance: 1e9 },
        created_at: "x",
      }),
    );
    expect((await make().get(ref(c))).state).toMatchObject({ balance: 50 });
  });

  it("refuses stored events of another tenant with TenantAccessDenied (T7.3)", async () => {
    const { handler, eventLog, make } = setup();
    const c = command({ type: "deposit", amount: 10 });
    await handler.submit(c);
    const stored = eventLog.messages[0]!.stored;
    (stored.commit.events[0] as { tenant_id: string }).tenant_id = "tenant-b";
    await expect(
      make().submit(command({ type: "deposit", amount: 1 }, { aggregate_id: c.aggregate_id })),
    ).rejects.toThrow(TenantAccessDenied);
  });

  it("keeps the same aggregate id under two tenants apart", async () => {
    const { handler } = setup();
    const a = command({ type: "deposit", amount: 100 });
    const b = command(
      { type: "deposit", amount: 200 },
      { aggregate_id: a.aggregate_id, tenant_id: "tenant-b" as TenantId },
    );
    await handler.submit(a);
    await handler.submit(b);
    expect((await handler.get(ref(a))).state).toMatchObject({ balance: 100 });
    expect((await handler.get(ref(b))).state).toMatchObject({ balance: 200 });
  });

  it("serialises commands for one aggregate within a worker: no conflicts among them", async () => {
    const { handler, eventLog } = setup();
    const first = command({ type: "deposit", amount: 1 });
    await handler.submit(first);
    const before = eventLog.appends;
    const replies = await Promise.all(
      Array.from({ length: 30 }, () =>
        handler.submit(command({ type: "deposit", amount: 1 }, { aggregate_id: first.aggregate_id })),
      ),
    );
    expect(replies.map((r) => r.version).sort((x, y) => x - y)).toEqual(
      Array.from({ length: 30 }, (_, i) => i + 2),
    );
    expect(eventLog.appends - before).toBe(30);
  });

  it("evicts the least recently used aggregate when the cache is full", async () => {
    const { handler } = setup({ cacheSize: 2 });
    for (let i = 0; i < 5; i++) await handler.submit(command({ type: "deposit", amount: 1 }));
    expect(handler.cachedAggregates).toBe(2);
  });
});

describe("program versions", () => {
  async function withForeignSnapshot(compatibleApply?: string[]) {
    const eventLog = new MemoryEventLog();
    const snapshots = new MemorySnapshotStore();
    const program = jsProgram(bankDecide, bankApply);
    const make = () =>
      createCommandHandler({
        eventLog,
        snapshots,
        types: new Map([
          [TYPE, { program, initialState: '{"balance":0}', snapshotThreshold: 100, compatibleApply }],
        ]),
        env: testEnvironment(),
        log: memoryLogger(),
        maxRetries: 1,
        cacheSize: 10,
        idempotencyWindow: 10,
      });
    const c = command({ type: "deposit", amount: 10 });
    await make().submit(c);
    // A snapshot whose state could only have come from the snapshot, made by another apply program.
    await snapshots.put(ref(c), {
      tenant_id: c.tenant_id,
      aggregate_id: c.aggregate_id,
      aggregate_type: TYPE,
      version: 1,
      stream_seq: 1,
      state: { balance: 999 },
      created_at: new Date().toISOString(),
      recent_commands: [],
      program: "0123456789abcdef0123",
    });
    return (await make().get(ref(c))).state;
  }

  it("does not trust a snapshot made by another apply program", async () => {
    expect(await withForeignSnapshot()).toMatchObject({ balance: 10 });
  });

  it("continues from it when the manifest declares that program compatible", async () => {
    expect(await withForeignSnapshot(["0123456789ab"])).toMatchObject({ balance: 999 });
  });
});

describe("snapshot + tail = full replay (property)", () => {
  const cmd = fc.oneof(
    fc.record({ type: fc.constant("deposit"), amount: fc.integer({ min: 1, max: 1000 }) }),
    fc.record({ type: fc.constant("withdraw"), amount: fc.integer({ min: 1, max: 1000 }) }),
    fc.record({ type: fc.constant("split"), amount: fc.integer({ min: 1, max: 1000 }) }),
    fc.constant({ type: "noop" }),
  );

  it("gives the same state and contiguous versions for any command sequence and threshold", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(cmd, { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 1, max: 10 }),
        async (cmds, threshold) => {
          const { handler, make, eventLog } = setup({ threshold });
          const aggregate = randomUUID() as AggregateId;
          let expected = { balance: 0, status: "new" };
          let version = 0;
          for (const payload of cmds) {
            try {
              const reply = await handler.submit(command(payload, { aggregate_id: aggregate }));
              for (const e of reply.events) {
                expect(e.version).toBe(++version);
                expected = bankApply(expected, e.payload) as typeof expected;
              }
              expect(reply.version).toBe(version);
            } catch (err) {
              expect(err).toBeInstanceOf(DecideError);
            }
          }
          await handler.flush();
          const versions = eventLog.messages.flatMap((m) => m.stored.commit.events.map((e) => e.version));
          expect(versions).toEqual(Array.from({ length: version }, (_, i) => i + 1));
          if (version === 0) return;
          const r = { tenant_id: "tenant-a" as TenantId, aggregate_type: TYPE, aggregate_id: aggregate };
          const fromSnapshot = await make().get(r);
          const replayEnv = setup({ threshold });
          for (const m of eventLog.messages) replayEnv.eventLog.messages.push(m); // same log, no snapshots
          const fromReplay = await replayEnv.make().get(r);
          expect(fromSnapshot.state).toEqual(expected);
          expect(fromReplay.state).toEqual(fromSnapshot.state);
          expect(fromReplay.version).toBe(version);
        },
      ),
      { numRuns: 60 },
    );
  });
});

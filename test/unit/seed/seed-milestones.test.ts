/**
 * The seed plan's tests that no other file states in its own words, with the contract's
 * semantics: T2.5 (a command round-trips), T2.9 (contract values cross thread boundaries intact),
 * T6.1–T6.4 (the bank-account programs in the real sandbox), T7.1 (rehydrate from a snapshot only).
 */
import path from "node:path";
import * as v from "valibot";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCommandHandler } from "../../../shared/aggregate/index.ts";
import {
  DecideError,
  SubmitRequest,
  VersionConflict,
  type AggregateId,
  type AggregateType,
  type TenantId,
} from "../../../shared/contract/index.ts";
import { loadFunctions } from "../../../shared/functions/index.ts";
import {
  compileProgramFile,
  createQuickJsSandbox,
  type AggregateProgram,
  type Sandbox,
} from "../../../shared/sandbox/index.ts";
import {
  memoryLogger,
  MemoryEventLog,
  MemorySnapshotStore,
  testEnvironment,
} from "../../support/memory-ports.ts";

const FUNCTIONS = path.resolve(import.meta.dirname, "../../../functions");
let sandbox: Sandbox;
let bank: AggregateProgram;

beforeAll(async () => {
  sandbox = createQuickJsSandbox();
  const [fn] = await loadFunctions(
    FUNCTIONS,
    { snapshotThreshold: 100, timeoutMs: 1000, memoryMb: 32 },
    compileProgramFile,
  );
  bank = await sandbox.load(fn!.source);
});
afterAll(() => sandbox.close());

const context = {
  tenant_id: "tenant-a",
  aggregate_id: uuidv7(),
  command_id: uuidv7(),
  version: 0,
  metadata: {},
};

describe("T2.5, T2.9: contract values", () => {
  it("round-trips a command body with every field, tenant included", () => {
    const body = {
      command_id: uuidv7(),
      aggregate_id: uuidv7(),
      tenant_id: "acme-corp",
      aggregate_type: "account",
      expected_version: 3,
      payload: { type: "deposit", amount: 5 },
      metadata: { source: "seed" },
    };
    expect(v.parse(SubmitRequest, JSON.parse(JSON.stringify(body)))).toEqual(body);
  });

  it("keeps errors and messages intact across structuredClone (what crosses to worker threads)", () => {
    const body = v.parse(SubmitRequest, { payload: { type: "deposit", amount: 1 }, tenant_id: "a" });
    expect(structuredClone(body)).toEqual(body);
    const err = new VersionConflict("stale", { expected: 1, actual: 2 });
    expect(err.toJSON()).toEqual(structuredClone(err.toJSON()));
  });
});

describe("T6: the bank-account programs in the sandbox", () => {
  it("decides events for a valid command (T6.1)", async () => {
    const out = await bank.decide(
      '{"balance":100,"status":"open"}',
      { type: "deposit", amount: 50 },
      context,
    );
    expect(out.events).toEqual([{ type: "deposited", amount: 50 }]);
  });

  it("rejects an invalid command with DecideError (T6.2)", async () => {
    await expect(
      bank.decide('{"balance":10,"status":"open"}', { type: "withdraw", amount: 100 }, context),
    ).rejects.toThrow(DecideError);
  });

  it("applies an event to the state (T6.3)", async () => {
    expect(
      JSON.parse(await bank.applyAll('{"balance":100,"status":"open"}', [{ type: "deposited", amount: 50 }])),
    ).toEqual({
      balance: 150,
      status: "open",
    });
  });

  it("gives the same output for the same input (T6.4)", async () => {
    const a = await bank.decide('{"balance":100,"status":"open"}', { type: "deposit", amount: 50 }, context);
    const b = await bank.decide('{"balance":100,"status":"open"}', { type: "deposit", amount: 50 }, context);
    expect(b).toEqual(a);
  });
});

describe("T7.1: rehydrate from a snapshot alone", () => {
  it("takes version and state from the snapshot when no event follows it", async () => {
    const eventLog = new MemoryEventLog();
    const snapshots = new MemorySnapshotStore();
    const type = "bank-account" as AggregateType;
    const ref = {
      tenant_id: "tenant-a" as TenantId,
      aggregate_type: type,
      aggregate_id: uuidv7() as AggregateId,
    };
    // Five commits in the log, then a snapshot at the last one.
    const make = () =>
      createCommandHandler({
        eventLog,
        snapshots,
        types: new Map([
          [type, { program: bank, initialState: '{"balance":0,"status":"new"}', snapshotThreshold: 5 }],
        ]),
        env: testEnvironment(),
        log: memoryLogger(),
        maxRetries: 1,
        cacheSize: 10,
        idempotencyWindow: 10,
      });
    const handler = make();
    for (let i = 0; i < 5; i++) {
      await handler.submit({
        ...ref,
        command_id: uuidv7() as never,
        payload: { type: "deposit", amount: 20 },
        payload_hash: String(i),
        metadata: {},
        correlation_id: "c",
      });
    }
    await handler.flush();
    // The snapshot says 100; a snapshot-only load must not replay anything.
    const cold = make();
    const readsBefore = eventLog.tailReads;
    expect(await cold.get(ref)).toMatchObject({ version: 5, state: { balance: 100, status: "open" } });
    expect(eventLog.tailReads).toBe(readsBefore);
    expect((await snapshots.get(ref))?.snapshot?.version).toBe(5);
  });
});

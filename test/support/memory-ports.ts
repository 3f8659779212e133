/**
 * In-memory implementations of the aggregate core's ports, with the same semantics as the
 * JetStream adapters (expected-last-subject-sequence, message-id dedup, compare-and-set). They
 * let the pure core be property-tested in milliseconds; the adapters themselves are tested
 * against a real nats-server in test/integration.
 */
import { randomUUID } from "node:crypto";
import {
  ApplyError,
  DecideError,
  VersionConflict,
  type JsonObject,
  type JsonValue,
  type Snapshot,
} from "../../shared/contract/index.ts";
import type {
  AggregateRef,
  AppendResult,
  Environment,
  EventLog,
  Logger,
  NewCommit,
  SnapshotStore,
  StoredCommit,
  StoredSnapshot,
} from "../../shared/aggregate/index.ts";
import type { AggregateProgram, DecideContext, DecideOutcome } from "../../shared/sandbox/types.ts";

const keyOf = (ref: AggregateRef) => `${ref.tenant_id}|${ref.aggregate_type}|${ref.aggregate_id}`;

export class MemoryEventLog implements EventLog {
  readonly messages: Array<{ seq: number; key: string; msgId: string; stored: StoredCommit }> = [];
  appends = 0;
  /** Calls of readAfter: how often a load replayed commits. */
  tailReads = 0;

  async append(ref: AggregateRef, commit: NewCommit, expectedLastSeq: number): Promise<AppendResult> {
    await Promise.resolve();
    this.appends++;
    const key = keyOf(ref);
    const msgId = `${key}|${commit.command_id}`;
    const dup = this.messages.find((m) => m.msgId === msgId);
    if (dup) return { seq: dup.seq, duplicate: true };
    const last = this.#last(key);
    if (last !== expectedLastSeq) throw new VersionConflict("wrong last sequence");
    const seq = this.messages.length + 1;
    // Round-trip through JSON, as the real log does.
    const stored: StoredCommit = {
      seq,
      subject: key,
      commit: JSON.parse(
        JSON.stringify({ command_id: commit.command_id, events: commit.events }),
      ) as StoredCommit["commit"],
      payload_hash: commit.payload_hash,
    };
    this.messages.push({ seq, key, msgId, stored });
    return { seq, duplicate: false };
  }

  async lastSeq(ref: AggregateRef): Promise<number> {
    await Promise.resolve();
    return this.#last(keyOf(ref));
  }

  async readAfter(ref: AggregateRef, afterSeq: number, untilSeq: number): Promise<StoredCommit[]> {
    await Promise.resolve();
    this.tailReads++;
    const key = keyOf(ref);
    return this.messages
      .filter((m) => m.key === key && m.seq > afterSeq && m.seq <= untilSeq)
      .map((m) => m.stored);
  }

  async read(seq: number): Promise<StoredCommit | undefined> {
    await Promise.resolve();
    return this.messages[seq - 1]?.stored;
  }

  #last(key: string): number {
    for (let i = this.messages.length - 1; i >= 0; i--)
      if (this.messages[i]!.key === key) return this.messages[i]!.seq;
    return 0;
  }
}

export class MemorySnapshotStore implements SnapshotStore {
  readonly values = new Map<string, { value: string; revision: number }>();
  #revision = 0;

  async get(ref: AggregateRef): Promise<StoredSnapshot | undefined> {
    await Promise.resolve();
    const entry = this.values.get(keyOf(ref));
    if (!entry) return undefined;
    try {
      return { snapshot: JSON.parse(entry.value) as Snapshot, revision: entry.revision };
    } catch {
      return { snapshot: undefined, revision: entry.revision };
    }
  }

  async put(ref: AggregateRef, snapshot: Snapshot): Promise<boolean> {
    await Promise.resolve();
    const current = this.values.get(keyOf(ref));
    if (current) {
      try {
        if ((JSON.parse(current.value) as Snapshot).version >= snapshot.version) return false;
      } catch {
        // damaged: overwrite
      }
    }
    this.values.set(keyOf(ref), { value: JSON.stringify(snapshot), revision: ++this.#revision });
    return true;
  }

  async delete(ref: AggregateRef): Promise<void> {
    await Promise.resolve();
    this.values.delete(keyOf(ref));
  }

  /** Test hook: store raw bytes under an aggregate's key. */
  setRaw(ref: AggregateRef, value: string): void {
    this.values.set(keyOf(ref), { value, revision: ++this.#revision });
  }
}

type Decide = (state: JsonValue, command: JsonObject, context: DecideContext) => JsonObject | JsonObject[];
type Apply = (state: JsonValue, event: JsonObject) => JsonValue;

/** A program run as plain JavaScript in this thread: the sandbox's contract without the sandbox. */
export function jsProgram(
  decide: Decide,
  apply: Apply,
  hash = "js-program",
): AggregateProgram & { calls: number } {
  const program = {
    hash,
    applyHash: `${hash}-apply`,
    calls: 0,
    async decide(
      stateJson: string,
      command: JsonObject,
      context: DecideContext,
      pending?: readonly JsonObject[],
    ): Promise<DecideOutcome> {
      await Promise.resolve();
      program.calls++;
      let caughtUp: string | undefined;
      if (pending !== undefined) {
        let start = JSON.parse(stateJson) as JsonValue;
        try {
          for (const e of pending) start = apply(start, e);
        } catch (err) {
          throw new ApplyError((err as Error).message);
        }
        caughtUp = stateJson = JSON.stringify(start);
      }
      let state = JSON.parse(stateJson) as JsonValue;
      let result;
      try {
        result = decide(state, command, context);
      } catch (err) {
        throw new DecideError((err as Error).message);
      }
      const events = Array.isArray(result) ? result : [result];
      try {
        for (const e of events) state = apply(state, e);
      } catch (err) {
        throw new ApplyError((err as Error).message);
      }
      const decided = JSON.parse(JSON.stringify(events)) as JsonObject[];
      const outcome = { events: decided, state: JSON.stringify(state) };
      return caughtUp === undefined ? outcome : { ...outcome, caughtUp };
    },
    async applyAll(stateJson: string, events: readonly JsonObject[]) {
      await Promise.resolve();
      program.calls++;
      let state = JSON.parse(stateJson) as JsonValue;
      for (const e of events) state = apply(state, e);
      return JSON.stringify(state);
    },
  };
  return program;
}

/** The bank-account example's rules in plain JavaScript (mirrors functions/bank-account). */
export const bankDecide: Decide = (state, command) => {
  const s = state as { balance: number; status: string };
  const amount = command["amount"] as number;
  switch (command["type"]) {
    case "deposit":
      if (!Number.isSafeInteger(amount) || amount <= 0) throw new Error("amount must be a positive integer");
      return { type: "deposited", amount };
    case "withdraw":
      if (!Number.isSafeInteger(amount) || amount <= 0) throw new Error("amount must be a positive integer");
      if (amount > s.balance) throw new Error("insufficient funds");
      return { type: "withdrawn", amount };
    case "split":
      // two events from one command
      return [
        { type: "deposited", amount },
        { type: "withdrawn", amount: 1 },
      ];
    case "noop":
      return [];
    default:
      throw new Error(`unknown command type: ${JSON.stringify(command["type"])}`);
  }
};
export const bankApply: Apply = (state, event) => {
  const s = state as { balance: number; status: string };
  switch (event["type"]) {
    case "deposited":
      return { ...s, status: "open", balance: s.balance + (event["amount"] as number) };
    case "withdrawn":
      return { ...s, balance: s.balance - (event["amount"] as number) };
    default:
      return s;
  }
};

let clock = Date.UTC(2026, 10, 28);
/** A deterministic environment: real UUIDs, a clock that ticks 1 ms per reading, no real sleeping. */
export function testEnvironment(): Environment {
  return {
    uuidv7: () => randomUUID(),
    now: () => ++clock,
    sleep: () => Promise.resolve(),
    random: () => 0.5,
  };
}

/** A logger that remembers what it was told. */
export function memoryLogger(): Logger & { lines: Array<{ level: string; obj: object; msg?: string }> } {
  const lines: Array<{ level: string; obj: object; msg?: string }> = [];
  const at = (level: string) => (obj: object, msg?: string) => {
    lines.push(msg === undefined ? { level, obj } : { level, obj, msg });
  };
  return { lines, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

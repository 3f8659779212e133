/**
 * Poison commands. A program that hits a limit (time, memory, stack) for the same aggregate
 * several times in a row is most likely being fed a command (or a state) it cannot handle; every
 * retry would cost a full deadline, and with the worker pool a thread. After `after` such
 * failures in a row the aggregate is refused at once, without running the program, with
 * ProgramError reason "poisoned", for `coolDownMs`; then one call is let through again, and if
 * it hits a limit once more the cool-down starts over. Any other outcome (success, a refusal,
 * another kind of failure) clears the count. Other aggregates of the same type are untouched.
 *
 * The aggregate is `tenant_id` + `aggregate_id` of the decide context. applyAll has no context,
 * so rehydration is not counted: the command that follows it is. Nor is a limit failure of a
 * decide that also folded a cold load's tail (`pending`): the caller runs the two apart then
 * (see command-handler.ts), and only the command's own call counts.
 */
import { ProgramError, type JsonObject } from "../contract/index.ts";
import { limitFailure, ProgramFailure } from "./program-failure.ts";
import type {
  AggregateProgram,
  CallOptions,
  DecideContext,
  DecideOutcome,
  ProgramSource,
  Sandbox,
} from "./types.ts";

export interface PoisonGuardOptions {
  /** Limit failures in a row that make an aggregate poisoned; at least 1. */
  readonly after: number;
  /** How long a poisoned aggregate is refused without running, in ms. */
  readonly coolDownMs: number;
  /** Aggregates tracked at once per program; the oldest is forgotten beyond it. Default 10,000. */
  readonly maxTracked?: number;
  /** Clock in ms; `performance.now` by default. Tests pass their own. */
  readonly now?: () => number;
}

/** Wraps every program `sandbox` loads with poison detection. */
export function guardPoison(sandbox: Sandbox, opts: PoisonGuardOptions): Sandbox {
  const settings: Settings = {
    after: Math.max(1, opts.after),
    coolDownMs: opts.coolDownMs,
    maxTracked: opts.maxTracked ?? 10_000,
    now: opts.now ?? (() => performance.now()),
  };
  const guarded = new WeakMap<AggregateProgram, AggregateProgram>();
  return {
    async load(source: ProgramSource): Promise<AggregateProgram> {
      const program = await sandbox.load(source);
      let wrapper = guarded.get(program);
      if (wrapper === undefined) {
        wrapper = new PoisonGuardedProgram(program, source.name, settings);
        guarded.set(program, wrapper);
      }
      return wrapper;
    },
    close: () => sandbox.close(),
  };
}

interface Settings {
  readonly after: number;
  readonly coolDownMs: number;
  readonly maxTracked: number;
  readonly now: () => number;
}

/** Limit failures in a row of one aggregate. */
interface Strikes {
  failures: number;
  lastReason: string;
  /** While now < until, calls are refused. */
  until: number;
}

class PoisonGuardedProgram implements AggregateProgram {
  readonly hash: string;
  readonly applyHash: string;
  readonly #inner: AggregateProgram;
  readonly #name: string;
  readonly #settings: Settings;
  readonly #records = new Map<string, Strikes>();

  constructor(inner: AggregateProgram, name: string, settings: Settings) {
    this.#inner = inner;
    this.#name = name;
    this.#settings = settings;
    this.hash = inner.hash;
    this.applyHash = inner.applyHash;
  }

  async decide(
    stateJson: string,
    command: JsonObject,
    context: DecideContext,
    pending?: readonly JsonObject[],
  ): Promise<DecideOutcome> {
    const key = `${context.tenant_id}\u0000${context.aggregate_id}`;
    const record = this.#records.get(key);
    const now = this.#settings.now();
    if (record !== undefined && record.failures >= this.#settings.after && now < record.until) {
      throw new ProgramError(
        `${this.#name}: poisoned: the last ${record.failures} calls for this aggregate hit a limit ` +
          `(${record.lastReason}); refused without running for ${Math.ceil((record.until - now) / 1000)} s more`,
        {
          aggregate_type: this.#name,
          reason: ProgramFailure.Poisoned,
          last_reason: record.lastReason,
          failures: record.failures,
          retry_after_ms: Math.ceil(record.until - now),
        },
      );
    }
    try {
      const outcome = await this.#inner.decide(stateJson, command, context, pending);
      this.#records.delete(key);
      return outcome;
    } catch (err) {
      const reason = limitFailure(err);
      if (reason === undefined) this.#records.delete(key);
      else if (pending === undefined) this.#count(key, reason);
      throw err;
    }
  }

  applyAll(stateJson: string, events: readonly JsonObject[], options?: CallOptions): Promise<string> {
    return this.#inner.applyAll(stateJson, events, options);
  }

  #count(key: string, reason: string): void {
    const record = this.#records.get(key) ?? { failures: 0, lastReason: reason, until: 0 };
    record.failures += 1;
    record.lastReason = reason;
    if (record.failures >= this.#settings.after)
      record.until = this.#settings.now() + this.#settings.coolDownMs;
    // Re-inserting keeps the map in order of last failure, so the oldest is the first key.
    this.#records.delete(key);
    this.#records.set(key, record);
    if (this.#records.size > this.#settings.maxTracked) {
      const oldest = this.#records.keys().next();
      if (!oldest.done) this.#records.delete(oldest.value);
    }
  }
}

/**
 * The sandbox's public contract. The aggregate core talks to programs only through
 * `AggregateProgram`; where the programs run (this thread, a worker thread pool) is invisible
 * to callers, so every call is async.
 */
import type { JsonObject } from "../contract/index.ts";

/** What `decide` sees as its third argument (CONTRACT.md §5). */
export interface DecideContext {
  readonly tenant_id: string;
  readonly aggregate_id: string;
  readonly command_id: string;
  /** The aggregate's version before the command. */
  readonly version: number;
  readonly metadata: JsonObject;
}

/** The result of one decide call: the events decided and the state after applying them. */
export interface DecideOutcome {
  /** Each an object with a string `type`; `[]` when nothing happens. */
  readonly events: JsonObject[];
  /** The state after applying `events`, as JSON text. */
  readonly state: string;
  /** With `pending`: the state after the pending events, before the command's (JSON text). */
  readonly caughtUp?: string;
}

/** Per-program resource limits. */
export interface ProgramLimits {
  /** Wall-clock budget of one call. */
  readonly timeoutMs: number;
  /** Heap the program may use. */
  readonly memoryMb: number;
}

/** A compiled program, ready to be loaded into the sandbox. */
export interface ProgramSource {
  /** The aggregate type, for messages. */
  readonly name: string;
  /** Compiled script of the decide module (see `compileProgramFile`). */
  readonly decide: CompiledModule;
  /** Compiled script of the apply module; may be the same file as decide. */
  readonly apply: CompiledModule;
  readonly limits: ProgramLimits;
}

export interface CompiledModule {
  /** Path of the source file, for error messages. */
  readonly file: string;
  /** Script text (CommonJS body) produced by `compileProgramFile`. */
  readonly code: string;
  /** sha256 of `code`, hex. */
  readonly hash: string;
}

/** One loaded aggregate program. Errors: DecideError, ApplyError, ProgramError (contract errors). */
export interface AggregateProgram {
  /** Content hash of decide + apply. */
  readonly hash: string;
  /** Content hash of apply alone: what a snapshot's state depends on. */
  readonly applyHash: string;
  /**
   * Runs decide(state, command, context) and folds the returned events into the state with apply,
   * all in ONE sandbox call. Rejects with DecideError when the program threw an `Error` (its
   * message), ApplyError when apply threw, ProgramError for anything else (limits, forbidden
   * capabilities, non-JSON output, non-Error throws, pending promise jobs).
   *
   * `pending`: events committed after `stateJson` was made. They are folded in first, exactly as
   * `applyAll` would (a fresh instance of apply, the result through JSON), and the outcome also
   * carries that state as `caughtUp`: a cold load and its command share one sandbox call, so the
   * command pays one trip to a sandbox thread instead of two.
   */
  decide(
    stateJson: string,
    command: JsonObject,
    context: DecideContext,
    pending?: readonly JsonObject[],
  ): Promise<DecideOutcome>;
  /** Folds events (the objects decide returned) into the state in ONE call; returns the JSON text. */
  applyAll(stateJson: string, events: readonly JsonObject[], options?: CallOptions): Promise<string>;
}

export interface CallOptions {
  /**
   * Work nobody waits on right now (the read model catching up): a shared sandbox runs it only
   * when no foreground call (a command's decide or rehydration) is waiting.
   */
  readonly background?: boolean;
}

/** Runs aggregate programs. */
export interface Sandbox {
  load(source: ProgramSource): Promise<AggregateProgram>;
  close(): Promise<void>;
}

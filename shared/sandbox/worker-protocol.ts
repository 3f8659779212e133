/**
 * The messages between the pool (worker-pool.ts) and its threads (worker.ts). Program calls
 * travel in batches: one message carries every call the pool hands a thread at once, and one
 * message carries their results back. Calls are strings and numbers only, so that structured
 * cloning is a copy of a few strings: arrays for calls (the hot path), tagged objects for the rest.
 *
 * Why batches: every message a thread posts is its own task on the main thread, and nats.js
 * flushes its socket once per task. One message per result meant one socket write per commit
 * (measured: 3x the nats-server CPU per command and 2x the service's); one message per batch
 * lets the commits of a batch leave in one write, as they do when the sandbox runs in-thread.
 */
import type { ProgramSource } from "./types.ts";

/** What a thread is started with (`workerData`). */
export interface WorkerSettings {
  /** QuickJS stack budget; must fit the thread's stack (`resourceLimits.stackSizeMb`). */
  readonly maxStackBytes: number;
  readonly memoryOverheadMb: number;
  readonly loadTimeoutMs: number;
  /** The compiled QuickJS module, shared so that a replacement thread starts fast; absent = compile it. */
  readonly wasmModule?: WebAssembly.Module;
  /** Where the thread says which call of its batch runs and since when (see `Progress`). */
  readonly progress: SharedArrayBuffer;
}

/**
 * A thread's progress through its batch, shared with the pool's watchdog: the index of the call
 * running (Int32 at byte 0) and when it started (Date.now(), Float64 at byte 8). The thread writes
 * both before each call; the watchdog only reads them.
 */
export class Progress {
  static readonly BYTES = 16;
  readonly #index: Int32Array;
  readonly #startedAt: Float64Array;

  constructor(buffer: SharedArrayBuffer) {
    this.#index = new Int32Array(buffer, 0, 1);
    this.#startedAt = new Float64Array(buffer, 8, 1);
  }

  /** The thread: call `index` of the batch starts now. */
  start(index: number): void {
    this.#startedAt[0] = Date.now();
    Atomics.store(this.#index, 0, index);
  }

  /** The watchdog: the running call's index and start time. */
  read(): { index: number; startedAt: number } {
    const index = Atomics.load(this.#index, 0);
    return { index, startedAt: this.#startedAt[0]! };
  }
}

/** pool → thread: run `op` of program `programId`; args are the JSON texts (see QuickJsProgram.call). */
export type CallRequest = [callId: number, programId: number, op: number, ...args: string[]];

/** pool → thread: calls to run one after the other, in order. */
export type CallBatch = CallRequest[];

/** thread → pool: the reply text of a successful call. */
export type CallSuccess = [callId: number, reply: string];

/** thread → pool: a failed call, as the contract error's name, message and fields. */
export type CallFailure = [callId: number, reply: null, error: WireError];

/** A contract error (or anything else) flattened for the trip across the thread boundary. */
export interface WireError {
  /** The contract error's name (ProgramError, DecideError, ...); anything else is reported as ProgramError. */
  readonly name: string;
  readonly message: string;
  readonly fields: Record<string, unknown>;
}

export type CallResult = CallSuccess | CallFailure;

/** thread → pool: the results of a whole batch, in the batch's order. */
export type BatchResult = CallResult[];

export type ToWorker =
  | CallBatch
  | { readonly t: "load"; readonly id: number; readonly source: ProgramSource }
  | { readonly t: "unload"; readonly id: number };

export type FromWorker =
  | BatchResult
  | { readonly t: "ready" }
  | { readonly t: "loaded"; readonly id: number; readonly error?: WireError };

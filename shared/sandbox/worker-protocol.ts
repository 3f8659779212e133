/**
 * The messages between the pool (worker-pool.ts) and its threads (worker.ts). A program call is
 * one message each way, made of strings and numbers only, so that structured cloning is a copy
 * of a few strings: arrays for calls (the hot path), tagged objects for the rest.
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
}

/** pool → thread: run `op` of program `programId`; args are the JSON texts (see QuickJsProgram.call). */
export type CallRequest = [callId: number, programId: number, op: number, ...args: string[]];

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

export type ToWorker =
  | CallRequest
  | { readonly t: "load"; readonly id: number; readonly source: ProgramSource }
  | { readonly t: "unload"; readonly id: number };

export type FromWorker =
  | CallSuccess
  | CallFailure
  | { readonly t: "ready" }
  | { readonly t: "loaded"; readonly id: number; readonly error?: WireError };

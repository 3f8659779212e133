/**
 * Why a program call failed: the `fields.reason` of every ProgramError the sandbox raises. The
 * metrics count sandbox failures by it (`aggregate_program_failures_total{reason}`), so the
 * values are stable names, never free text.
 */
import { ProgramError } from "../contract/index.ts";
export const ProgramFailure = {
  /** The call ran past `limits.timeoutMs` (interrupted in QuickJS, or its thread was stopped). */
  Timeout: "timeout",
  /** The program's WebAssembly memory (`limits.memoryMb` + overhead) was exhausted, even if it caught the error. */
  Memory: "memory",
  /** The program overflowed its stack (QuickJS's budget or, rarely, the host thread's). */
  Stack: "stack",
  /** It touched the clock, randomness, WeakRef/FinalizationRegistry or code generation from strings. */
  Forbidden: "forbidden",
  /** decide's events or apply's state is not plain JSON (BigInt, function, cycle, Symbol, NaN, a class, ...). */
  NonJson: "non-json",
  /** decide returned something other than an event or an array of events with a string `type`, or apply returned undefined. */
  BadReturn: "bad-return",
  /** decide or apply returned a Promise. */
  Async: "async",
  /** The call left a promise job pending. */
  PendingJob: "pending-job",
  /** The program threw something that is not an Error (`throw 42`, `throw undefined`). */
  BadThrow: "bad-throw",
  /** The program threw one of the built-in errors that signal a bug (TypeError, ReferenceError, ...). */
  BugError: "bug-error",
  /** The program's modules did not evaluate or do not export decide/apply. */
  Load: "load",
  /** The engine failed underneath the program (a WebAssembly trap, an unexpected reply). */
  Host: "host",
  /** The worker thread running the call was stopped because of another call, or died. */
  Terminated: "terminated",
  /** The same aggregate hit a limit several times in a row: refused without running, for a cool-down. */
  Poisoned: "poisoned",
  /** No worker thread could be started to run the call. */
  Unavailable: "unavailable",
} as const;
export type ProgramFailure = (typeof ProgramFailure)[keyof typeof ProgramFailure];

/** The failures that mean "the program hit a resource limit": what poison detection counts. */
export const LIMIT_FAILURES: ReadonlySet<string> = new Set<ProgramFailure>([
  ProgramFailure.Timeout,
  ProgramFailure.Memory,
  ProgramFailure.Stack,
]);

/** The limit an error reports (a ProgramError whose reason is in LIMIT_FAILURES), else undefined. */
export function limitFailure(err: unknown): string | undefined {
  const reason = err instanceof ProgramError ? err.fields["reason"] : undefined;
  return typeof reason === "string" && LIMIT_FAILURES.has(reason) ? reason : undefined;
}

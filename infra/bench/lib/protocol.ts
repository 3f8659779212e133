/** Messages between the orchestrator and its load generator processes (IPC, advanced serialization). */

/** A deposit to send. `expectVersion`, when set, is the version the reply must report. */
export interface WorkItem {
  readonly aggregateId: string;
  readonly label: string;
  readonly expectVersion?: number;
}

interface RunCommon {
  /** Request subject, e.g. `aggregate.bank-account.submit`. */
  readonly subject: string;
  /** `x-tenant-id` of every request. */
  readonly tenant: string;
  /** Concurrent requests in this process. */
  readonly inFlight: number;
  readonly timeoutMs: number;
}

/**
 * Closed loop for a fixed time: slot `i` cycles through `aggregates[j]` with `j % inFlight === i`,
 * so no two requests in flight ever target the same aggregate (the baseline keeps one expected
 * sequence per aggregate and would otherwise conflict). Only replies that complete inside the
 * measure window (after `warmupMs`) count.
 */
export interface DurationRun extends RunCommon {
  readonly mode: "duration";
  readonly aggregates: readonly string[];
  readonly warmupMs: number;
  readonly durationMs: number;
}

/** Every item once, spread over the slots; samples are kept per label. */
export interface ListRun extends RunCommon {
  readonly mode: "list";
  readonly items: readonly WorkItem[];
}

export type RunSpec = DurationRun | ListRun;

export interface RunResult {
  /** Successful replies counted (inside the window for duration runs). */
  readonly ok: number;
  /** Every successful reply, also those of the warm-up (for CPU time per request). */
  readonly completed: number;
  /** Replies with a `Nats-Service-Error-Code` header, by code. */
  readonly errors: Record<string, number>;
  readonly timeouts: number;
  /** Failures that were neither (no responders, connection errors), by message. */
  readonly failures: Record<string, number>;
  /** Successful replies whose version differed from `expectVersion`. */
  readonly unexpected: number;
  /** Length of the measure window, ms. */
  readonly elapsedMs: number;
  /** Latency of each counted reply (ms), by label ("all" for duration runs). */
  readonly samples: Record<string, Float64Array>;
}

export type ToChild =
  | { readonly type: "connect"; readonly natsUrl: string }
  | { readonly type: "run"; readonly id: number; readonly spec: RunSpec }
  | { readonly type: "exit" };

export type FromChild =
  | { readonly type: "ready" }
  | { readonly type: "result"; readonly id: number; readonly result: RunResult }
  | { readonly type: "error"; readonly id?: number; readonly message: string };

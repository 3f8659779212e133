/**
 * The sandbox the service runs: the worker pool (or, with `threads: 0`, QuickJS in this thread)
 * with poison detection on top. The one place that turns configuration into a sandbox, so that
 * the service and `npm run spec` run programs the same way.
 */
import { guardPoison } from "./poison-guard.ts";
import { createQuickJsSandbox } from "./quickjs-sandbox.ts";
import type { Sandbox } from "./types.ts";
import { createWorkerSandbox, type SandboxLog } from "./worker-pool.ts";

export interface SandboxOptions {
  /** Worker threads; 0 = run programs in this thread (no watchdog: a long built-in blocks the process). */
  readonly threads: number;
  /** How long past a call's deadline the watchdog waits before stopping its thread, in ms. */
  readonly graceMs: number;
  /** Limit failures in a row that make an aggregate poisoned; 0 = never. */
  readonly poisonAfter: number;
  /** How long a poisoned aggregate is refused without running, in ms. */
  readonly poisonCoolDownMs: number;
  readonly log?: SandboxLog;
}

export function createSandbox(opts: SandboxOptions): Sandbox {
  const sandbox =
    opts.threads === 0
      ? createQuickJsSandbox()
      : createWorkerSandbox({
          size: opts.threads,
          graceMs: opts.graceMs,
          ...(opts.log === undefined ? {} : { log: opts.log }),
        });
  if (opts.poisonAfter === 0) return sandbox;
  return guardPoison(sandbox, { after: opts.poisonAfter, coolDownMs: opts.poisonCoolDownMs });
}

/**
 * The sandbox: aggregate programs compiled from their folder and run in QuickJS, in a pool of
 * worker threads (the default) or in this thread. The rest of the folder is private.
 */
export type {
  AggregateProgram,
  CallOptions,
  CompiledModule,
  DecideContext,
  DecideOutcome,
  ProgramLimits,
  ProgramSource,
  Sandbox,
} from "./types.ts";
export { compileProgramFile } from "./compile.ts";
export { createSandbox, type SandboxOptions } from "./create-sandbox.ts";
export { guardPoison, type PoisonGuardOptions } from "./poison-guard.ts";
export { LIMIT_FAILURES, ProgramFailure } from "./program-failure.ts";
export { createQuickJsSandbox, type QuickJsSandboxOptions } from "./quickjs-sandbox.ts";
export { createWorkerSandbox, type SandboxLog, type WorkerSandboxOptions } from "./worker-pool.ts";

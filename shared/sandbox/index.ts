/**
 * The sandbox: aggregate programs compiled from their folder and run in QuickJS. The rest of the
 * folder is private.
 */
export type {
  AggregateProgram,
  CompiledModule,
  DecideContext,
  DecideOutcome,
  ProgramLimits,
  ProgramSource,
  Sandbox,
} from "./types.ts";
export { compileProgramFile } from "./compile.ts";
export { createQuickJsSandbox, type QuickJsSandboxOptions } from "./quickjs-sandbox.ts";

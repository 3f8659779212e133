/**
 * Programs for the sandbox tests: written to a temporary folder, compiled and loaded the way the
 * service does it. `await using` removes the folder.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import {
  compileProgramFile,
  type AggregateProgram,
  type DecideContext,
  type ProgramLimits,
  type Sandbox,
} from "../../../shared/sandbox/index.ts";

export interface ProgramFolder extends AsyncDisposable {
  readonly dir: string;
  path(file: string): string;
}

/** Writes `files` (name → source) into a fresh temporary folder. */
export async function programFolder(files: Record<string, string>): Promise<ProgramFolder> {
  const dir = await mkdtemp(join(tmpdir(), "sandbox-program-"));
  for (const [name, source] of Object.entries(files)) {
    await mkdir(dirname(join(dir, name)), { recursive: true });
    await writeFile(join(dir, name), source);
  }
  return {
    dir,
    path: (file) => join(dir, file),
    [Symbol.asyncDispose]: () => rm(dir, { recursive: true, force: true }),
  };
}

export const DEFAULT_LIMITS: ProgramLimits = { timeoutMs: 1_000, memoryMb: 32 };

/** Compiles `decide` (and `apply`, default the same file) from a folder and loads them. */
export async function loadFrom(
  sandbox: Sandbox,
  folder: ProgramFolder,
  opts: { decide?: string; apply?: string; name?: string; limits?: ProgramLimits } = {},
): Promise<AggregateProgram> {
  const decide = await compileProgramFile(folder.path(opts.decide ?? "program.js"));
  const apply = opts.apply === undefined ? decide : await compileProgramFile(folder.path(opts.apply));
  return sandbox.load({ name: opts.name ?? "test", decide, apply, limits: opts.limits ?? DEFAULT_LIMITS });
}

/** Writes one program file and loads it as both decide and apply. */
export async function loadProgram(
  sandbox: Sandbox,
  source: string,
  limits: ProgramLimits = DEFAULT_LIMITS,
): Promise<AggregateProgram> {
  await using folder = await programFolder({ "program.js": source });
  return await loadFrom(sandbox, folder, { limits });
}

export function context(overrides: Partial<DecideContext> = {}): DecideContext {
  return {
    tenant_id: "",
    aggregate_id: "agg-1",
    command_id: "cmd-1",
    version: 0,
    metadata: {},
    ...overrides,
  };
}

/** The bank account of the README, small enough to read in a test. */
export const BANK_ACCOUNT = `
export function decide(state, command) {
  switch (command.type) {
    case "deposit":
      if (!Number.isSafeInteger(command.amount) || command.amount <= 0) throw new Error("amount must be a positive integer");
      return { type: "deposited", amount: command.amount };
    case "withdraw":
      if (command.amount > state.balance) throw new Error("insufficient funds");
      return [{ type: "withdrawn", amount: command.amount }];
    default:
      throw new Error("unknown command type: " + command.type);
  }
}

export function apply(state, event) {
  switch (event.type) {
    case "deposited":
      return { ...state, balance: state.balance + event.amount };
    case "withdrawn":
      return { ...state, balance: state.balance - event.amount };
    default:
      return state;
  }
}
`;

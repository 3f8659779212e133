/**
 * Every decider spec shipped under functions/<type>/specs, each its own test, run in the QuickJS
 * sandbox: a failing spec fails `npm test` with its diff as the message.
 */
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadFunctions } from "../../../shared/functions/index.ts";
import { compileProgramFile, createQuickJsSandbox } from "../../../shared/sandbox/index.ts";
import { formatFailure, loadSpecs, runSpecs } from "../../../shared/specs/index.ts";

const FUNCTIONS_DIR = path.resolve(import.meta.dirname, "../../../functions");
const functions = await loadFunctions(
  FUNCTIONS_DIR,
  { snapshotThreshold: 100, timeoutMs: 1_000, memoryMb: 32 },
  compileProgramFile,
);
const sandbox = createQuickJsSandbox();
afterAll(() => sandbox.close());

describe.each(functions.map((fn) => [fn.type, fn] as const))("%s", async (_type, fn) => {
  const specs = await loadSpecs(fn.dir);

  it.each(specs.map((spec) => [`${spec.file} #${spec.index}: ${spec.spec.name}`, spec] as const))(
    "%s",
    async (_name, spec) => {
      const [result] = await runSpecs(await sandbox.load(fn.source), fn.initialState, [spec]);
      if (!result?.passed) expect.fail(`\n${formatFailure(result!)}`);
    },
  );
});

it("finds the bank-account specs covering open, deposit, withdraw and close", async () => {
  const bank = functions.find((fn) => fn.type === "bank-account");
  const specs = await loadSpecs(bank!.dir);
  expect(new Set(specs.map((s) => s.spec.when["type"]))).toEqual(
    new Set(["open", "open_account", "rename", "deposit", "withdraw", "close"]),
  );
  expect(
    specs.filter((s) => !Array.isArray(s.spec.then) && "error" in s.spec.then).length,
  ).toBeGreaterThanOrEqual(8);
});

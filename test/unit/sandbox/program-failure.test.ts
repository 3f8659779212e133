import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProgramError } from "../../../shared/contract/index.ts";
import {
  createQuickJsSandbox,
  ProgramFailure,
  type AggregateProgram,
  type Sandbox,
} from "../../../shared/sandbox/index.ts";
import { context, loadProgram } from "./program-fixture.ts";

const PROGRAM = `
export function decide(state, command) {
  switch (command.type) {
    case "spin": for (;;) {}
    case "memory": { const keep = []; for (;;) keep.push(new Uint8Array(1 << 20)); }
    case "memory-caught": { const keep = []; try { for (;;) keep.push(new Uint8Array(1 << 20)); } catch (e) {} return { type: "t" }; }
    case "recurse": { const f = (n) => f(n + 1) + 1; return { type: "t", v: f(0) }; }
    case "clock": return { type: "t", at: Date.now() };
    case "eval": try { return { type: "t", v: (0, eval)("1") }; } catch (e) { throw new TypeError("rethrown"); }
    case "bigint": return { type: "t", n: 1n };
    case "no-type": return { kind: "t" };
    case "promise": return Promise.resolve([]);
    case "pending": Promise.resolve().then(() => {}); return [];
    case "throw-42": throw 42;
    case "type-error": return null.x;
    default: throw new Error("unknown " + command.type);
  }
}
export function apply(state, event) { return state; }
`;

let sandbox: Sandbox;
let program: AggregateProgram;

beforeAll(async () => {
  sandbox = createQuickJsSandbox();
  program = await loadProgram(sandbox, PROGRAM, { timeoutMs: 100, memoryMb: 8 });
});

afterAll(async () => {
  await sandbox.close();
});

describe("fields.reason", () => {
  it.each([
    ["spin", ProgramFailure.Timeout],
    ["memory", ProgramFailure.Memory],
    ["memory-caught", ProgramFailure.Memory],
    ["recurse", ProgramFailure.Stack],
    ["clock", ProgramFailure.Forbidden],
    ["eval", ProgramFailure.Forbidden],
    ["bigint", ProgramFailure.NonJson],
    ["no-type", ProgramFailure.BadReturn],
    ["promise", ProgramFailure.Async],
    ["pending", ProgramFailure.PendingJob],
    ["throw-42", ProgramFailure.BadThrow],
    ["type-error", ProgramFailure.BugError],
  ])("names why %s failed: %s", async (type, reason) => {
    const err = await program.decide("{}", { type }, context()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ProgramError);
    expect((err as ProgramError).fields).toMatchObject({ aggregate_type: "test", reason });
  });

  it("names a program that cannot load: load", async () => {
    const err = await loadProgram(sandbox, `export function decide() { return []; }`).catch(
      (e: unknown) => e,
    );
    expect((err as ProgramError).fields["reason"]).toBe(ProgramFailure.Load);
  });
});

import { describe, expect, it } from "vitest";
import { DecideError, ProgramError, type JsonObject } from "../../../shared/contract/index.ts";
import {
  guardPoison,
  type AggregateProgram,
  type DecideContext,
  type ProgramSource,
  type Sandbox,
} from "../../../shared/sandbox/index.ts";
import { context } from "./program-fixture.ts";

/** A program whose outcome per call is scripted: "ok", "refuse", or a ProgramError reason. */
function scripted(): {
  sandbox: Sandbox;
  calls: string[];
  next: (aggregate: string, outcome: string) => void;
} {
  const plan = new Map<string, string[]>();
  const calls: string[] = [];
  const program: AggregateProgram = {
    hash: "h",
    applyHash: "a",
    decide(_state: string, _command: JsonObject, ctx: DecideContext) {
      calls.push(ctx.aggregate_id);
      const outcome = plan.get(ctx.aggregate_id)?.shift() ?? "ok";
      if (outcome === "ok") return Promise.resolve({ events: [{ type: "ok" }], state: "{}" });
      if (outcome === "refuse") return Promise.reject(new DecideError("no"));
      return Promise.reject(new ProgramError(`t: ${outcome}`, { reason: outcome }));
    },
    applyAll: (state: string) => Promise.resolve(state),
  };
  return {
    sandbox: { load: () => Promise.resolve(program), close: () => Promise.resolve() },
    calls,
    next: (aggregate, outcome) => plan.set(aggregate, [...(plan.get(aggregate) ?? []), outcome]),
  };
}

const SOURCE = { name: "t" } as ProgramSource;

async function reasonOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => "ok",
    (err: unknown) => (err instanceof ProgramError ? err.fields["reason"] : (err as Error).name),
  );
}

describe("poison detection", () => {
  it("refuses an aggregate without running it after K limit failures in a row, until the cool-down ends", async () => {
    let now = 0;
    const { sandbox, calls, next } = scripted();
    const program = await guardPoison(sandbox, { after: 3, coolDownMs: 1_000, now: () => now }).load(SOURCE);
    const call = (aggregate: string) =>
      reasonOf(program.decide("{}", { type: "x" }, context({ aggregate_id: aggregate })));
    for (const reason of ["timeout", "memory", "stack", "timeout"]) next("a", reason);

    expect([await call("a"), await call("a"), await call("a")]).toEqual(["timeout", "memory", "stack"]);
    expect(calls).toHaveLength(3);
    expect(await call("a")).toBe("poisoned");
    expect(calls).toHaveLength(3);
    // Another aggregate of the same type is not affected.
    expect(await call("b")).toBe("ok");

    now = 999;
    expect(await call("a")).toBe("poisoned");
    now = 1_000;
    // One try after the cool-down; it hits a limit again, so the cool-down starts over.
    expect(await call("a")).toBe("timeout");
    expect(await call("a")).toBe("poisoned");
    now = 2_000;
    expect(await call("a")).toBe("ok");
    expect(await call("a")).toBe("ok");
  });

  it("does not count a limit failure of a call that also folded a cold load's tail", async () => {
    const { sandbox, next } = scripted();
    const program = await guardPoison(sandbox, { after: 2, coolDownMs: 60_000 }).load(SOURCE);
    const call = (pending?: JsonObject[]) =>
      reasonOf(program.decide("{}", { type: "x" }, context({ aggregate_id: "a" }), pending));
    for (let i = 0; i < 4; i++) next("a", "timeout");
    // With a tail: never a strike, however often.
    expect([await call([{ type: "e" }]), await call([{ type: "e" }])]).toEqual(["timeout", "timeout"]);
    // The command's own calls count as always.
    expect([await call(), await call(), await call()]).toEqual(["timeout", "timeout", "poisoned"]);
  });

  it("counts only limit failures in a row: a success, a refusal or another failure starts the count over", async () => {
    const { sandbox, next } = scripted();
    const program = await guardPoison(sandbox, { after: 2, coolDownMs: 60_000 }).load(SOURCE);
    const call = () => reasonOf(program.decide("{}", { type: "x" }, context({ aggregate_id: "a" })));
    for (const outcome of [
      "timeout",
      "ok",
      "timeout",
      "refuse",
      "memory",
      "bad-throw",
      "stack",
      "terminated",
    ]) {
      next("a", outcome);
    }
    const seen = [];
    for (let i = 0; i < 8; i++) seen.push(await call());
    expect(seen).toEqual([
      "timeout",
      "ok",
      "timeout",
      "DecideError",
      "memory",
      "bad-throw",
      "stack",
      "terminated",
    ]);
  });

  it("keys aggregates by tenant and id, and forgets the oldest beyond the tracking bound", async () => {
    const { sandbox, next } = scripted();
    const program = await guardPoison(sandbox, { after: 1, coolDownMs: 60_000, maxTracked: 2 }).load(SOURCE);
    const call = (tenant: string, aggregate: string) =>
      reasonOf(program.decide("{}", { type: "x" }, context({ tenant_id: tenant, aggregate_id: aggregate })));
    for (const id of ["a", "b", "c"]) next(id, "timeout");
    await call("t1", "a");
    expect(await call("t1", "a")).toBe("poisoned");
    expect(await call("t2", "a")).toBe("ok");
    await call("t1", "b");
    await call("t1", "c");
    // "a" was the oldest of three: forgotten, so it runs again.
    expect(await call("t1", "a")).toBe("ok");
    expect(await call("t1", "c")).toBe("poisoned");
  });
});

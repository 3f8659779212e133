import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProgramError, type JsonObject } from "../../../shared/contract/index.ts";
import { createQuickJsSandbox, type AggregateProgram, type Sandbox } from "../../../shared/sandbox/index.ts";
import { BANK_ACCOUNT, context, loadProgram } from "./program-fixture.ts";

const HUNGRY = `
export function decide(state, command) {
  switch (command.type) {
    case "ok": return { type: "ok" };
    case "spin": for (;;) {}
    case "spin-caught": try { for (;;) {} } catch (e) {} return { type: "escaped" };
    case "recurse": { const f = (n) => f(n + 1) + 1; return { type: "t", v: f(0) }; }
    case "recurse-to": { const f = (n) => (n === 0 ? 0 : f(n - 1) + 1); return { type: "t", depth: f(command.depth) }; }
    case "allocate": return { type: "t", n: new Uint8Array(200 * 1024 * 1024).length };
    case "allocate-caught": try { new Uint8Array(200 * 1024 * 1024); } catch (e) {} return { type: "t" };
    case "grow-caught": { const keep = []; try { for (;;) keep.push(new Uint8Array(1 << 20)); } catch (e) {} return { type: "t", n: keep.length }; }
    case "use": { const a = new Uint8Array(command.mb * 1024 * 1024); a.fill(1); return { type: "t", n: a.length }; }
    case "deep-stringify": { let x = []; for (let i = 0; i < 100000; i++) x = [x]; return { type: "t", n: JSON.stringify(x).length }; }
    default: throw new Error("unknown " + command.type);
  }
}
export function apply(state, event) {
  return { ...state, seen: (state.seen ?? 0) + 1 };
}
`;

let sandbox: Sandbox;
/** For the deadline: 100 ms. */
let hungry: AggregateProgram;
/** For memory and stack: a deadline no slow machine reaches, so only the limit under test trips. */
let greedy: AggregateProgram;

beforeAll(async () => {
  sandbox = createQuickJsSandbox();
  hungry = await loadProgram(sandbox, HUNGRY, { timeoutMs: 100, memoryMb: 32 });
  greedy = await loadProgram(sandbox, HUNGRY, { timeoutMs: 10_000, memoryMb: 32 });
});

afterAll(async () => {
  await sandbox.close();
});

const run = (type: string, extra: JsonObject = {}) => hungry.decide("{}", { type, ...extra }, context());
const push = (type: string, extra: JsonObject = {}) => greedy.decide("{}", { type, ...extra }, context());

async function expectWorks(program: AggregateProgram): Promise<void> {
  expect(await program.decide("{}", { type: "ok" }, context())).toEqual({
    events: [{ type: "ok" }],
    state: `{"seen":1}`,
  });
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

describe("time", () => {
  it.each(["spin", "spin-caught"])(
    "stops %s at the deadline with ProgramError; the next call works",
    async (type) => {
      const started = performance.now();
      const err = await rejection(run(type));
      const elapsed = performance.now() - started;
      expect(err).toBeInstanceOf(ProgramError);
      expect(err.message).toMatch(/timed out after 100 ms/);
      expect(elapsed).toBeGreaterThanOrEqual(100);
      expect(elapsed).toBeLessThan(100 + 200);
      await expectWorks(hungry);
    },
  );

  it("lets the calls queued behind a timed-out one succeed", async () => {
    const results = await Promise.allSettled([run("ok"), run("spin"), run("ok"), run("ok")]);
    expect(results.map((r) => (r.status === "rejected" ? String(r.reason) : r.status))).toEqual([
      "fulfilled",
      "ProgramError: test: timed out after 100 ms",
      "fulfilled",
      "fulfilled",
    ]);
  });
});

describe("stack", () => {
  it("turns unbounded recursion into a clean ProgramError; the next call works", async () => {
    const err = await rejection(push("recurse"));
    expect(err).toBeInstanceOf(ProgramError);
    // The guest's own limit, not the host's stack: the budget is below what Node's stack holds.
    expect(err.message).toMatch(/decide threw InternalError: stack overflow/);
    await expectWorks(greedy);
  });

  it("leaves room for a recursion 1,000 deep", async () => {
    expect((await push("recurse-to", { depth: 1000 })).events).toEqual([{ type: "t", depth: 1000 }]);
  });

  it("survives a built-in that exhausts the host's stack: ProgramError, and a fresh module after", async () => {
    const err = await rejection(push("deep-stringify"));
    expect(err).toBeInstanceOf(ProgramError);
    await expectWorks(greedy);
  });
});

describe("memory", () => {
  it.each(["allocate", "allocate-caught", "grow-caught"])(
    "fails %s beyond the limit with ProgramError, even when caught; the next call works",
    async (type) => {
      const err = await rejection(push(type));
      expect(err).toBeInstanceOf(ProgramError);
      expect(err.message).toMatch(/exceeded its memory limit of 32 MB/);
      await expectWorks(greedy);
    },
  );

  it("lets a program use most of its budget", async () => {
    expect((await push("use", { mb: 24 })).events).toEqual([{ type: "t", n: 24 * 1024 * 1024 }]);
  });
});

describe("no leaks", () => {
  it("runs 20,000 decide calls in a small budget without growing the process", async () => {
    // The smallest budget (the module's 16 MiB floor leaves about 10 MB free). About 1 KB goes
    // in and 1 KB comes out per call: a handle or string left behind per call would fill the
    // heap long before the end, and the calls would start failing.
    const echo = await loadProgram(
      sandbox,
      `export function decide(state, command) { return { type: "noted", note: command.note }; }
       export function apply(state, event) { return { ...state, count: state.count + 1, last: event.note }; }`,
      { timeoutMs: 1_000, memoryMb: 1 },
    );
    const state = JSON.stringify({ count: 0, history: Array.from({ length: 20 }, (_, i) => `entry ${i}`) });
    const command = { type: "note", note: "x".repeat(300) };
    for (let i = 0; i < 1_000; i++) await echo.decide(state, command, context());
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 20_000; i++) {
      const outcome = await echo.decide(state, command, context());
      if (outcome.events.length !== 1) throw new Error(`call ${i} returned ${JSON.stringify(outcome)}`);
    }
    const grown = process.memoryUsage().rss - before;
    expect(grown).toBeLessThan(64 * 1024 * 1024);
  });
});

describe("speed", () => {
  it("folds 1,000 events in one applyAll call well within a command's budget", async () => {
    const bank = await loadProgram(sandbox, BANK_ACCOUNT);
    const events = Array.from({ length: 1_000 }, (_, i) => ({ type: "deposited", amount: i + 1 }));
    const start = JSON.stringify({ balance: 0 });
    for (let i = 0; i < 5; i++) await bank.applyAll(start, events);
    const rounds = 20;
    let t = performance.now();
    for (let i = 0; i < rounds; i++) expect(await bank.applyAll(start, events)).toBe(`{"balance":500500}`);
    const sandboxMs = (performance.now() - t) / rounds;
    const apply = (s: { balance: number }, e: { amount: number }) => ({
      ...s,
      balance: s.balance + e.amount,
    });
    t = performance.now();
    for (let i = 0; i < rounds; i++)
      JSON.stringify(events.reduce(apply, JSON.parse(start) as { balance: number }));
    const plainMs = (performance.now() - t) / rounds;

    const decideRounds = 2_000;
    const state = `{"balance":0}`;
    for (let i = 0; i < 200; i++) await bank.decide(state, { type: "deposit", amount: 1 }, context());
    t = performance.now();
    for (let i = 0; i < decideRounds; i++)
      await bank.decide(state, { type: "deposit", amount: 1 }, context());
    const decideUs = ((performance.now() - t) / decideRounds) * 1_000;

    console.log(
      `applyAll: ${Math.round(1_000 / sandboxMs)}k events/s (${sandboxMs.toFixed(2)} ms per 1,000) ` +
        `vs plain JS ${Math.round(1_000 / plainMs)}k events/s; decide: ${decideUs.toFixed(0)} µs per call`,
    );
    expect(sandboxMs).toBeLessThan(100);
    expect(decideUs).toBeLessThan(2_000);
  });
});

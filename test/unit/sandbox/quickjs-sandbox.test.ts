import { createHash } from "node:crypto";
import { pathToFileURL } from "node:url";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ApplyError,
  DecideError,
  ProgramError,
  Unavailable,
  type JsonObject,
} from "../../../shared/contract/index.ts";
import {
  compileProgramFile,
  createQuickJsSandbox,
  type AggregateProgram,
  type Sandbox,
} from "../../../shared/sandbox/index.ts";
import { BANK_ACCOUNT, context, loadFrom, loadProgram, programFolder } from "./program-fixture.ts";

/**
 * One program that misbehaves on request: `command.type` picks the behaviour, so one load serves
 * most tests. decide and apply are the same file.
 */
const ZOO = `
class InsufficientFunds extends Error {
  constructor(message) {
    super(message);
    this.name = "InsufficientFunds";
  }
}
class Point {
  constructor() { this.x = 1; }
}
let calls = 0;

export function decide(state, command, context) {
  calls += 1;
  switch (command.type) {
    case "one": return command.n === undefined ? { type: "one" } : { type: "one", n: command.n };
    case "none": return [];
    case "two": return [{ type: "a" }, { type: "b", nested: { list: [1, "x", null, true] } }];
    case "calls": return { type: "calls", calls };
    case "emit": return { type: command.event };
    case "context": return { type: "context", context };
    case "mutate-state": state.count = 1000; return { type: "mutated" };
    case "error": throw new Error("plain failure");
    case "custom-error": throw new InsufficientFunds("balance too low");
    case "type-error": { const missing = undefined; return missing.field; }
    case "reference-error": return notDefinedAnywhere;
    case "range-error": return [].length = -1;
    case "throw-42": throw 42;
    case "throw-undefined": throw undefined;
    case "throw-string": throw "x";
    case "throw-object": throw { code: "E1" };
    case "bigint": return { type: "t", payload: { n: 1n } };
    case "function": return { type: "t", payload: { f() {} } };
    case "symbol": return { type: "t", payload: { s: Symbol("s") } };
    case "cycle": { const e = { type: "t", payload: {} }; e.payload.self = e; return e; }
    case "undefined-in-array": return [{ type: "t", list: [1, undefined] }];
    case "undefined-value": return { type: "t", x: undefined };
    case "hole": return { type: "t", list: [1, , 3] };
    case "deep": { let x = {}; for (let i = 0; i < 300; i++) x = { x }; return { type: "t", x }; }
    case "map": return { type: "t", payload: { m: new Map([[1, 2]]) } };
    case "class": return { type: "t", p: new Point() };
    case "nan": return { type: "t", payload: { x: NaN } };
    case "infinity": return { type: "t", payload: { x: -Infinity } };
    case "getter-throws": return { type: "t", get bad() { throw new Error("boom"); } };
    case "no-type": return { kind: "t" };
    case "number-type": return [{ type: 1 }];
    case "array-event": return [[{ type: "t" }]];
    case "number": return 42;
    case "undefined": return undefined;
    case "promise": return Promise.resolve([]);
    case "pending": Promise.resolve().then(() => { for (;;) {} }); return [];
    case "date-now": return { type: "t", at: Date.now() };
    case "new-date": return { type: "t", at: String(new Date()) };
    case "date-with-arg": return { type: "t", at: new Date(0).getTime() };
    case "random": return { type: "t", r: Math.random() };
    case "date-caught": try { Date.now(); } catch (e) {} return { type: "t" };
    case "random-caught": try { Math.random(); } catch (e) {} return { type: "t" };
    case "weakref": try { new WeakRef({}); } catch (e) {} return { type: "t" };
    case "finalization": return { type: "t", r: String(new FinalizationRegistry(() => {})) };
    case "eval": return { type: "t", v: (0, eval)("1 + 1") };
    case "function-ctor": return { type: "t", v: new Function("return 1")() };
    case "function-ctor-indirect": return { type: "t", v: (function () {}).constructor("return 1")() };
    case "global-write": globalThis.leak = 1; return { type: "t" };
    case "global-write-caught": try { globalThis.leak = 1; } catch (e) {} return { type: "t" };
    case "global-replace": globalThis.eval = () => 1; return { type: "t" };
    case "proto-write": Array.prototype.evil = 1; return { type: "t" };
    case "proto-write-caught": try { Object.prototype.evil = 1; } catch (e) {} return { type: "t" };
    case "math-write": try { Math.random = () => 4; } catch (e) {} return { type: "t" };
    case "globals": return { type: "globals", leak: typeof globalThis.leak, evil: typeof [].evil, objEvil: typeof ({}).evil, random: String(Math.random).includes("4") };
    case "shadow": { const e = new Error("m"); e.message = "changed"; const o = {}; o.toString = () => "mine"; return { type: "t", message: e.message, s: String(o), name: new InsufficientFunds("x").name }; }
    default: throw new Error("unknown command " + command.type);
  }
}

export function apply(state, event) {
  switch (event.type) {
    case "apply-error": throw new Error("cannot apply " + event.type);
    case "apply-type-error": { const missing = null; return missing.x; }
    case "apply-undefined": return undefined;
    case "apply-map": return new Map();
    case "apply-promise": return Promise.resolve(state);
    case "apply-eval-caught": try { (0, eval)("1"); } catch (e) {} return state;
    default: return { ...state, count: (state.count ?? 0) + 1, last: event.type };
  }
}
`;

let sandbox: Sandbox;
let zoo: AggregateProgram;

beforeAll(async () => {
  sandbox = createQuickJsSandbox();
  zoo = await loadProgram(sandbox, ZOO);
});

afterAll(async () => {
  await sandbox.close();
});

const decideZoo = (type: string, extra: JsonObject = {}) => zoo.decide("{}", { type, ...extra }, context());
const applyZoo = (events: JsonObject[], state = "{}") => zoo.applyAll(state, events);

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

describe("decide", () => {
  it("runs the bank account: decide returns events and the state they lead to", async () => {
    const bank = await loadProgram(sandbox, BANK_ACCOUNT);
    const opened = await bank.decide(`{"balance":0}`, { type: "deposit", amount: 100 }, context());
    expect(opened).toEqual({ events: [{ type: "deposited", amount: 100 }], state: `{"balance":100}` });
    const withdrawn = await bank.decide(
      opened.state,
      { type: "withdraw", amount: 30 },
      context({ version: 1 }),
    );
    expect(withdrawn).toEqual({ events: [{ type: "withdrawn", amount: 30 }], state: `{"balance":70}` });
    const refused = await rejection(
      bank.decide(withdrawn.state, { type: "withdraw", amount: 71 }, context()),
    );
    expect(refused).toBeInstanceOf(DecideError);
    expect(refused.message).toBe("insufficient funds");
  });

  it("counts a single returned object as one event", async () => {
    expect(await decideZoo("one", { n: 7 })).toEqual({
      events: [{ type: "one", n: 7 }],
      state: `{"count":1,"last":"one"}`,
    });
  });

  it("accepts [] as nothing happened and leaves the state as it was", async () => {
    expect(await zoo.decide(`{"count":5}`, { type: "none" }, context())).toEqual({
      events: [],
      state: `{"count":5}`,
    });
  });

  it("folds several events in order", async () => {
    const outcome = await decideZoo("two");
    expect(outcome.events).toEqual([{ type: "a" }, { type: "b", nested: { list: [1, "x", null, true] } }]);
    expect(JSON.parse(outcome.state)).toEqual({ count: 2, last: "b" });
  });

  it("passes the context as the third argument", async () => {
    const ctx = context({ tenant_id: "acme", version: 3, metadata: { who: "me" } });
    const outcome = await zoo.decide("{}", { type: "context" }, ctx);
    expect(outcome.events[0]).toEqual({ type: "context", context: ctx });
  });

  it("folds from the state it was given even when decide mutated its copy", async () => {
    const outcome = await zoo.decide(`{"count":1}`, { type: "mutate-state" }, context());
    expect(JSON.parse(outcome.state)).toEqual({ count: 2, last: "mutated" });
  });
});

describe("errors", () => {
  it("rejects with DecideError and the message when decide throws an Error", async () => {
    const err = await rejection(decideZoo("error"));
    expect(err).toBeInstanceOf(DecideError);
    expect(err.message).toBe("plain failure");
  });

  it("rejects with DecideError when decide throws a subclass of Error the program defines", async () => {
    const err = await rejection(decideZoo("custom-error"));
    expect(err).toBeInstanceOf(DecideError);
    expect(err.message).toBe("balance too low");
  });

  it.each([
    ["type-error", /decide threw TypeError: /],
    ["reference-error", /decide threw ReferenceError: .*notDefinedAnywhere/],
    ["range-error", /decide threw RangeError: /],
    ["throw-42", /decide threw a non-Error value: 42/],
    ["throw-undefined", /decide threw a non-Error value: undefined/],
    ["throw-string", /decide threw a non-Error value: "x"/],
    ["throw-object", /decide threw a non-Error value: \{"code":"E1"\}/],
  ])("treats %s as a bug in the program: ProgramError saying what was thrown", async (type, message) => {
    const err = await rejection(decideZoo(type));
    expect(err).toBeInstanceOf(ProgramError);
    expect(err.message).toMatch(message);
  });

  it("rejects with ApplyError and the message when apply throws an Error, in decide and in applyAll", async () => {
    const inDecide = await rejection(decideZoo("emit", { event: "apply-error" }));
    expect(inDecide).toBeInstanceOf(ApplyError);
    expect(inDecide.message).toBe("cannot apply apply-error");
    const inApplyAll = await rejection(applyZoo([{ type: "fine" }, { type: "apply-error" }]));
    expect(inApplyAll).toBeInstanceOf(ApplyError);
    expect(inApplyAll.message).toBe("cannot apply apply-error");
  });

  it.each([
    ["apply-type-error", /apply threw TypeError/],
    ["apply-undefined", /apply returned undefined for events\[1\] \(type "apply-undefined"\)/],
    ["apply-map", /state: a Map is not a plain object/],
    ["apply-promise", /apply returned a Promise/],
  ])("rejects applyAll with ProgramError when apply does %s", async (type, message) => {
    const err = await rejection(applyZoo([{ type: "fine" }, { type }]));
    expect(err).toBeInstanceOf(ProgramError);
    expect(err.message).toMatch(message);
  });
});

describe("plain JSON only", () => {
  it.each([
    ["bigint", "events[0].payload.n: a BigInt is not JSON"],
    ["function", "events[0].payload.f: a function is not JSON"],
    ["symbol", "events[0].payload.s: a Symbol is not JSON"],
    ["cycle", "events[0].payload.self: a cycle is not JSON"],
    ["undefined-in-array", "events[0].list[1]: undefined is not JSON"],
    ["undefined-value", "events[0].x: undefined is not JSON"],
    ["hole", "events[0].list[1]: undefined is not JSON"],
    ["map", "events[0].payload.m: a Map is not a plain object"],
    ["class", "events[0].p: a Point is not a plain object"],
    ["nan", "events[0].payload.x: NaN is not a JSON number"],
    ["infinity", "events[0].payload.x: -Infinity is not a JSON number"],
    ["getter-throws", "threw while being read at events[0].bad: Error: boom"],
    ["deep", "events[0].x.x.x.x.x.x.x[...].x.x.x.x.x: nested deeper than 256 levels"],
  ])("rejects %s with ProgramError naming the path", async (type, where) => {
    const err = await rejection(decideZoo(type));
    expect(err).toBeInstanceOf(ProgramError);
    expect(err.message).toContain(where);
  });

  it.each([
    ["no-type", /events\[0\] without a string type/],
    ["number-type", /events\[0\] without a string type/],
    ["array-event", /events\[0\] that is not an object/],
    ["number", /decide must return an event object or an array of events, got 42/],
    ["undefined", /decide must return an event object or an array of events, got undefined/],
  ])("rejects decide returning %s", async (type, message) => {
    const err = await rejection(decideZoo(type));
    expect(err).toBeInstanceOf(ProgramError);
    expect(err.message).toMatch(message);
  });
});

describe("synchronous only", () => {
  it("rejects a decide that returns a Promise", async () => {
    const err = await rejection(decideZoo("promise"));
    expect(err).toBeInstanceOf(ProgramError);
    expect(err.message).toMatch(/decide returned a Promise/);
  });

  it("rejects an async decide", async () => {
    const asyncProgram = await loadProgram(
      sandbox,
      `export async function decide() { return []; }\nexport function apply(s) { return s; }`,
    );
    await expect(asyncProgram.decide("{}", { type: "x" }, context())).rejects.toThrow(
      /decide returned a Promise/,
    );
  });

  it("rejects a call that leaves a promise job pending, and the job never runs", async () => {
    const err = await rejection(decideZoo("pending"));
    expect(err).toBeInstanceOf(ProgramError);
    expect(err.message).toMatch(/left a promise job pending/);
    // The job loops forever: had it survived into the next call, that call would time out.
    expect((await decideZoo("one")).events).toEqual([{ type: "one" }]);
  });
});

describe("determinism", () => {
  it.each([
    ["date-now", "Date.now"],
    ["new-date", "Date"],
    ["date-with-arg", "Date"],
    ["random", "Math.random"],
    ["date-caught", "Date.now"],
    ["random-caught", "Math.random"],
    ["weakref", "WeakRef"],
    ["finalization", "FinalizationRegistry"],
  ])("fails %s with ProgramError, even when the program caught the throw", async (type, capability) => {
    const err = await rejection(decideZoo(type));
    expect(err).toBeInstanceOf(ProgramError);
    expect(err.message).toContain(`the program used ${capability}, which is not available`);
    // The flag belongs to that call only.
    expect((await decideZoo("one")).events).toHaveLength(1);
  });

  it.each(["eval", "function-ctor", "function-ctor-indirect"])(
    "refuses code from strings (%s)",
    async (type) => {
      const err = await rejection(decideZoo(type));
      expect(err).toBeInstanceOf(ProgramError);
      expect(err.message).toMatch(/EvalError: code generation from strings is not available/);
    },
  );
});

describe("isolation", () => {
  it("starts every call with fresh module-level variables", async () => {
    const first = await decideZoo("calls");
    const second = await decideZoo("calls");
    expect(first.events).toEqual([{ type: "calls", calls: 1 }]);
    expect(second.events).toEqual([{ type: "calls", calls: 1 }]);
  });

  // Writes to shared globals throw (programs run in strict mode against frozen intrinsics), so
  // they fail the call and nothing persists for the next one, caught or not.
  it.each(["global-write", "global-replace", "proto-write"])("fails %s with ProgramError", async (type) => {
    const err = await rejection(decideZoo(type));
    expect(err).toBeInstanceOf(ProgramError);
    expect(err.message).toMatch(/decide threw TypeError/);
  });

  it("keeps globals and prototypes unchanged for the next call, even after caught writes", async () => {
    for (const type of [
      "global-write",
      "proto-write",
      "global-write-caught",
      "proto-write-caught",
      "math-write",
    ]) {
      await decideZoo(type).catch(() => undefined);
    }
    const seen = await decideZoo("globals");
    expect(seen.events).toEqual([
      { type: "globals", leak: "undefined", evil: "undefined", objEvil: "undefined", random: false },
    ]);
  });

  it("still lets a program shadow inherited properties on its own objects", async () => {
    const outcome = await decideZoo("shadow");
    expect(outcome.events).toEqual([{ type: "t", message: "changed", s: "mine", name: "InsufficientFunds" }]);
  });
});

describe("applyAll", () => {
  it("folds 1,000 events exactly as the same apply does in plain JavaScript", async () => {
    await using folder = await programFolder({ "program.mjs": BANK_ACCOUNT });
    const bank = await loadFrom(sandbox, folder, { decide: "program.mjs" });
    const { apply } = (await import(pathToFileURL(folder.path("program.mjs")).href)) as {
      apply: (state: JsonObject, event: JsonObject) => JsonObject;
    };
    const event = fc.oneof(
      fc.record({ type: fc.constant("deposited"), amount: fc.integer({ min: 1, max: 1_000 }) }),
      fc.record({ type: fc.constant("withdrawn"), amount: fc.integer({ min: 1, max: 1_000 }) }),
      fc.record({ type: fc.constant("noted"), text: fc.string() }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(event, { minLength: 1_000, maxLength: 1_000 }), async (events) => {
        const initial = { balance: 0, owner: "ann" };
        const folded = await bank.applyAll(JSON.stringify(initial), events);
        expect(JSON.parse(folded)).toEqual(events.reduce(apply, initial));
      }),
      { numRuns: 5 },
    );
  });

  it("gives the state decide reached when replaying decide's events from the same start", async () => {
    const bank = await loadProgram(sandbox, BANK_ACCOUNT);
    const command = fc.oneof(
      fc.record({ type: fc.constant("deposit"), amount: fc.integer({ min: 1, max: 100 }) }),
      fc.record({ type: fc.constant("withdraw"), amount: fc.integer({ min: 1, max: 100 }) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(command, { maxLength: 30 }), async (commands) => {
        const start = `{"balance":0}`;
        let state = start;
        const events: JsonObject[] = [];
        for (const cmd of commands) {
          const outcome = await bank.decide(state, cmd, context()).catch((err: unknown) => {
            if (err instanceof DecideError) return undefined;
            throw err;
          });
          if (outcome === undefined) continue;
          events.push(...outcome.events);
          state = outcome.state;
        }
        expect(await bank.applyAll(start, events)).toBe(state);
      }),
      { numRuns: 30 },
    );
  });
});

describe("decide with pending events (a cold load's catch-up in the same call)", () => {
  it("equals applyAll of the pending events followed by decide, and returns the caught-up state", async () => {
    const bank = await loadProgram(sandbox, BANK_ACCOUNT);
    const event = fc.oneof(
      fc.record({ type: fc.constant("deposited"), amount: fc.integer({ min: 1, max: 1_000 }) }),
      fc.record({ type: fc.constant("withdrawn"), amount: fc.integer({ min: 1, max: 10 }) }),
      fc.record({ type: fc.constant("noted"), text: fc.string() }),
    );
    const command = fc.oneof(
      fc.record({ type: fc.constant("deposit"), amount: fc.integer({ min: 1, max: 100 }) }),
      fc.record({ type: fc.constant("withdraw"), amount: fc.integer({ min: 1, max: 5_000 }) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(event, { maxLength: 120 }), command, async (pending, cmd) => {
        const start = `{"balance":0}`;
        const caughtUp = await bank.applyAll(start, pending);
        const twoCalls = await bank.decide(caughtUp, cmd, context()).catch((err: unknown) => err);
        const oneCall = await bank.decide(start, cmd, context(), pending).catch((err: unknown) => err);
        if (twoCalls instanceof Error) {
          expect(oneCall).toBeInstanceOf(twoCalls.constructor);
          expect((oneCall as Error).message).toBe(twoCalls.message);
          return;
        }
        expect(oneCall).toEqual({ ...(twoCalls as object), caughtUp });
      }),
      { numRuns: 40 },
    );
  });

  it("keeps module state of the catch-up out of decide: each gets a fresh program instance", async () => {
    const outcome = await zoo.decide("{}", { type: "calls" }, context(), [{ type: "a" }, { type: "b" }]);
    expect(outcome.events).toEqual([{ type: "calls", calls: 1 }]);
    expect(JSON.parse(outcome.caughtUp!)).toEqual({ count: 2, last: "b" });
    expect(JSON.parse(outcome.state)).toEqual({ count: 3, last: "calls" });
  });

  it("rejects with ApplyError when a pending event cannot be applied, and runs no decide", async () => {
    const err = await rejection(zoo.decide("{}", { type: "one" }, context(), [{ type: "apply-error" }]));
    expect(err).toBeInstanceOf(ApplyError);
    expect(err.message).toBe("cannot apply apply-error");
    const bad = await rejection(zoo.decide("{}", { type: "one" }, context(), [{ type: "apply-map" }]));
    expect(bad).toBeInstanceOf(ProgramError);
    expect(bad.message).toMatch(/a Map is not a plain object/);
  });

  it("keeps a caught code-from-strings attempt of the catch-up out of decide's failure reason", async () => {
    const alone = await rejection(decideZoo("number"));
    const after = await rejection(
      zoo.decide("{}", { type: "number" }, context(), [{ type: "apply-eval-caught" }]),
    );
    expect(alone).toBeInstanceOf(ProgramError);
    expect((after as ProgramError).fields["reason"]).toBe((alone as ProgramError).fields["reason"]);
    expect((after as ProgramError).fields["reason"]).toBe("bad-return");
  });

  it("returns no caughtUp without pending events, and an empty catch-up leaves the state as it was", async () => {
    expect((await decideZoo("one")).caughtUp).toBeUndefined();
    const outcome = await zoo.decide(`{"count":7}`, { type: "none" }, context(), []);
    expect(outcome).toEqual({ events: [], state: `{"count":7}`, caughtUp: `{"count":7}` });
  });
});

describe("loading", () => {
  it("returns the cached program for the same decide and apply", async () => {
    const again = await loadProgram(sandbox, ZOO);
    expect(again).toBe(zoo);
  });

  it("hashes decide + apply, and apply alone for snapshots", async () => {
    await using folder = await programFolder({
      "d.js": BANK_ACCOUNT,
      "a.js": BANK_ACCOUNT + "\n// apply copy\n",
    });
    const program = await loadFrom(sandbox, folder, { decide: "d.js", apply: "a.js" });
    const sha = (text: string) => createHash("sha256").update(text).digest("hex");
    expect(program.applyHash).toMatch(/^[0-9a-f]{64}$/);
    expect(program.hash).not.toBe(program.applyHash);
    const [decide, apply] = [
      await compileProgramFile(folder.path("d.js")),
      await compileProgramFile(folder.path("a.js")),
    ];
    expect(program.applyHash).toBe(apply.hash);
    expect(program.hash).toBe(sha(decide.hash + apply.hash));
  });

  it("uses decide from one file and apply from another", async () => {
    await using folder = await programFolder({
      "decide.js": `let n = 0;\nexport function decide() { n++; return { type: "d", n }; }`,
      "apply.js": `let n = 0;\nexport function apply(s, e) { n++; return { seen: e.type, applies: n }; }`,
    });
    const program = await loadFrom(sandbox, folder, { decide: "decide.js", apply: "apply.js" });
    const outcome = await program.decide("{}", { type: "x" }, context());
    expect(outcome).toEqual({ events: [{ type: "d", n: 1 }], state: `{"seen":"d","applies":1}` });
  });

  it.each([
    ["a missing decide", `export function apply(s) { return s; }`, /does not export a function named decide/],
    ["a missing apply", `export function decide() { return []; }`, /does not export a function named apply/],
    [
      "a module that throws",
      `throw new Error("no");\nexport const decide = 1;`,
      /loading .*program\.js threw Error: no/,
    ],
    [
      "a module that reads the clock",
      `const t = Date.now();\nexport const decide = () => [], apply = (s) => s;`,
      /used Date\.now while loading/,
    ],
    [
      "a module that loops",
      `for (;;) {}\nexport const decide = () => [], apply = (s) => s;`,
      /loading timed out/,
    ],
  ])("refuses %s with ProgramError", async (_what, source, message) => {
    const loose = createQuickJsSandbox({ loadTimeoutMs: 200 });
    try {
      const err = await rejection(loadProgram(loose, source));
      expect(err).toBeInstanceOf(ProgramError);
      expect(err.message).toMatch(message);
    } finally {
      await loose.close();
    }
  });

  it("makes require throw inside a program", async () => {
    const program = await loadProgram(
      sandbox,
      `module.exports = { decide: (s, c) => require(c.module), apply: (s) => s };`,
    );
    const err = await rejection(program.decide("{}", { type: "x", module: "fs" }, context()));
    expect(err).toBeInstanceOf(ProgramError);
    expect(err.message).toMatch(/require\("fs"\) is not available/);
  });

  it("refuses calls once the sandbox is closed", async () => {
    const own = createQuickJsSandbox();
    const program = await loadProgram(own, BANK_ACCOUNT);
    await own.close();
    await expect(
      program.decide(`{"balance":0}`, { type: "deposit", amount: 1 }, context()),
    ).rejects.toBeInstanceOf(Unavailable);
    await expect(loadProgram(own, BANK_ACCOUNT)).rejects.toBeInstanceOf(Unavailable);
  });
});

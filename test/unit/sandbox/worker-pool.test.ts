import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DecideError, ProgramError, Unavailable, type JsonObject } from "../../../shared/contract/index.ts";
import {
  createQuickJsSandbox,
  createWorkerSandbox,
  type AggregateProgram,
  type Sandbox,
} from "../../../shared/sandbox/index.ts";
import { BANK_ACCOUNT, context, loadProgram } from "./program-fixture.ts";

/** Misbehaves on request; `command.type` picks the behaviour. */
const HOSTILE = `
export function decide(state, command) {
  switch (command.type) {
    case "ok": return { type: "ok", n: command.n ?? 0 };
    case "spin": for (;;) {}
    case "index-of": return { type: "t", i: Array.prototype.indexOf.call({ length: 2 ** 32 - 1 }, 1) };
    case "recurse": { const f = (n) => f(n + 1) + 1; return { type: "t", v: f(0) }; }
    case "recurse-to": { const f = (n) => (n === 0 ? 0 : f(n - 1) + 1); return { type: "t", depth: f(command.depth) }; }
    case "deep-parse": return { type: "t", n: JSON.parse("[".repeat(100000) + "]".repeat(100000)).length };
    default: throw new Error("unknown " + command.type);
  }
}
export function apply(state, event) {
  return { ...state, seen: (state.seen ?? 0) + 1 };
}
`;

const TIMEOUT_MS = 200;
const GRACE_MS = 300;

let pool: Sandbox;
let hostile: AggregateProgram;

beforeAll(async () => {
  pool = createWorkerSandbox({ size: 2, graceMs: GRACE_MS });
  hostile = await loadProgram(pool, HOSTILE, { timeoutMs: TIMEOUT_MS, memoryMb: 32 });
});

afterAll(async () => {
  await pool.close();
});

const run = (type: string, extra: JsonObject = {}, aggregate = "agg-1") =>
  hostile.decide("{}", { type, ...extra }, context({ aggregate_id: aggregate }));

async function rejection(promise: Promise<unknown>): Promise<ProgramError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(ProgramError);
    return err as ProgramError;
  }
  throw new Error("expected a rejection");
}

describe("the worker pool", () => {
  it("runs decide and applyAll exactly as the in-thread sandbox does", async () => {
    const local = createQuickJsSandbox();
    try {
      const [inPool, inThread] = [
        await loadProgram(pool, BANK_ACCOUNT),
        await loadProgram(local, BANK_ACCOUNT),
      ];
      expect(inPool.hash).toBe(inThread.hash);
      expect(inPool.applyHash).toBe(inThread.applyHash);
      const command = { type: "deposit", amount: 5 };
      expect(await inPool.decide(`{"balance":1}`, command, context())).toEqual(
        await inThread.decide(`{"balance":1}`, command, context()),
      );
      const events = Array.from({ length: 1_000 }, (_, i) => ({ type: "deposited", amount: i }));
      expect(await inPool.applyAll(`{"balance":0}`, events)).toBe(
        await inThread.applyAll(`{"balance":0}`, events),
      );
      const pending = events.slice(0, 99);
      expect(await inPool.decide(`{"balance":1}`, command, context(), pending)).toEqual(
        await inThread.decide(`{"balance":1}`, command, context(), pending),
      );
      const refused = inPool.decide(`{"balance":0}`, { type: "withdraw", amount: 5 }, context());
      await expect(refused).rejects.toBeInstanceOf(DecideError);
      await expect(refused).rejects.toThrow("insufficient funds");
    } finally {
      await local.close();
    }
  });

  it("stops a built-in the interrupt cannot stop: ProgramError timeout by the watchdog, other calls unharmed", async () => {
    const started = performance.now();
    // The hung call and, at the same time, calls for other aggregates: they run on the other
    // thread (or on the replacement), and none of them fails.
    const hung = rejection(run("index-of", {}, "agg-hung"));
    const others = Promise.all(Array.from({ length: 20 }, (_, n) => run("ok", { n }, `agg-${n}`)));
    const err = await hung;
    const elapsed = performance.now() - started;
    expect(err.fields["reason"]).toBe("timeout");
    expect(err.message).toMatch(/timed out after 200 ms \(the watchdog stopped its thread 300 ms later\)/);
    expect(elapsed).toBeGreaterThanOrEqual(TIMEOUT_MS + GRACE_MS - 5);
    expect(elapsed).toBeLessThan(TIMEOUT_MS + GRACE_MS + 1_000);
    expect((await others).map((o) => o.events[0]?.["n"])).toEqual(Array.from({ length: 20 }, (_, n) => n));
    // And the pool is whole again: both threads answer.
    const after = await Promise.all(Array.from({ length: 4 }, (_, n) => run("ok", { n })));
    expect(after).toHaveLength(4);
  });

  it("a call hung in the middle of a batch fails alone: its batch-mates run again and succeed", async () => {
    // One pool thread, so every call of this turn travels in the same batch as the hung one.
    const single = createWorkerSandbox({ size: 1, graceMs: GRACE_MS });
    try {
      const program = await loadProgram(single, HOSTILE, { timeoutMs: TIMEOUT_MS, memoryMb: 32 });
      const call = (type: string, n: number) =>
        program.decide("{}", { type, n }, context({ aggregate_id: `agg-${n}` }));
      const before = Array.from({ length: 5 }, (_, n) => call("ok", n));
      const hung = rejection(call("index-of", 5));
      const after = Array.from({ length: 5 }, (_, n) => call("ok", 6 + n));
      const err = await hung;
      expect(err.fields["reason"]).toBe("timeout");
      const done = await Promise.all([...before, ...after]);
      expect(done.map((o) => o.events[0]?.["n"])).toEqual([0, 1, 2, 3, 4, 6, 7, 8, 9, 10]);
      // A refusal inside a batch stays that call's own.
      const mixed = await Promise.allSettled([call("ok", 1), call("nope", 2), call("ok", 3)]);
      expect(mixed.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    } finally {
      await single.close();
    }
  });

  it("runs a command's decide before background work queued ahead of it", async () => {
    const single = createWorkerSandbox({ size: 1 });
    try {
      const bank = await loadProgram(single, BANK_ACCOUNT);
      const done: string[] = [];
      const events = Array.from({ length: 200 }, () => ({ type: "deposited", amount: 1 }));
      const background = Array.from({ length: 40 }, (_, i) =>
        bank.applyAll(`{"balance":0}`, events, { background: true }).then(() => done.push(`bg${i}`)),
      );
      const decide = bank
        .decide(`{"balance":0}`, { type: "deposit", amount: 1 }, context())
        .then(() => done.push("decide"));
      await Promise.all([...background, decide]);
      expect(done).toHaveLength(41);
      expect(done[0]).toBe("decide");
      // Background calls still run, in their order.
      expect(done.slice(1)).toEqual(Array.from({ length: 40 }, (_, i) => `bg${i}`));
    } finally {
      await single.close();
    }
  });

  it("never stops a thread for a call that finished while the main thread was busy", async () => {
    const single = createWorkerSandbox({ size: 1, graceMs: 20 });
    try {
      const bank = await loadProgram(single, BANK_ACCOUNT, { timeoutMs: 50, memoryMb: 32 });
      await bank.decide(`{"balance":0}`, { type: "deposit", amount: 1 }, context());
      const call = bank.decide(`{"balance":0}`, { type: "deposit", amount: 1 }, context());
      // Once the batch is out, block this thread well past timeout + grace: the thread answers
      // within a millisecond, and its answer waits behind the overdue watchdog timer.
      setImmediate(() =>
        setImmediate(() => {
          const end = Date.now() + 300;
          while (Date.now() < end);
        }),
      );
      expect((await call).events).toHaveLength(1);
    } finally {
      await single.close();
    }
  });

  it("runs background work under a steady foreground load too (it ages into a turn)", async () => {
    const single = createWorkerSandbox({ size: 1 });
    try {
      const bank = await loadProgram(single, BANK_ACCOUNT);
      let stop = false;
      const loop = async () => {
        while (!stop) await bank.decide(`{"balance":0}`, { type: "deposit", amount: 1 }, context());
      };
      const loaders = Array.from({ length: 40 }, loop);
      await new Promise((r) => setTimeout(r, 100));
      const started = performance.now();
      const folded = await bank.applyAll(`{"balance":0}`, [{ type: "deposited", amount: 3 }], {
        background: true,
      });
      const waited = performance.now() - started;
      stop = true;
      await Promise.all(loaders);
      expect(JSON.parse(folded)).toMatchObject({ balance: 3 });
      expect(waited).toBeLessThan(1_000);
    } finally {
      await single.close();
    }
  });

  it("interrupts an ordinary loop at the deadline without stopping the thread", async () => {
    const started = performance.now();
    const err = await rejection(run("spin"));
    expect(err.fields["reason"]).toBe("timeout");
    expect(err.message).toMatch(/timed out after 200 ms$/);
    expect(performance.now() - started).toBeLessThan(TIMEOUT_MS + GRACE_MS);
  });

  it("gives programs four times the main thread's stack, and overflow stays a clean guest error", async () => {
    // 256 KiB in the main thread holds about 1,400 frames; the pool's 1 MiB about 5,600.
    expect((await run("recurse-to", { depth: 4_000 })).events).toEqual([{ type: "t", depth: 4_000 }]);
    const overflow = await rejection(run("recurse"));
    expect(overflow.fields["reason"]).toBe("stack");
    expect(overflow.message).toMatch(/InternalError: stack overflow/);
    // The JSON parser uses the most host stack per QuickJS byte; still QuickJS's limit trips first.
    const parser = await rejection(run("deep-parse"));
    expect(parser.fields["reason"]).toBe("stack");
    expect(parser.message).toMatch(/SyntaxError: stack overflow/);
  });

  it("refuses a program whose loading hangs a thread, and never loads it into the replacement", async () => {
    const loose = createWorkerSandbox({ size: 1, graceMs: 100, loadTimeoutMs: 1_000 });
    try {
      const bank = await loadProgram(loose, BANK_ACCOUNT);
      const err = await rejection(
        loadProgram(
          loose,
          `const i = Array.prototype.indexOf.call({ length: 2 ** 32 - 1 }, 1);\nexport const decide = () => [], apply = (s) => s;`,
        ),
      );
      expect(err.fields["reason"]).toBe("timeout");
      expect(err.message).toMatch(/loading did not finish within 1100 ms/);
      expect(
        (await bank.decide(`{"balance":0}`, { type: "deposit", amount: 1 }, context())).events,
      ).toHaveLength(1);
    } finally {
      await loose.close();
    }
  });

  it("fails waiting and new calls with Unavailable once closed", async () => {
    const own = createWorkerSandbox({ size: 1 });
    const bank = await loadProgram(own, BANK_ACCOUNT);
    await own.close();
    await expect(
      bank.decide(`{"balance":0}`, { type: "deposit", amount: 1 }, context()),
    ).rejects.toBeInstanceOf(Unavailable);
    await expect(loadProgram(own, BANK_ACCOUNT)).rejects.toBeInstanceOf(Unavailable);
  });
});

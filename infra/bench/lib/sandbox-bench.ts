/**
 * Rehydration in the sandbox: `program.applyAll(state, events)` of the bank-account program,
 * loaded exactly as the service loads it (loadFunctions + compileProgramFile + the QuickJS
 * sandbox), against a plain JavaScript fold of the same events with the same apply.js, given the
 * same JSON state in and JSON state out. Also the cost of one `decide` call (the warm path's
 * sandbox work per command). Both in this thread (createQuickJsSandbox: QuickJS alone) and through
 * the worker-thread pool the service runs by default (createWorkerSandbox: QuickJS plus the thread
 * hop).
 */
import path from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { loadFunctions, type FunctionDefinition } from "../../../shared/functions/index.ts";
import {
  compileProgramFile,
  createQuickJsSandbox,
  createWorkerSandbox,
  type AggregateProgram,
  type Sandbox,
} from "../../../shared/sandbox/index.ts";
import { repeated, type Repeated } from "./stats.ts";

export interface SandboxResult {
  readonly events: number;
  /** events/s of applyAll, per repetition. */
  readonly applyAllEventsPerSec: Repeated;
  /** events/s of the plain JS fold, per repetition. */
  readonly plainEventsPerSec: Repeated;
  /** Microseconds per decide call (one deposit on a small state), per repetition. */
  readonly decideMicros: Repeated;
  /**
   * The same through the worker-thread pool the service uses by default (createWorkerSandbox,
   * 2 threads): one call at a time, so this is the thread hop's latency on top of QuickJS.
   */
  readonly pool?: { applyAllEventsPerSec: Repeated; decideMicros: Repeated; failures: Failures };
  /** Sandbox calls that failed during the measurement (in this thread). */
  readonly failures: Failures;
}

type Apply = (state: unknown, event: unknown) => unknown;

/** Calls that failed (e.g. a ProgramError timeout on a busy machine), with the last message. */
interface Failures {
  count: number;
  last?: string;
}

/**
 * Calls `fn` in a loop for about `ms` and returns successful calls per second. A failed call (the
 * sandbox's own limits, e.g. the 100 ms budget on a loaded machine) is counted, not thrown: it is
 * a finding about the service, not a broken harness.
 */
async function rate(fn: () => unknown, ms: number, failures: Failures): Promise<number> {
  let calls = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    for (let i = 0; i < 10; i++) {
      try {
        await fn();
        calls++;
      } catch (err) {
        failures.count++;
        failures.last = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      }
    }
    now = performance.now();
  }
  return calls / ((now - start) / 1000);
}

export async function benchSandbox(
  repo: string,
  opts: { events: number; reps: number; msPerRep: number },
): Promise<SandboxResult> {
  const functions = await loadFunctions(
    path.join(repo, "functions"),
    { snapshotThreshold: 100, timeoutMs: 100, memoryMb: 32 },
    compileProgramFile,
  );
  const fn = functions.find((f) => f.type === "bank-account");
  if (!fn) throw new Error("functions/bank-account not found");
  const { apply } = (await import(pathToFileURL(path.join(fn.dir, fn.manifest.apply)).href)) as {
    apply: Apply;
  };
  const events = Array.from({ length: opts.events }, (_, i) => ({ type: "deposited", amount: 1 + (i % 7) }));
  const initial = fn.initialState;
  const plain = () => JSON.stringify(events.reduce<unknown>((s, e) => apply(s, e), JSON.parse(initial)));

  const inThread = await measure(createQuickJsSandbox(), fn.source, {
    ...opts,
    events,
    initial,
    apply,
    plain,
  });
  const pooled = await measure(createWorkerSandbox(), fn.source, { ...opts, events, initial, apply });
  return {
    events: opts.events,
    applyAllEventsPerSec: inThread.applyAll,
    plainEventsPerSec: inThread.plain!,
    decideMicros: inThread.decide,
    failures: inThread.failures,
    pool: { applyAllEventsPerSec: pooled.applyAll, decideMicros: pooled.decide, failures: pooled.failures },
  };
}

async function measure(
  sandbox: Sandbox,
  source: FunctionDefinition["source"],
  o: {
    reps: number;
    msPerRep: number;
    events: Array<{ type: string; amount: number }>;
    initial: string;
    apply: Apply;
    plain?: () => string;
  },
): Promise<{ applyAll: Repeated; decide: Repeated; failures: Failures; plain?: Repeated }> {
  try {
    const program: AggregateProgram = await sandbox.load(source);
    const failures: Failures = { count: 0 };
    // A fresh thread's first calls are slow (JIT, QuickJS realm): small calls first, so the
    // 1,000-event call does not meet the program's time limit before anything is warm.
    const few = o.events.slice(0, 10);
    await rate(() => program.applyAll(o.initial, few), 200, failures);
    failures.count = 0;
    // Same answer both ways, or the comparison means nothing.
    const a = JSON.parse(await program.applyAll(o.initial, o.events)) as unknown;
    const b = o.events.reduce<unknown>((s, e) => o.apply(s, e), JSON.parse(o.initial));
    if (JSON.stringify(a) !== JSON.stringify(b)) {
      throw new Error(`applyAll and the plain fold disagree: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
    }
    const sandboxed = () => program.applyAll(o.initial, o.events);
    const openState = JSON.stringify({ balance: 100, status: "open" });
    const command = { type: "deposit", amount: 1 };
    const context = { tenant_id: "bench", aggregate_id: "a", command_id: "c", version: 100, metadata: {} };
    const decide = () => program.decide(openState, command, context);

    // Warm up every path (JIT of the host side, QuickJS realm creation).
    await rate(sandboxed, 200, failures);
    if (o.plain) await rate(o.plain, 200, failures);
    await rate(decide, 200, failures);

    const sandboxRates: number[] = [];
    const plainRates: number[] = [];
    const decideMicros: number[] = [];
    for (let r = 0; r < o.reps; r++) {
      sandboxRates.push((await rate(sandboxed, o.msPerRep, failures)) * o.events.length);
      if (o.plain) plainRates.push((await rate(o.plain, o.msPerRep, failures)) * o.events.length);
      decideMicros.push(1e6 / (await rate(decide, o.msPerRep / 2, failures)));
    }
    return {
      applyAll: repeated(sandboxRates),
      decide: repeated(decideMicros),
      failures,
      ...(o.plain ? { plain: repeated(plainRates) } : {}),
    };
  } finally {
    await sandbox.close();
  }
}

/**
 * The sandbox micro-benchmark: `node --import tsx shared/sandbox/sandbox-bench.ts [--rounds N]`.
 * In one run, for the bank-account program loaded the way the service loads it: applyAll of
 * 1,000 deposits (events/s) in this thread, through the worker pool, and as a plain JavaScript
 * fold of the same apply.js (same JSON state in and out); and the cost of one decide call in
 * this thread and through the pool. Prints one JSON object.
 */
import path from "node:path";
import { pathToFileURL } from "node:url";
import { loadFunctions } from "../functions/index.ts";
import { compileProgramFile } from "./compile.ts";
import { createQuickJsSandbox } from "./quickjs-sandbox.ts";
import type { JsonObject } from "../contract/index.ts";
import type { AggregateProgram } from "./types.ts";
import { createWorkerSandbox } from "./worker-pool.ts";

export interface SandboxBenchResult {
  readonly events: number;
  /** applyAll events/s: median of the rounds. */
  readonly applyAllInThread: number;
  readonly applyAllInPool: number;
  readonly plainJs: number;
  /** µs per decide call, median of the rounds; the pool's with one call in flight at a time. */
  readonly decideInThreadMicros: number;
  readonly decidePoolMicros: number;
  /** µs per decide call through the pool with 8 calls in flight (what a busy service sees). */
  readonly decidePoolConcurrentMicros: number;
}

type Apply = (state: unknown, event: unknown) => unknown;

const EVENTS = 1_000;

export async function runSandboxBench(
  opts: { rounds?: number; functionsDir?: string } = {},
): Promise<SandboxBenchResult> {
  const rounds = opts.rounds ?? 7;
  const functionsDir = opts.functionsDir ?? path.resolve(import.meta.dirname, "../../functions");
  const [bank] = (
    await loadFunctions(
      functionsDir,
      { snapshotThreshold: 100, timeoutMs: 1_000, memoryMb: 32 },
      compileProgramFile,
    )
  ).filter((fn) => fn.type === "bank-account");
  if (bank === undefined) throw new Error(`no bank-account in ${functionsDir}`);
  const { apply } = (await import(pathToFileURL(path.join(bank.dir, bank.manifest.apply)).href)) as {
    apply: Apply;
  };
  const events = Array.from({ length: EVENTS }, (_, i) => ({ type: "deposited", amount: 1 + (i % 7) }));
  const initial = bank.initialState;
  const plain = (): string => JSON.stringify(events.reduce<unknown>(apply, JSON.parse(initial)));

  // A generous deadline: on a busy machine a slow round must be measured, not refused.
  const source = { ...bank.source, limits: { ...bank.source.limits, timeoutMs: 10_000 } };
  const state = JSON.stringify({ balance: 100, status: "open" });
  const command = { type: "deposit", amount: 1 };
  const context = { tenant_id: "", aggregate_id: "a", command_id: "c", version: 1, metadata: {} };
  const applyRate = (program: AggregateProgram) =>
    median(rounds, async () => EVENTS / (await timeEach(20, () => program.applyAll(initial, events))));
  const decideCost = (program: AggregateProgram) =>
    median(rounds, async () => 1e6 * (await timeEach(300, () => program.decide(state, command, context))));

  // This thread first, with no pool threads starting up beside it.
  const inThread = createQuickJsSandbox();
  let local: { applyAll: number; decide: number; plain: number };
  try {
    const program = await inThread.load(source);
    await check(program, initial, events, plain);
    await warm(program, plain);
    local = {
      applyAll: await applyRate(program),
      decide: await decideCost(program),
      plain: await median(rounds, async () => EVENTS / (await timeEach(200, () => Promise.resolve(plain())))),
    };
  } finally {
    await inThread.close();
  }

  const pool = createWorkerSandbox({ size: 2 });
  try {
    const program = await pool.load(source);
    await check(program, initial, events, plain);
    // Both threads up and warm: a few hundred calls spread over them.
    for (let i = 0; i < 50; i++)
      await Promise.all([program.decide(state, command, context), program.decide(state, command, context)]);
    await warm(program, plain);
    const concurrent = await median(rounds, async () => {
      const started = performance.now();
      for (let i = 0; i < 40; i++) {
        await Promise.all(Array.from({ length: 8 }, () => program.decide(state, command, context)));
      }
      return ((performance.now() - started) * 1_000) / 320;
    });
    return {
      events: EVENTS,
      applyAllInThread: Math.round(local.applyAll),
      applyAllInPool: Math.round(await applyRate(program)),
      plainJs: Math.round(local.plain),
      decideInThreadMicros: round1(local.decide),
      decidePoolMicros: round1(await decideCost(program)),
      decidePoolConcurrentMicros: round1(concurrent),
    };
  } finally {
    await pool.close();
  }
}

async function check(
  program: AggregateProgram,
  initial: string,
  events: readonly JsonObject[],
  plain: () => string,
): Promise<void> {
  if ((await program.applyAll(initial, events)) !== plain())
    throw new Error("applyAll and the plain fold disagree");
}

/** Seconds per call of `fn`, over `n` calls one after another. */
async function timeEach(n: number, fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  for (let i = 0; i < n; i++) await fn();
  return (performance.now() - started) / 1_000 / n;
}

async function median(rounds: number, sample: () => Promise<number>): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < rounds; i++) samples.push(await sample());
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)]!;
}

/**
 * About 1.5 s of calls before measuring: V8 compiles QuickJS's hot WebAssembly functions again,
 * optimised, in the background, and until that is done a round measures the baseline compiler.
 */
async function warm(program: AggregateProgram, plain: () => unknown): Promise<void> {
  const events = Array.from({ length: EVENTS }, () => ({ type: "deposited", amount: 1 }));
  const command = { type: "deposit", amount: 1 };
  const context = { tenant_id: "", aggregate_id: "a", command_id: "c", version: 1, metadata: {} };
  const until = performance.now() + 1_500;
  while (performance.now() < until) {
    await program.applyAll(`{"balance":0,"status":"new"}`, events);
    for (let i = 0; i < 20; i++) await program.decide(`{"balance":1,"status":"open"}`, command, context);
    plain();
  }
}

const round1 = (x: number): number => Math.round(x * 10) / 10;

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const at = process.argv.indexOf("--rounds");
  const rounds = at > 0 ? Number(process.argv[at + 1]) : undefined;
  const result = await runSandboxBench(rounds === undefined ? {} : { rounds });
  process.stdout.write(
    `${JSON.stringify({ ...result, applyAllInThreadVsPlain: `1/${Math.round(result.plainJs / result.applyAllInThread)}` }, null, 2)}\n`,
  );
}

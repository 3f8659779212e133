/**
 * `npm run bench` (issue 6): measures the service against the architecture's floor on this
 * machine, in ONE run, and prints a table with medians over repetitions, min–max and the ratios
 * of the targets. Writes the same as JSON to infra/bench/results/<timestamp>.json and latest.json.
 *
 *   npm run bench                       full run (about 4–5 minutes)
 *   npm run bench -- --quick            smoke run (under a minute), smaller data sets
 *   npm run bench -- --only=throughput,sequential,cold,sandbox,memory,query
 *   npm run bench -- --loadgens=2 --profile --reps=5 --log-level=info
 *
 * A missed target is reported, not fatal: the exit code is non-zero only when the harness breaks.
 * See README.md in this folder for what each scenario measures.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { connect } from "@nats-io/transport-node";
import { ensureEventStream } from "../../shared/event-log/index.ts";
import { DEFAULT_BUCKET, DEFAULT_STREAM } from "../../shared/naming/index.ts";
import { startNatsServer, type NatsServer } from "../../shared/nats-server/index.ts";
import { openSnapshotBucket } from "../../shared/snapshot-store/index.ts";
import {
  buildService,
  cpuMs,
  LoadGenPool,
  REPO,
  startBaseline,
  startService,
  type ServiceHandle,
} from "./lib/children.ts";
import type { DurationRun, ListRun, RunResult, WorkItem } from "./lib/protocol.ts";
import { check, fmt, range, table, type TargetCheck } from "./lib/report.ts";
import { benchQuery, type QueryBenchResult } from "./lib/query-bench.ts";
import { benchSandbox, type SandboxResult } from "./lib/sandbox-bench.ts";
import { seed, shuffle, type SeedResult } from "./lib/seed.ts";
import { countRoundTrips, type RoundTrips } from "./lib/round-trips.ts";
import { mergeSamples, repeated, summarize, type LatencySummary, type Repeated } from "./lib/stats.ts";
import { topFunctions, type TopEntry } from "./profile-top.ts";

const SUBMIT = "aggregate.bank-account.submit";
const BASELINE_SUBJECT = "bench.baseline.bank-account.submit";
const RESULTS = path.join(import.meta.dirname, "results");
const SCENARIOS = ["throughput", "sequential", "cold", "sandbox", "memory", "query"] as const;
type Scenario = (typeof SCENARIOS)[number];

interface Preset {
  readonly reps: number;
  readonly aggregates: number;
  readonly inFlight: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly seqWarmupMs: number;
  readonly seqDurationMs: number;
  readonly coldPerBucket: number;
  readonly coldReps: number;
  /** A new service process for every cold repetition (full), or one for all (quick, to save start-ups). */
  readonly coldFreshProcessPerRep: boolean;
  readonly fillerAggregates: number;
  readonly fillerCommits: number;
  readonly jitWarmup: number;
  readonly sandboxReps: number;
  readonly sandboxMs: number;
  readonly memoryAggregates: number;
  readonly memoryCaches: readonly number[];
  /** Read model rows of the query scenario, page queries timed, command load for the lag. */
  readonly queryRows: number;
  readonly queryPages: number;
  readonly queryLoadMs: number;
}

const PRESETS: Record<"full" | "quick", Preset> = {
  full: {
    reps: 5,
    aggregates: 1_000,
    inFlight: 64,
    warmupMs: 1_000,
    durationMs: 3_000,
    seqWarmupMs: 300,
    seqDurationMs: 2_000,
    coldPerBucket: 80,
    coldReps: 3,
    coldFreshProcessPerRep: true,
    fillerAggregates: 10_000,
    fillerCommits: 2,
    jitWarmup: 2_000,
    sandboxReps: 5,
    sandboxMs: 700,
    memoryAggregates: 100_000,
    memoryCaches: [100_000, 20_000],
    queryRows: 100_000,
    queryPages: 1_000,
    queryLoadMs: 3_000,
  },
  quick: {
    reps: 3,
    aggregates: 1_000,
    inFlight: 64,
    warmupMs: 500,
    durationMs: 1_500,
    seqWarmupMs: 200,
    seqDurationMs: 1_000,
    coldPerBucket: 20,
    coldReps: 3,
    coldFreshProcessPerRep: false,
    fillerAggregates: 2_000,
    fillerCommits: 2,
    jitWarmup: 500,
    sandboxReps: 3,
    sandboxMs: 200,
    // Only the bound is checked in a quick run (RSS needs the full 100k).
    memoryAggregates: 3_000,
    memoryCaches: [1_000],
    // The 100k rows take about 2 s to write: the quick run keeps them, with fewer queries.
    queryRows: 100_000,
    queryPages: 300,
    queryLoadMs: 1_500,
  },
};

const BUCKETS = [0, 50, 99] as const;

const t0 = performance.now();

function log(line: string): void {
  const t = ((performance.now() - t0) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`${t}s ${line}\n`);
}

// ---------------------------------------------------------------------------------------------
// Options

const { values: opts } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    loadgens: { type: "string" },
    reps: { type: "string" },
    profile: { type: "boolean", default: false },
    source: { type: "boolean", default: false },
    "no-build": { type: "boolean", default: false },
    "log-level": { type: "string", default: "warn" },
    "nats-server": { type: "string", default: process.env["NATS_SERVER_BIN"] ?? "nats-server" },
    help: { type: "boolean", default: false },
  },
  strict: true,
});
if (opts.help) {
  log(
    "usage: npm run bench -- [--quick] [--only=throughput,sequential,cold,sandbox,memory,query] [--loadgens=N]\n" +
      "                        [--reps=N] [--profile] [--source] [--no-build] [--log-level=warn] [--nats-server=PATH]",
  );
  process.exit(0);
}
const mode = opts.quick ? "quick" : "full";
const preset: Preset = {
  ...PRESETS[mode],
  ...(opts.reps
    ? { reps: positiveInt(opts.reps, "--reps"), coldReps: positiveInt(opts.reps, "--reps") }
    : {}),
};
/** How every service process of this run starts: the compiled build unless --source. */
const serviceRun = { logLevel: opts["log-level"], fromSource: opts.source };
const loadgens = opts.loadgens ? positiveInt(opts.loadgens, "--loadgens") : 1;
const only = new Set<Scenario>(
  opts.only
    ? opts.only.split(",").map((s) => {
        const name = s.trim() as Scenario;
        if (!SCENARIOS.includes(name))
          throw new Error(`--only: unknown scenario ${s} (${SCENARIOS.join(", ")})`);
        return name;
      })
    : SCENARIOS,
);

function positiveInt(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${what} must be a positive integer`);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Result shapes (the JSON file)

interface Health {
  errors: Record<string, number>;
  timeouts: number;
  failures: Record<string, number>;
  unexpected: number;
}

/** One side (baseline or service) of a throughput or sequential comparison. */
interface LoadSide {
  readonly reqPerSec: Repeated;
  readonly p50Ms: Repeated;
  readonly p99Ms: Repeated;
  /** CPU time per completed request (µs) of the responder, nats-server and the load generators. */
  readonly cpuUsPerRequest: { responder: Repeated; nats: Repeated; loadgen: Repeated };
  readonly health: Health;
}

interface ColdResult {
  readonly seed: Omit<SeedResult, "sets">;
  /** By commits behind the snapshot. */
  readonly buckets: Record<string, { p50Ms: Repeated; p99Ms: Repeated; samples: number }>;
  /** Second command to the same aggregates in the same fresh process (now cached). */
  readonly warmSameProcess: { p50Ms: Repeated; p99Ms: Repeated };
  readonly rehydratedCommits: { expected: number; measured: number | undefined };
  /** How long each fresh service's read model took to catch up with the stream before measuring. */
  readonly readModelCatchUpMs: number[];
  readonly serviceWarnings: number;
  readonly health: Health;
}

interface MemoryRun {
  readonly cacheSize: number;
  readonly aggregates: number;
  readonly cached: number | undefined;
  readonly rssStartBytes: number;
  /** Right after the last reply. */
  readonly rssBytes: number;
  /** Once the process has been idle long enough for RSS to settle (see `settledRss`). */
  readonly rssRestBytes: number;
  /** V8 heap used / heap total / external (ArrayBuffers, WASM memory) at the end, from /metrics. */
  readonly heapUsedBytes: number | undefined;
  readonly heapTotalBytes: number | undefined;
  readonly externalBytes: number | undefined;
  /** RSS growth per cached aggregate (unbounded run only). */
  readonly bytesPerAggregate: number;
  readonly commandsPerSec: number;
  readonly health: Health;
}

interface Results {
  readonly schema: 1;
  readonly mode: "full" | "quick";
  readonly startedAt: string;
  finishedAt?: string;
  durationSec?: number;
  readonly machine: Record<string, unknown>;
  readonly config: Record<string, unknown>;
  readonly scenarios: {
    baselineThroughput?: LoadSide;
    warmThroughput?: LoadSide;
    baselineSequential?: LoadSide;
    warmSequential?: LoadSide;
    cold?: ColdResult;
    sandbox?: SandboxResult;
    memory?: MemoryRun[];
    query?: QueryBenchResult;
    profile?: { file: string; top: TopEntry[] };
    /** NATS requests per warm command (sequential), by side. */
    roundTrips?: Record<string, RoundTrips>;
  };
  targets: TargetCheck[];
}

// ---------------------------------------------------------------------------------------------
// Helpers

function newHealth(): Health {
  return { errors: {}, timeouts: 0, failures: {}, unexpected: 0 };
}

function addHealth(h: Health, results: readonly RunResult[]): void {
  for (const r of results) {
    for (const [k, n] of Object.entries(r.errors)) h.errors[k] = (h.errors[k] ?? 0) + n;
    for (const [k, n] of Object.entries(r.failures)) h.failures[k] = (h.failures[k] ?? 0) + n;
    h.timeouts += r.timeouts;
    h.unexpected += r.unexpected;
  }
}

function errorCount(h: Health): number {
  const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);
  return sum(h.errors) + sum(h.failures) + h.unexpected;
}

/** Splits `items` over `n` parts round-robin. */
function split<T>(items: readonly T[], n: number): T[][] {
  const parts: T[][] = Array.from({ length: n }, () => []);
  items.forEach((x, i) => parts[i % n]!.push(x));
  return parts;
}

function splitCount(total: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => Math.floor(total / n) + (i < total % n ? 1 : 0));
}

function ids(n: number): string[] {
  return Array.from({ length: n }, () => randomUUID());
}

/** CPU time used per process during a run, ms. */
interface CpuUse {
  readonly responder: number;
  readonly nats: number;
  readonly loadgen: number;
}

async function cpuOf(pids: {
  responder: number;
  nats: number;
  loadgens: readonly number[];
}): Promise<CpuUse> {
  const [responder, nats, ...loadgens] = await Promise.all(
    [pids.responder, pids.nats, ...pids.loadgens].map((pid) => cpuMs(pid).catch(() => NaN)),
  );
  return { responder: responder!, nats: nats!, loadgen: loadgens.reduce((a, b) => a + b, 0) };
}

/**
 * One closed-loop run over all load generators, with the CPU time that the responder (service or
 * baseline), nats-server and the load generators used meanwhile.
 */
async function durationRun(
  pool: LoadGenPool,
  pids: { responder: number; nats: number },
  subject: string,
  tenant: string,
  aggregates: readonly string[],
  inFlight: number,
  warmupMs: number,
  durationMs: number,
): Promise<{ results: RunResult[]; cpu: CpuUse }> {
  const n = Math.min(pool.size, inFlight);
  const parts = split(aggregates, n);
  const slots = splitCount(inFlight, n);
  const specs: DurationRun[] = parts.map((part, i) => ({
    mode: "duration",
    subject,
    tenant,
    inFlight: slots[i]!,
    timeoutMs: 10_000,
    aggregates: part,
    warmupMs,
    durationMs,
  }));
  const who = { ...pids, loadgens: pool.pids };
  const before = await cpuOf(who);
  const results = await pool.run(specs, warmupMs + durationMs + 60_000);
  const after = await cpuOf(who);
  return {
    results,
    cpu: {
      responder: after.responder - before.responder,
      nats: after.nats - before.nats,
      loadgen: after.loadgen - before.loadgen,
    },
  };
}

/** Every item once over all load generators. */
async function listRun(
  pool: LoadGenPool,
  subject: string,
  tenant: string,
  items: readonly WorkItem[],
  inFlight: number,
  expectedRate = 200,
): Promise<RunResult[]> {
  const n = Math.min(pool.size, inFlight);
  // Items of one aggregate must stay in one process, in order: split by aggregate.
  const parts: WorkItem[][] = Array.from({ length: n }, () => []);
  const owner = new Map<string, number>();
  for (const item of items) {
    let o = owner.get(item.aggregateId);
    if (o === undefined) owner.set(item.aggregateId, (o = owner.size % n));
    parts[o]!.push(item);
  }
  const slots = splitCount(inFlight, n);
  const specs: ListRun[] = parts.map((part, i) => ({
    mode: "list",
    subject,
    tenant,
    inFlight: slots[i]!,
    timeoutMs: 10_000,
    items: part,
  }));
  return pool.run(specs, 120_000 + (items.length / expectedRate) * 1000);
}

interface RunStats {
  readonly rate: number;
  readonly latency: LatencySummary;
  /** CPU µs per completed request, by process. */
  readonly cpuUs: CpuUse;
}

function statsOf({ results, cpu }: { results: RunResult[]; cpu: CpuUse }): RunStats {
  const ok = results.reduce((n, r) => n + r.ok, 0);
  const completed = results.reduce((n, r) => n + r.completed, 0);
  const ms = Math.max(...results.map((r) => r.elapsedMs));
  const latency = summarize(mergeSamples(results.map((r) => r.samples["all"] ?? new Float64Array())));
  const per = (x: number) => (completed > 0 ? (x * 1000) / completed : NaN);
  return {
    rate: ok / (ms / 1000),
    latency,
    cpuUs: { responder: per(cpu.responder), nats: per(cpu.nats), loadgen: per(cpu.loadgen) },
  };
}

function samplesOf(results: readonly RunResult[], label: string): Float64Array {
  return mergeSamples(results.map((r) => r.samples[label] ?? new Float64Array()));
}

function mb(bytes: number): number {
  return bytes / (1024 * 1024);
}

function memoryNote(m: MemoryRun): string {
  const opt = (x: number | undefined) => (x === undefined ? "?" : fmt(mb(x), 0));
  return (
    `RSS ${fmt(mb(m.rssStartBytes), 0)} → ${fmt(mb(m.rssBytes), 0)} MiB, at rest ${fmt(mb(m.rssRestBytes), 0)}` +
    (Number.isFinite(m.bytesPerAggregate) ? ` (+${fmt(m.bytesPerAggregate, 0)} B/aggregate)` : "") +
    `; heap ${opt(m.heapUsedBytes)}/${opt(m.heapTotalBytes)} MiB, external ${opt(m.externalBytes)} MiB; ` +
    `${fmt(m.commandsPerSec, 0)} new-aggregate cmd/s`
  );
}

function natsServerVersion(binary: string): string {
  try {
    return execFileSync(binary, ["--version"], { encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

interface Ctx {
  readonly nats: NatsServer;
  readonly pool: LoadGenPool;
  readonly results: Results;
  readonly profileDir: string | undefined;
}

/** baseline vs warm service: throughput at 64 in flight, then sequential (1 in flight). */
async function throughputAndSequential(
  ctx: Ctx,
  doThroughput: boolean,
  doSequential: boolean,
): Promise<void> {
  const { nats, pool, results } = ctx;
  log("· starting the service (warm) and the baseline");
  const service = await startService({
    natsUrl: nats.url,
    ...serviceRun,
    ...(ctx.profileDir ? { cpuProfile: { dir: ctx.profileDir } } : {}),
  });
  const baseline = await startBaseline(nats.url, BASELINE_SUBJECT);
  try {
    const sides = {
      baseline: { subject: BASELINE_SUBJECT, tenant: "bench-baseline", aggregates: ids(preset.aggregates) },
      service: { subject: SUBMIT, tenant: "bench", aggregates: ids(preset.aggregates) },
    };
    // Warm: one command per aggregate (the service's cache, the baseline's map, both JITs).
    for (const [name, side] of Object.entries(sides)) {
      const items = side.aggregates.map((a) => ({ aggregateId: a, label: "warm", expectVersion: 1 }));
      const h = newHealth();
      addHealth(h, await listRun(pool, side.subject, side.tenant, items, preset.inFlight));
      log(`  warmed ${name}: ${items.length} aggregates, ${errorCount(h)} errors, ${h.timeouts} timeouts`);
      if (errorCount(h) + h.timeouts > 0) log(`  ! warm-up of ${name} had errors: ${JSON.stringify(h)}`);
    }

    // NATS requests per warm command, as the server sees them (one command at a time).
    const probe: Record<string, RoundTrips> = {};
    for (const [name, side] of Object.entries(sides)) {
      const items = side.aggregates.slice(0, 200).map((a) => ({ aggregateId: a, label: "probe" }));
      probe[name] = await countRoundTrips(nats.url, side.tenant, async () => {
        const res = await listRun(pool, side.subject, side.tenant, items, 1);
        return res.reduce((n, r) => n + r.ok, 0);
      });
      const parts = Object.entries(probe[name].perCommand).map(([k, n]) => `${k} ${fmt(n, 2)}`);
      log(`  NATS requests per warm command, ${name}: ${fmt(probe[name].total, 2)} (${parts.join(", ")})`);
    }
    results.scenarios.roundTrips = probe;

    const pids = {
      baseline: { responder: baseline.pid, nats: nats.pid },
      service: { responder: service.pid, nats: nats.pid },
    };
    /** Repetitions of both sides, alternating which goes first so drift in the machine's load hits both alike. */
    const compare = async (inFlight: number, warmupMs: number, durationMs: number) => {
      const acc = { baseline: [] as RunStats[], service: [] as RunStats[] };
      const health = { baseline: newHealth(), service: newHealth() };
      for (let r = 0; r < preset.reps; r++) {
        const order = r % 2 === 0 ? (["baseline", "service"] as const) : (["service", "baseline"] as const);
        for (const name of order) {
          const side = sides[name];
          const run = await durationRun(
            pool,
            pids[name],
            side.subject,
            side.tenant,
            side.aggregates,
            inFlight,
            warmupMs,
            durationMs,
          );
          addHealth(health[name], run.results);
          const t = statsOf(run);
          acc[name].push(t);
          log(
            `  rep ${r + 1} ${name.padEnd(8)} ${fmt(t.rate, 0).padStart(6)} req/s  p50 ${fmt(t.latency.p50, 3)} ms  ` +
              `p99 ${fmt(t.latency.p99, 3)} ms  CPU/request: ${name} ${fmt(t.cpuUs.responder, 0)} µs, ` +
              `nats-server ${fmt(t.cpuUs.nats, 0)} µs, load generator ${fmt(t.cpuUs.loadgen, 0)} µs`,
          );
        }
      }
      const side = (name: "baseline" | "service"): LoadSide => ({
        reqPerSec: repeated(acc[name].map((t) => t.rate)),
        p50Ms: repeated(acc[name].map((t) => t.latency.p50)),
        p99Ms: repeated(acc[name].map((t) => t.latency.p99)),
        cpuUsPerRequest: {
          responder: repeated(acc[name].map((t) => t.cpuUs.responder)),
          nats: repeated(acc[name].map((t) => t.cpuUs.nats)),
          loadgen: repeated(acc[name].map((t) => t.cpuUs.loadgen)),
        },
        health: health[name],
      });
      return { baseline: side("baseline"), service: side("service") };
    };

    if (doThroughput) {
      log(
        `· throughput: ${preset.reps} × ${preset.durationMs} ms, ${preset.inFlight} in flight, ${pool.size} load generator(s)`,
      );
      const r = await compare(preset.inFlight, preset.warmupMs, preset.durationMs);
      results.scenarios.baselineThroughput = r.baseline;
      results.scenarios.warmThroughput = r.service;
    }
    if (doSequential) {
      log(`· sequential: ${preset.reps} × ${preset.seqDurationMs} ms, 1 in flight`);
      const r = await compare(1, preset.seqWarmupMs, preset.seqDurationMs);
      results.scenarios.baselineSequential = r.baseline;
      results.scenarios.warmSequential = r.service;
    }
    if (service.warnings.length)
      log(`  ! the service logged ${service.warnings.length} warnings, first: ${service.warnings[0]}`);
  } finally {
    await baseline.stop();
    await service.stop();
  }

  if (ctx.profileDir) {
    const files = (await readdir(ctx.profileDir)).filter((f) => f.endsWith(".cpuprofile"));
    // The main thread is thread id 0: CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile
    const main = files.find((f) => f.includes(`.${service.pid}.0.`));
    if (main) {
      const file = path.join(ctx.profileDir, main);
      const { functions } = topFunctions(
        JSON.parse(await readFile(file, "utf8")) as Parameters<typeof topFunctions>[0],
        20,
      );
      results.scenarios.profile = { file: path.relative(REPO, file), top: functions };
    }
  }
}

/** Cold load: fresh service processes, aggregates 0/50/99 commits behind their snapshot. */
async function cold(ctx: Ctx): Promise<void> {
  const { nats, pool, results } = ctx;
  const tenant = "bench-cold";
  const sets = preset.coldReps + 1; // set 0 warms the JIT in every repetition
  log(
    `· cold: seeding ${sets} sets × ${BUCKETS.length} buckets × ${preset.coldPerBucket} aggregates ` +
      `(+${preset.fillerAggregates} filler aggregates × ${preset.fillerCommits} commits)`,
  );
  const nc = await connect({ servers: nats.url, noAsyncTraces: true, name: "bench-seed" });
  let seeded: SeedResult;
  try {
    seeded = await seed(
      nc,
      {
        tenant,
        buckets: BUCKETS,
        sets,
        perBucket: preset.coldPerBucket,
        fillerAggregates: preset.fillerAggregates,
        fillerCommits: preset.fillerCommits,
        stream: DEFAULT_STREAM,
        bucket: DEFAULT_BUCKET,
        recentCommands: 100,
      },
      log,
    );
  } finally {
    await nc.close();
  }
  log(
    `  seeded ${seeded.messages} commits over ${seeded.aggregates} aggregates and ${seeded.snapshots} snapshots ` +
      `in ${fmt(seeded.ms / 1000)} s; the stream holds ${seeded.streamMessages} messages on ${seeded.streamSubjects} subjects`,
  );

  const perRep: Record<string, { p50: number[]; p99: number[]; n: number }> = {};
  for (const b of BUCKETS) perRep[b] = { p50: [], p99: [], n: 0 };
  const warmSame = { p50: [] as number[], p99: [] as number[] };
  const catchUp: number[] = [];
  const health = newHealth();
  let expectedCommits = 0;
  let measuredCommits: number | undefined = 0;
  let warnings = 0;
  let service: ServiceHandle | undefined;
  const retire = async () => {
    if (!service) return;
    warnings += service.warnings.length;
    if (service.warnings.length) {
      log(`  ! the service logged ${service.warnings.length} warnings, first: ${service.warnings[0]}`);
    }
    await service.stop();
    service = undefined;
  };
  try {
    for (let r = 0; r < preset.coldReps; r++) {
      if (!service) {
        service = await startService({
          natsUrl: nats.url,
          ...serviceRun,
          // --profile with only the cold scenario: profile the cold loads' process instead.
          ...(ctx.profileDir && !only.has("throughput") ? { cpuProfile: { dir: ctx.profileDir } } : {}),
        });
        // A new worker first builds its read model from the whole stream (one with its storage
        // kept across a restart only folds what it missed). That is start-up work of its own, not
        // part of loading an aggregate: measured here, and done before the cold loads are.
        catchUp.push(await service.readModelCaughtUp(300_000));
        log(`  read model caught up in ${(catchUp.at(-1)! / 1000).toFixed(1)} s`);
        // Warm the process, not the cache: new aggregates, then the warm-up set (all three paths).
        const jit = ids(preset.jitWarmup).map((a) => ({ aggregateId: a, label: "jit" }));
        addHealth(health, await listRun(pool, SUBMIT, "bench-jit", jit, 32));
        const warmupSet = shuffle(seeded.sets[0]!.map((a) => ({ aggregateId: a.id, label: "jit" })));
        addHealth(health, await listRun(pool, SUBMIT, tenant, warmupSet, 1));
      }

      // Aggregates this process has never seen: its cache is cold for them.
      const set = seeded.sets[r + 1]!;
      const items = shuffle(
        set.map((a) => ({ aggregateId: a.id, label: `behind-${a.behind}`, expectVersion: a.version + 1 })),
      );
      const before = await service.metric("aggregate_rehydrated_commits_total");
      const res = await listRun(pool, SUBMIT, tenant, items, 1);
      const after = await service.metric("aggregate_rehydrated_commits_total");
      addHealth(health, res);
      expectedCommits += set.reduce((n, a) => n + a.behind, 0);
      measuredCommits =
        before === undefined || after === undefined || measuredCommits === undefined
          ? undefined
          : measuredCommits + (after - before);

      const line: string[] = [];
      for (const b of BUCKETS) {
        const s = summarize(samplesOf(res, `behind-${b}`));
        perRep[b]!.p50.push(s.p50);
        perRep[b]!.p99.push(s.p99);
        perRep[b]!.n += s.count;
        line.push(`${b} behind p50 ${fmt(s.p50)} ms p99 ${fmt(s.p99)} ms`);
      }
      // The same aggregates again: now cached, in the same process.
      const again = items.map((i) => ({
        aggregateId: i.aggregateId,
        label: "warm",
        expectVersion: i.expectVersion + 1,
      }));
      const res2 = await listRun(pool, SUBMIT, tenant, again, 1);
      addHealth(health, res2);
      const w = summarize(samplesOf(res2, "warm"));
      warmSame.p50.push(w.p50);
      warmSame.p99.push(w.p99);
      log(`  rep ${r + 1}: ${line.join(" | ")} | cached again p50 ${fmt(w.p50)} ms`);
      if (preset.coldFreshProcessPerRep) await retire();
    }
  } finally {
    await retire();
  }
  const { sets: _sets, ...seedInfo } = seeded;
  const buckets: ColdResult["buckets"] = {};
  for (const b of BUCKETS) {
    buckets[b] = { p50Ms: repeated(perRep[b]!.p50), p99Ms: repeated(perRep[b]!.p99), samples: perRep[b]!.n };
  }
  results.scenarios.cold = {
    seed: seedInfo,
    buckets,
    warmSameProcess: { p50Ms: repeated(warmSame.p50), p99Ms: repeated(warmSame.p99) },
    rehydratedCommits: { expected: expectedCommits, measured: measuredCommits },
    readModelCatchUpMs: catchUp,
    serviceWarnings: warnings,
    health,
  };
}

/** RSS of a service holding N cached aggregates, with a large and a small cache bound. */
async function memory(ctx: Ctx): Promise<void> {
  const { nats, pool, results } = ctx;
  const runs: MemoryRun[] = [];
  for (const cacheSize of preset.memoryCaches) {
    log(`· memory: ${preset.memoryAggregates} aggregates, AGGREGATE_CACHE_SIZE=${cacheSize}`);
    const service = await startService({
      natsUrl: nats.url,
      ...serviceRun,
      env: { AGGREGATE_CACHE_SIZE: String(cacheSize) },
    });
    try {
      // A few commands first so the start RSS includes the warm code paths.
      await listRun(
        pool,
        SUBMIT,
        "bench-mem-warm",
        ids(200).map((a) => ({ aggregateId: a, label: "w" })),
        16,
      );
      const rssStart = await service.rss();
      const items = ids(preset.memoryAggregates).map((a) => ({
        aggregateId: a,
        label: "mem",
        expectVersion: 1,
      }));
      const started = performance.now();
      const res = await listRun(pool, SUBMIT, "bench-mem", items, preset.inFlight, 1_000);
      const seconds = (performance.now() - started) / 1000;
      const health = newHealth();
      addHealth(health, res);
      const cached = await service.metric("aggregate_cached_aggregates");
      const rss = await service.rss();
      const rssRest = await settledRss(service);
      const unbounded = cacheSize >= preset.memoryAggregates;
      const run: MemoryRun = {
        cacheSize,
        aggregates: preset.memoryAggregates,
        cached,
        rssStartBytes: rssStart,
        rssBytes: rss,
        rssRestBytes: rssRest,
        heapUsedBytes: await service.metric("nodejs_heap_size_used_bytes"),
        heapTotalBytes: await service.metric("nodejs_heap_size_total_bytes"),
        externalBytes: await service.metric("nodejs_external_memory_bytes"),
        bytesPerAggregate: unbounded && cached ? (rssRest - rssStart) / cached : NaN,
        commandsPerSec: items.length / seconds,
        health,
      };
      runs.push(run);
      log(`  cached ${cached ?? "?"}  ${memoryNote(run)}`);
    } finally {
      await service.stop();
    }
  }
  results.scenarios.memory = runs;
}

/**
 * RSS once the service is at rest. Right after a burst V8's heap still holds the burst's
 * garbage and the room it grew for it; with allocation stopped, its memory reducer collects and
 * gives pages back within seconds. Samples every second until two in a row differ by under 1 %
 * (at most 20 s). A worker holding its cache between bursts looks like this; the value right
 * after the burst is reported beside it.
 */
async function settledRss(service: ServiceHandle): Promise<number> {
  let last = await service.rss();
  for (let i = 0; i < 20; i++) {
    await sleep(1_000);
    const now = await service.rss();
    if (Math.abs(now - last) < last * 0.01 && i >= 2) return now;
    last = now;
  }
  return last;
}

/** The read model: a page over 100k rows, projection lag under load, projector throughput. */
async function query(ctx: Ctx): Promise<void> {
  const { nats, pool, results } = ctx;
  log(`· query: ${preset.queryRows} rows, ${preset.queryPages} pages, ${preset.queryLoadMs} ms of load`);
  results.scenarios.query = await benchQuery({
    natsUrl: nats.url,
    ...serviceRun,
    rows: preset.queryRows,
    queries: preset.queryPages,
    inFlight: preset.inFlight,
    loadMs: preset.queryLoadMs,
    log,
    load: async (tenant, aggregates, ms) => {
      // CPU is not reported here: the pids only satisfy durationRun.
      const run = await durationRun(
        pool,
        { responder: nats.pid, nats: nats.pid },
        SUBMIT,
        tenant,
        aggregates,
        preset.inFlight,
        300,
        ms,
      );
      return {
        ok: run.results.reduce((n, r) => n + r.ok, 0),
        ms: Math.max(...run.results.map((r) => r.elapsedMs)),
      };
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Targets and the table

function evaluate(results: Results): TargetCheck[] {
  const s = results.scenarios;
  const out: TargetCheck[] = [];
  if (s.warmThroughput && s.baselineThroughput) {
    const w = s.warmThroughput.reqPerSec.median;
    const b = s.baselineThroughput.reqPerSec.median;
    const cw = s.warmThroughput.cpuUsPerRequest.responder.median;
    const cb = s.baselineThroughput.cpuUsPerRequest.responder.median;
    out.push(
      check(
        "warm throughput / baseline",
        w / b,
        { op: "≥", limit: 0.8 },
        "×",
        `${fmt(w, 0)} / ${fmt(b, 0)} req/s; CPU/request ${fmt(cw, 0)} / ${fmt(cb, 0)} µs`,
      ),
    );
  }
  if (s.warmSequential && s.baselineSequential) {
    const w = s.warmSequential.p50Ms.median;
    const b = s.baselineSequential.p50Ms.median;
    out.push(
      check(
        "sequential p50 / baseline p50",
        w / b,
        { op: "≤", limit: 1.25 },
        "×",
        `${fmt(w, 3)} / ${fmt(b, 3)} ms`,
      ),
    );
  }
  if (s.cold) {
    const warm = s.warmSequential?.p50Ms.median ?? s.cold.warmSameProcess.p50Ms.median;
    const against = s.warmSequential ? "warm sequential p50" : "cached-again p50 (same process)";
    for (const b of BUCKETS) {
      const c = s.cold.buckets[b]!.p50Ms.median;
      out.push(
        check(
          `cold p50, ${b} behind / warm p50`,
          c / warm,
          { op: "≤", limit: 5 },
          "×",
          `${fmt(c, 3)} / ${fmt(warm, 3)} ms (${against})`,
        ),
      );
    }
  }
  if (s.sandbox) {
    const a = s.sandbox.applyAllEventsPerSec.median;
    const p = s.sandbox.plainEventsPerSec.median;
    out.push(
      check(
        "sandbox applyAll",
        a,
        { op: "≥", limit: 400_000 },
        "events/s",
        `plain JS ${fmt(p, 0)} events/s; applyAll is ${fmt(a / p, 3)}× of it`,
      ),
      // The same goal as a ratio measured in this run (issue 4: "≥ 400k events/s, i.e. within 10×
      // of plain JS"): the absolute figure moves with how busy the machine is.
      check(
        "sandbox applyAll / plain JS",
        a / p,
        { op: "≥", limit: 0.1 },
        "×",
        `${fmt(a, 0)} / ${fmt(p, 0)} events/s`,
      ),
    );
  }
  if (s.memory) {
    const big = s.memory.find((m) => m.cacheSize >= m.aggregates);
    if (big) {
      // A quick run caches fewer: its RSS is shown but not checked (RSS does not scale linearly).
      const full = big.aggregates >= 100_000;
      out.push(
        check(
          "RSS with 100k cached aggregates, at rest",
          mb(big.rssRestBytes),
          { op: "≤", limit: 300 },
          "MiB",
          full
            ? `${big.cached ?? "?"} cached; ${fmt(mb(big.rssStartBytes), 0)} MiB before, ${fmt(mb(big.rssBytes), 0)} MiB right after the load`
            : `quick run: only ${big.cached ?? "?"} cached, not checked`,
          full,
        ),
      );
    }
    for (const m of s.memory.filter((x) => x.cacheSize < x.aggregates)) {
      out.push(
        check(
          `cache bound ${m.cacheSize} holds`,
          m.cached ?? NaN,
          { op: "≤", limit: m.cacheSize },
          "aggregates",
          `${m.aggregates} aggregates sent, ${m.cached ?? "?"} cached, RSS ${fmt(mb(m.rssBytes), 0)} MiB`,
        ),
      );
    }
  }
  if (s.query) {
    const q = s.query;
    out.push(
      check(
        `query page p50, ${q.rows} rows (SQLite)`,
        q.pageStoreMs.p50,
        { op: "≤", limit: 5 },
        "ms",
        `store call; through NATS p50 ${fmt(q.pageEndpointMs.p50, 3)} ms`,
      ),
    );
    out.push(
      check(
        "projection lag p99 under load",
        q.lagMs.p99,
        { op: "≤", limit: 250 },
        "ms",
        `commit → watch notification, ${q.lagMs.samples} commits at ${fmt(q.commandsPerSec, 0)} cmd/s`,
      ),
    );
    out.push(
      check(
        "projector / command throughput",
        q.projectorCommitsPerSec / q.commandsPerSec,
        { op: "≥", limit: 1 },
        "×",
        `${fmt(q.projectorCommitsPerSec, 0)} commits/s (1 event each) / ${fmt(q.commandsPerSec, 0)} cmd/s`,
      ),
    );
    out.push(
      check(
        "commits without a watch notification",
        q.lagMs.missing,
        { op: "=", limit: 0 },
        "",
        `${q.lagMs.samples} notified`,
      ),
    );
  }
  if (s.sandbox) {
    const f = s.sandbox.failures.count + (s.sandbox.pool?.failures.count ?? 0);
    const last = s.sandbox.pool?.failures.last ?? s.sandbox.failures.last;
    out.push(check("sandbox calls failed", f, { op: "=", limit: 0 }, "", f ? `last: ${last}` : "none"));
  }
  const healthOf: [string, Health | undefined][] = [
    ["baseline throughput", s.baselineThroughput?.health],
    ["warm throughput", s.warmThroughput?.health],
    ["baseline sequential", s.baselineSequential?.health],
    ["warm sequential", s.warmSequential?.health],
    ["cold", s.cold?.health],
    ...(s.memory ?? []).map((m): [string, Health] => [`memory (cache ${m.cacheSize})`, m.health]),
  ];
  for (const [name, h] of healthOf) {
    if (!h) continue;
    out.push(
      check(
        `errors + timeouts: ${name}`,
        errorCount(h) + h.timeouts,
        { op: "=", limit: 0 },
        "",
        `${errorCount(h)} errors ${JSON.stringify(h.errors)}, ${h.timeouts} timeouts`,
      ),
    );
  }
  return out;
}

function render(results: Results): string {
  const s = results.scenarios;
  const rows: string[][] = [];
  const r3 = (x: Repeated, d?: number) => [fmt(x.median, d), range(x, d)];
  const cpu = (side: LoadSide, who: string) =>
    `CPU/request ${who} ${fmt(side.cpuUsPerRequest.responder.median, 0)} µs, nats-server ${fmt(side.cpuUsPerRequest.nats.median, 0)} µs`;
  if (s.baselineThroughput) {
    const b = s.baselineThroughput;
    rows.push([
      "baseline throughput (req/s)",
      ...r3(b.reqPerSec, 0),
      `p50 ${fmt(b.p50Ms.median)} ms, p99 ${fmt(b.p99Ms.median)} ms; ${cpu(b, "baseline")}`,
    ]);
  }
  if (s.warmThroughput) {
    const w = s.warmThroughput;
    rows.push([
      "service warm throughput (req/s)",
      ...r3(w.reqPerSec, 0),
      `p50 ${fmt(w.p50Ms.median)} ms, p99 ${fmt(w.p99Ms.median)} ms; ${cpu(w, "service")}`,
    ]);
  }
  for (const [name, rt] of Object.entries(s.roundTrips ?? {})) {
    const parts = Object.entries(rt.perCommand).map(([k, n]) => `${k} ${fmt(n, 2)}`);
    rows.push([`NATS requests per warm command, ${name}`, fmt(rt.total, 2), "", parts.join(", ")]);
  }
  if (s.baselineSequential) {
    const b = s.baselineSequential;
    rows.push([
      "baseline sequential p50 (ms)",
      ...r3(b.p50Ms, 3),
      `${fmt(b.reqPerSec.median, 0)} req/s; ${cpu(b, "baseline")}`,
    ]);
    rows.push(["baseline sequential p99 (ms)", ...r3(b.p99Ms, 3), ""]);
  }
  if (s.warmSequential) {
    const w = s.warmSequential;
    rows.push([
      "service sequential p50 (ms)",
      ...r3(w.p50Ms, 3),
      `${fmt(w.reqPerSec.median, 0)} req/s; ${cpu(w, "service")}`,
    ]);
    rows.push(["service sequential p99 (ms)", ...r3(w.p99Ms, 3), ""]);
  }
  if (s.cold) {
    for (const b of BUCKETS) {
      const c = s.cold.buckets[b]!;
      rows.push([
        `cold p50, ${b} commits behind (ms)`,
        ...r3(c.p50Ms, 3),
        `p99 ${fmt(c.p99Ms.median, 3)} ms, n=${c.samples}`,
      ]);
    }
    rows.push([
      "cached again, same process p50 (ms)",
      ...r3(s.cold.warmSameProcess.p50Ms, 3),
      `p99 ${fmt(s.cold.warmSameProcess.p99Ms.median, 3)} ms`,
    ]);
    const rc = s.cold.rehydratedCommits;
    rows.push([
      "cold: commits replayed (expected)",
      fmt(rc.measured ?? NaN, 0),
      "",
      `expected ${rc.expected}: snapshots ${rc.measured === rc.expected ? "used" : "NOT all used"}`,
    ]);
    const cu = s.cold.readModelCatchUpMs;
    if (cu.length > 0) {
      rows.push([
        "new worker's read model catch-up (s)",
        fmt(repeated(cu).median / 1000, 1),
        `${fmt(Math.min(...cu) / 1000, 1)}–${fmt(Math.max(...cu) / 1000, 1)}`,
        `before the cold loads, per fresh service; the stream held ${fmt(s.cold.seed.streamMessages, 0)} messages`,
      ]);
    }
  }
  if (s.sandbox) {
    rows.push([
      `applyAll, ${s.sandbox.events} events (events/s)`,
      ...r3(s.sandbox.applyAllEventsPerSec, 0),
      "QuickJS",
    ]);
    rows.push(["plain JS fold (events/s)", ...r3(s.sandbox.plainEventsPerSec, 0), "same apply.js"]);
    rows.push(["sandbox decide (µs/call)", ...r3(s.sandbox.decideMicros, 1), "one deposit"]);
    if (s.sandbox.pool) {
      rows.push([
        "applyAll via worker pool (events/s)",
        ...r3(s.sandbox.pool.applyAllEventsPerSec, 0),
        "createWorkerSandbox, as the service",
      ]);
      rows.push([
        "decide via worker pool (µs/call)",
        ...r3(s.sandbox.pool.decideMicros, 1),
        "QuickJS + thread hop",
      ]);
    }
  }
  for (const m of s.memory ?? []) {
    rows.push([
      `RSS at rest, cache ${m.cacheSize}, ${m.aggregates} sent (MiB)`,
      fmt(mb(m.rssRestBytes), 0),
      "",
      `${m.cached ?? "?"} cached; ${memoryNote(m)}`,
    ]);
  }
  if (s.query) {
    const q = s.query;
    rows.push([
      `query page, ${q.rows} rows, store (ms)`,
      fmt(q.pageStoreMs.p50, 3),
      "",
      `p99 ${fmt(q.pageStoreMs.p99, 3)} ms; rows written through the store API in ${fmt(q.seedMs / 1000)} s`,
    ]);
    rows.push([
      "query page through NATS (ms)",
      fmt(q.pageEndpointMs.p50, 3),
      "",
      `p99 ${fmt(q.pageEndpointMs.p99, 3)} ms`,
    ]);
    rows.push([
      "projection lag p99 (ms)",
      fmt(q.lagMs.p99, 1),
      "",
      `p50 ${fmt(q.lagMs.p50, 1)} ms, max ${fmt(q.lagMs.max, 1)} ms; ${fmt(q.commandsPerSec, 0)} cmd/s`,
    ]);
    rows.push([
      "fresh projector (commits/s)",
      fmt(q.projectorCommitsPerSec, 0),
      "",
      `${q.projectorCommits} commits caught up`,
    ]);
  }
  const measured = table(["measurement", "median", "min–max", "notes"], rows);
  const targets = table(
    ["target", "measured", "goal", "result", "from"],
    results.targets.map((t) => [
      t.name,
      `${fmt(t.value, t.unit === "×" ? 3 : t.unit === "ms" ? undefined : 0)}${t.unit === "×" ? "×" : ""}`,
      t.goal,
      t.verdict,
      t.detail,
    ]),
  );
  return `${measured}\n\n${targets}`;
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const started = new Date();
  const stamp = started.toISOString().replace(/[:.]/g, "-");
  const cpus = os.cpus();
  const results: Results = {
    schema: 1,
    mode,
    startedAt: started.toISOString(),
    machine: {
      cpus: cpus.length,
      cpuModel: cpus[0]?.model,
      memoryBytes: os.totalmem(),
      node: process.version,
      natsServer: natsServerVersion(opts["nats-server"]),
      loadavgStart: os.loadavg(),
    },
    config: {
      ...preset,
      loadgens,
      logLevel: opts["log-level"],
      service: opts.source ? "source (tsx)" : "build (dist/)",
      scenarios: [...only],
      profile: opts.profile,
    },
    scenarios: {},
    targets: [],
  };
  log(
    `bench (${mode}): ${[...only].join(", ")}; ${loadgens} load generator(s); load average ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" ")}`,
  );
  if (os.loadavg()[0]! > cpus.length * 0.5) {
    log(
      `  ! the machine is busy (load average ${os.loadavg()[0]!.toFixed(2)} on ${cpus.length} CPUs): expect noisy numbers`,
    );
  }

  if (only.has("sandbox")) {
    log(`· sandbox applyAll: ${preset.sandboxReps} × ${preset.sandboxMs} ms`);
    results.scenarios.sandbox = await benchSandbox(REPO, {
      events: 1_000,
      reps: preset.sandboxReps,
      msPerRep: preset.sandboxMs,
    });
    const sb = results.scenarios.sandbox;
    log(
      `  applyAll ${fmt(sb.applyAllEventsPerSec.median, 0)} events/s, plain ${fmt(sb.plainEventsPerSec.median, 0)} events/s, ` +
        `decide ${fmt(sb.decideMicros.median, 1)} µs; via the worker pool: applyAll ` +
        `${fmt(sb.pool?.applyAllEventsPerSec.median ?? NaN, 0)} events/s, decide ${fmt(sb.pool?.decideMicros.median ?? NaN, 1)} µs`,
    );
  }

  const needsNats =
    only.has("throughput") ||
    only.has("sequential") ||
    only.has("cold") ||
    only.has("memory") ||
    only.has("query");
  if (needsNats) {
    if (!opts.source) {
      log("· building the service (dist/), as the container runs it; --source runs the TypeScript under tsx");
      // --no-build: run dist/ as it is (e.g. instrumented by hand for an experiment).
      if (!opts["no-build"]) await buildService();
    }
    const nats = await startNatsServer({ binary: opts["nats-server"] });
    let pool: LoadGenPool | undefined;
    try {
      log(`· nats-server at ${nats.url} (store ${nats.storeDir})`);
      const nc = await connect({ servers: nats.url, name: "bench-setup" });
      await ensureEventStream(nc, DEFAULT_STREAM);
      await openSnapshotBucket(nc, DEFAULT_BUCKET);
      await nc.close();
      pool = await LoadGenPool.start(nats.url, loadgens);
      let profileDir: string | undefined;
      if (opts.profile) {
        profileDir = path.join(RESULTS, "profiles", stamp);
        await mkdir(profileDir, { recursive: true });
      }
      const ctx: Ctx = { nats, pool, results, profileDir };
      if (only.has("throughput") || only.has("sequential")) {
        await throughputAndSequential(ctx, only.has("throughput"), only.has("sequential"));
      }
      if (only.has("cold")) await cold(ctx);
      if (only.has("memory")) await memory(ctx);
      if (only.has("query")) await query(ctx);
    } finally {
      await pool?.close();
      await nats.stop();
    }
  }

  results.targets = evaluate(results);
  const finished = new Date();
  results.finishedAt = finished.toISOString();
  results.durationSec = (finished.getTime() - started.getTime()) / 1000;
  results.machine["loadavgEnd"] = os.loadavg();

  await mkdir(RESULTS, { recursive: true });
  const json = `${JSON.stringify(results, null, 2)}\n`;
  const file = path.join(RESULTS, `${stamp}.json`);
  await writeFile(file, json);
  await writeFile(path.join(RESULTS, "latest.json"), json);

  console.log(
    `\nbench ${mode} — ${started.toISOString()} — ${fmt(results.durationSec, 0)} s — ${cpus.length} CPUs, node ${process.version}, ${String(results.machine["natsServer"])}`,
  );
  console.log(
    `load average at start ${(results.machine["loadavgStart"] as number[]).map((x) => x.toFixed(2)).join(" ")}, at end ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" ")}\n`,
  );
  console.log(render(results));
  if (results.scenarios.profile) {
    console.log(`\nservice CPU profile (main thread, self time): ${results.scenarios.profile.file}`);
    for (const e of results.scenarios.profile.top.slice(0, 12)) {
      console.log(`  ${(e.share * 100).toFixed(1).padStart(5)}%  ${e.name}  ${e.where}`);
    }
  }
  console.log(
    `\nwritten: ${path.relative(process.cwd(), file)} and ${path.relative(process.cwd(), path.join(RESULTS, "latest.json"))}`,
  );
}

try {
  await main();
} catch (err) {
  log(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
}

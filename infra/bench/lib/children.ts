/**
 * Child processes of the bench: load generators and the baseline (forked TypeScript with IPC),
 * and the real service (`shared/main.ts` as its own Node process, exactly as `npm start` runs it).
 */
import { execFileSync, fork, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { FromChild, RunResult, RunSpec, ToChild } from "./protocol.ts";

export const REPO = path.resolve(import.meta.dirname, "../../..");
const BENCH = path.resolve(import.meta.dirname, "..");

/** Forks a TypeScript file of this folder under tsx, with an IPC channel. */
export function forkTs(
  file: string,
  args: readonly string[] = [],
  nodeArgs: readonly string[] = [],
): ChildProcess {
  return fork(path.join(BENCH, file), [...args], {
    cwd: REPO,
    execArgv: ["--import", "tsx", ...nodeArgs],
    serialization: "advanced",
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
}

function nextMessage(child: ChildProcess, what: string, timeoutMs: number): Promise<FromChild> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => finish(new Error(`${what}: no message within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onMessage = (m: FromChild) => finish(undefined, m);
    const onExit = (code: number | null, signal: string | null) =>
      finish(new Error(`${what} exited (code ${code}, signal ${signal})`));
    const finish = (err: Error | undefined, m?: FromChild) => {
      clearTimeout(timer);
      child.off("message", onMessage);
      child.off("exit", onExit);
      if (err) reject(err);
      else resolve(m!);
    };
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}

async function stopChild(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

const CLOCK_TICKS_PER_SEC = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU time (user + system) a process has used so far, in ms, from /proc/<pid>/stat. */
export async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  // The command name is in parentheses and may contain spaces: count fields after it.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1000) / CLOCK_TICKS_PER_SEC;
}

/** N load generator processes. */
export class LoadGenPool {
  readonly #children: ChildProcess[];
  #nextId = 1;

  private constructor(children: ChildProcess[]) {
    this.#children = children;
  }

  static async start(natsUrl: string, processes: number): Promise<LoadGenPool> {
    const children = Array.from({ length: processes }, () => forkTs("loadgen.ts"));
    const pool = new LoadGenPool(children);
    try {
      await Promise.all(
        children.map(async (c, i) => {
          const reply = nextMessage(c, `load generator ${i}`, 30_000);
          c.send({ type: "connect", natsUrl } satisfies ToChild);
          const m = await reply;
          if (m.type !== "ready") throw new Error(`load generator ${i}: ${JSON.stringify(m)}`);
        }),
      );
    } catch (err) {
      await pool.close();
      throw err;
    }
    return pool;
  }

  get size(): number {
    return this.#children.length;
  }

  get pids(): number[] {
    return this.#children.map((c) => c.pid ?? -1);
  }

  /** Runs one spec per process (all at once) and returns their results in order. */
  async run(specs: readonly RunSpec[], timeoutMs: number): Promise<RunResult[]> {
    if (specs.length > this.#children.length) throw new Error("more specs than load generators");
    return Promise.all(
      specs.map(async (spec, i) => {
        const child = this.#children[i]!;
        const id = this.#nextId++;
        const reply = nextMessage(child, `load generator ${i}`, timeoutMs);
        child.send({ type: "run", id, spec } satisfies ToChild);
        const m = await reply;
        if (m.type === "result" && m.id === id) return m.result;
        throw new Error(`load generator ${i}: ${m.type === "error" ? m.message : JSON.stringify(m)}`);
      }),
    );
  }

  async close(): Promise<void> {
    await Promise.all(
      this.#children.map(async (c) => {
        if (c.connected) c.send({ type: "exit" } satisfies ToChild);
        const exited = c.exitCode !== null ? Promise.resolve() : once(c, "exit").then(() => undefined);
        await Promise.race([exited, sleep(5_000).then(() => stopChild(c, 1_000))]);
      }),
    );
  }
}

export interface ChildHandle {
  readonly pid: number;
  stop(): Promise<void>;
}

/** Starts the baseline service (baseline.ts) and waits until it listens. */
export async function startBaseline(natsUrl: string, subject: string): Promise<ChildHandle> {
  const child = forkTs("baseline.ts", [natsUrl, subject]);
  const m = await nextMessage(child, "baseline", 30_000).catch(async (err: unknown) => {
    await stopChild(child, 1_000);
    throw err;
  });
  if (m.type !== "ready") throw new Error(`baseline: ${JSON.stringify(m)}`);
  return { pid: child.pid ?? -1, stop: () => stopChild(child) };
}

/** A free TCP port on 127.0.0.1 (there is a small window before the service binds it). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  server.close();
  await once(server, "close");
  return port;
}

export interface ServiceOptions {
  readonly natsUrl: string;
  /** Extra AGGREGATE_* settings. */
  readonly env?: Record<string, string>;
  readonly logLevel?: string;
  /**
   * When set, the service runs with `--cpu-prof` and writes its profiles into this folder on exit
   * (one per thread: the main thread, tsx's loader thread, sandbox workers if any).
   */
  readonly cpuProfile?: { readonly dir: string };
  /** More Node options for the service process, e.g. `--heapsnapshot-signal=SIGUSR2`. */
  readonly nodeArgs?: readonly string[];
  /**
   * Run the TypeScript sources under tsx (`npm start`) instead of the compiled build
   * (`node dist/shared/main.js`, what the container runs; see `buildService`).
   */
  readonly fromSource?: boolean;
}

/**
 * Compiles the service (`npm run build` → dist/), as the container image does. The bench runs
 * that build by default: it is what production runs, and tsx's loader (in the main thread and
 * in every sandbox thread) adds about 65 MB of RSS and some CPU that no deployment pays.
 */
export async function buildService(): Promise<void> {
  const tsc = path.join(REPO, "node_modules", "typescript", "bin", "tsc");
  const child = spawn(process.execPath, [tsc, "-p", "tsconfig.build.json"], {
    cwd: REPO,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const [code] = (await once(child, "exit")) as [number | null];
  if (code !== 0) throw new Error(`npm run build failed (exit ${code}):\n${output}`);
}

export interface ServiceHandle extends ChildHandle {
  readonly httpPort: number;
  /** Resident set size of the service process, bytes (from /proc/<pid>/status). */
  rss(): Promise<number>;
  /** A metric's value from /metrics (summed over label sets); undefined when absent. */
  metric(name: string): Promise<number | undefined>;
  /** Log lines at warn or above that the service printed. */
  readonly warnings: string[];
  /**
   * Waits until the read model of every type has folded every commit of the stream (`/ready`'s
   * `projections`: `pending` 0 after a delivery); resolves to the milliseconds waited.
   */
  readModelCaughtUp(timeoutMs: number): Promise<number>;
}

/**
 * Starts the real service (`node --import tsx shared/main.ts`), as its own process. The bench
 * picks the HTTP port itself: the "ready" log line is at info level, which AGGREGATE_LOG_LEVEL=warn
 * hides, so readiness is `GET /ready` answering 200 (or the ready line, when the level shows it).
 */
export async function startService(options: ServiceOptions): Promise<ServiceHandle> {
  const storage = await mkdtemp(path.join(tmpdir(), "aggregate-bench-"));
  const httpPort = await freePort();
  const nodeArgs = [...(options.fromSource ? ["--import", "tsx"] : []), ...(options.nodeArgs ?? [])];
  if (options.cpuProfile) {
    nodeArgs.push("--cpu-prof", "--cpu-prof-dir", options.cpuProfile.dir);
  }
  const entry = options.fromSource ? "shared/main.ts" : "dist/shared/main.js";
  const child = spawn(process.execPath, [...nodeArgs, entry], {
    cwd: REPO,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      AGGREGATE_NATS_URL: options.natsUrl,
      AGGREGATE_HTTP_PORT: String(httpPort),
      AGGREGATE_LOG_LEVEL: options.logLevel ?? "warn",
      AGGREGATE_STORAGE_PATH: storage,
      AGGREGATE_FUNCTIONS_DIR: path.join(REPO, "functions"),
      ...options.env,
    },
  });
  const warnings: string[] = [];
  let readyLine = false;
  let stderr = "";
  let pending = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    pending += chunk;
    let nl;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      try {
        const rec = JSON.parse(line) as { level?: number; msg?: string };
        if (rec.msg === "ready") readyLine = true;
        if ((rec.level ?? 0) >= 40 && warnings.length < 1000) warnings.push(line);
      } catch {
        if (warnings.length < 1000) warnings.push(line);
      }
    }
  });
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-4000);
  });

  const stop = async () => {
    await stopChild(child, 15_000);
    await rm(storage, { recursive: true, force: true });
  };
  const base = `http://127.0.0.1:${httpPort}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await rm(storage, { recursive: true, force: true });
      throw new Error(
        `service exited during start-up (code ${child.exitCode}): ${stderr.trim()} ${warnings.join("\n")}`,
      );
    }
    if (readyLine) break;
    const ok = await fetch(`${base}/ready`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`service not ready within 60 s: ${stderr.trim()}`);
    }
    await sleep(100);
  }

  return {
    pid: child.pid ?? -1,
    httpPort,
    warnings,
    stop,
    async rss() {
      const status = await readFile(`/proc/${child.pid}/status`, "utf8");
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
      if (!m) throw new Error("VmRSS not found");
      return Number(m[1]) * 1024;
    },
    async readModelCaughtUp(timeoutMs: number) {
      const started = performance.now();
      const until = Date.now() + timeoutMs;
      for (;;) {
        const body = (await (await fetch(`${base}/ready`)).json()) as {
          projections?: Array<{ projecting: boolean; pending: number; checkpoint: number }>;
        };
        const all = body.projections ?? [];
        if (all.every((p) => p.projecting && p.pending === 0 && p.checkpoint > 0)) {
          return performance.now() - started;
        }
        if (Date.now() > until) throw new Error(`read model not caught up within ${timeoutMs} ms`);
        await sleep(200);
      }
    },
    async metric(name: string) {
      const text = await (await fetch(`${base}/metrics`)).text();
      let sum: number | undefined;
      for (const line of text.split("\n")) {
        if (line.startsWith("#")) continue;
        const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
        if (m && m[1] === name) sum = (sum ?? 0) + Number(m[3]);
      }
      return sum;
    },
  };
}

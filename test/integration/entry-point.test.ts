/**
 * The real entry point (`npm start` = `node --import tsx shared/main.ts`) as a child process: with no NATS URL
 * it runs its own nats-server, logs the ready line, serves commands and health, and on SIGTERM
 * exits 0 leaving no nats-server behind. Broken functions stop it with a non-zero exit and a
 * message that names the culprit.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { connect } from "@nats-io/transport-node";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { request } from "../support/service.ts";
import { GET, SUBMIT, expectOk, type GetBody } from "../support/service-replies.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");

interface Running {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
  /** Resolves with the first parsed stdout JSON line that `match` accepts. */
  line(
    match: (line: Record<string, unknown>) => boolean,
    timeoutMs: number,
  ): Promise<Record<string, unknown>>;
}

const started: ChildProcess[] = [];
const temps: string[] = [];

afterEach(() => {
  // A failed test must not leave its service (and its nats-server) running.
  for (const child of started.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
});
afterAll(async () => {
  for (const dir of temps.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

/** Starts the entry point with a clean AGGREGATE_* environment plus `env`. */
function startEntryPoint(env: Record<string, string>): Running {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("AGGREGATE_")));
  const child = spawn(process.execPath, ["--import", "tsx", "shared/main.ts"], {
    cwd: ROOT,
    env: { ...base, AGGREGATE_HTTP_PORT: "0", AGGREGATE_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  started.push(child);
  let stdout = "";
  let stderr = "";
  const lines: Array<Record<string, unknown>> = [];
  const waiters: Array<{
    match: (l: Record<string, unknown>) => boolean;
    resolve: (l: Record<string, unknown>) => void;
  }> = [];
  let pending = "";
  child.stdout.setEncoding("utf8");
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => (stderr += chunk));
  child.stdout.on("data", (chunk: string) => {
    stdout += chunk;
    pending += chunk;
    let nl;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const text = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(text) as Record<string, unknown>;
      } catch {
        continue;
      }
      lines.push(parsed);
      for (const w of waiters.splice(0)) {
        if (w.match(parsed)) w.resolve(parsed);
        else waiters.push(w);
      }
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const output = () => `--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`;
  return {
    child,
    exited,
    output,
    line(match, timeoutMs) {
      const seen = lines.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no matching log line within ${timeoutMs} ms\n${output()}`)),
          timeoutMs,
        );
        waiters.push({
          match,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
        void exited.then(({ code, signal }) => {
          clearTimeout(timer);
          reject(
            new Error(`the entry point exited (code ${code}, signal ${signal}) before the line\n${output()}`),
          );
        });
      });
    },
  };
}

/** Waits for exit, or fails after `timeoutMs`. */
async function exitWithin(running: Running, timeoutMs: number) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const result = await Promise.race([
    running.exited,
    new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (result === "timeout")
    expect.fail(`the entry point did not exit within ${timeoutMs} ms\n${running.output()}`);
  return result;
}

/** Pids of nats-server processes whose command line mentions `dir` (the embedded server's store). */
async function natsServersUsing(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    const args = cmdline.split("\0");
    if (args.some((a) => path.basename(a) === "nats-server") && args.some((a) => a.startsWith(dir))) {
      // A zombie has an empty cmdline, so anything found here is alive.
      pids.push(Number(entry));
    }
  }
  return pids;
}

describe("entry point", () => {
  it("starts its own nats-server, serves a command and health, and exits 0 on SIGTERM", async () => {
    const storage = await tempDir("aggregate-entry-");
    const running = startEntryPoint({ AGGREGATE_STORAGE_PATH: storage });
    const ready = await running.line((l) => l["msg"] === "ready", 30_000);
    expect(ready["types"]).toEqual(["bank-account"]);
    expect(typeof ready["nats_url"]).toBe("string");
    const httpPort = ready["http_port"];
    expect(typeof httpPort).toBe("number");
    expect(httpPort).toBeGreaterThan(0);
    const natsUrl = ready["nats_url"] as string;
    expect(natsUrl).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);

    const health = await fetch(`http://127.0.0.1:${httpPort as number}/health`);
    expect(health.status).toBe(200);
    expect(((await health.json()) as Record<string, unknown>)["status"]).toBe("ok");
    expect((await fetch(`http://127.0.0.1:${httpPort as number}/ready`)).status).toBe(200);

    const nc = await connect({ servers: natsUrl, noAsyncTraces: true });
    try {
      const aggregateId = randomUUID();
      const body = expectOk(
        await request(nc, SUBMIT, {
          aggregate_id: aggregateId,
          payload: { type: "open", initial_balance: 42 },
        }),
      );
      expect(body.version).toBe(1);
      const state = expectOk<GetBody>(await request(nc, GET, { aggregate_id: aggregateId }));
      expect(state.state).toEqual({ balance: 42, status: "open" });
    } finally {
      await nc.close();
    }

    // The embedded server keeps its store under the storage path.
    const servers = await natsServersUsing(storage);
    expect(servers).toHaveLength(1);

    running.child.kill("SIGTERM");
    const exit = await exitWithin(running, 15_000);
    expect(exit, running.output()).toEqual({ code: 0, signal: null });
    expect(await natsServersUsing(storage)).toEqual([]);
    await expect(connect({ servers: natsUrl, reconnect: false, timeout: 1_000 })).rejects.toThrow();
  });

  it("exits non-zero naming the manifest when it names a missing program", async () => {
    const storage = await tempDir("aggregate-entry-");
    const functions = await tempDir("aggregate-functions-");
    await mkdir(path.join(functions, "bank-account"));
    const manifest = path.join(functions, "bank-account", "manifest.yaml");
    await writeFile(manifest, "decide: missing.js\napply: missing.js\n");
    const running = startEntryPoint({ AGGREGATE_STORAGE_PATH: storage, AGGREGATE_FUNCTIONS_DIR: functions });
    const exit = await exitWithin(running, 20_000);
    expect(exit.code, running.output()).not.toBe(0);
    expect(exit.code, running.output()).not.toBeNull();
    expect(running.output()).toContain(manifest);
    // Start-up failed after the embedded server started: it must be gone as well.
    expect(await natsServersUsing(storage)).toEqual([]);
  });

  it("exits non-zero with a clear message when the functions directory is empty", async () => {
    const storage = await tempDir("aggregate-entry-");
    const functions = await tempDir("aggregate-functions-");
    const running = startEntryPoint({ AGGREGATE_STORAGE_PATH: storage, AGGREGATE_FUNCTIONS_DIR: functions });
    const exit = await exitWithin(running, 20_000);
    expect(exit.code, running.output()).not.toBe(0);
    expect(exit.code, running.output()).not.toBeNull();
    const fatal = running.output();
    expect(fatal).toContain(functions);
    expect(fatal).toMatch(/no aggregate type|empty|no .*functions/i);
    expect(await natsServersUsing(storage)).toEqual([]);
  });
});

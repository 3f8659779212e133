/**
 * Starts a local nats-server with JetStream: the embedded default of `npm start` and the server
 * every integration test run uses. The server picks its own port (`-p -1`) and reports it in a
 * ports file, so two runs never fight over a port.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

export interface NatsServerOptions {
  /** JetStream store directory; a temp dir (removed on stop) when absent. */
  readonly storeDir?: string;
  /** Binary to run; `nats-server` on PATH by default. */
  readonly binary?: string;
  /** Port; -1 (default) lets the server choose. */
  readonly port?: number;
  /** Extra command-line arguments, e.g. `["-c", "server.conf"]`. */
  readonly args?: readonly string[];
  /** How long to wait for the server to report its ports. */
  readonly startTimeoutMs?: number;
}

export interface NatsServer extends AsyncDisposable {
  /** `nats://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  readonly storeDir: string;
  readonly pid: number;
  /** Stops the server (SIGTERM, then SIGKILL after a grace period). */
  stop(): Promise<void>;
}

export class NatsServerError extends Error {
  override readonly name = "NatsServerError";
}

export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  const binary = options.binary ?? "nats-server";
  const ownStore = options.storeDir === undefined;
  const storeDir = options.storeDir ?? (await mkdtemp(path.join(tmpdir(), "aggregate-nats-")));
  await mkdir(storeDir, { recursive: true });
  const portsDir = await mkdtemp(path.join(tmpdir(), "aggregate-nats-ports-"));
  const args = [
    "-a",
    "127.0.0.1",
    "-p",
    String(options.port ?? -1),
    "-js",
    "-sd",
    storeDir,
    "--ports_file_dir",
    portsDir,
    ...(options.args ?? []),
  ];

  let child: ChildProcess;
  try {
    child = spawn(binary, args, { stdio: ["ignore", "ignore", "pipe"] });
  } catch (err) {
    throw new NatsServerError(`could not start ${binary}: ${String(err)}`, { cause: err });
  }
  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once("exit", (code) => resolve(code));
    child.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") {
        reject(
          new NatsServerError(
            `${binary} was not found on PATH. Install it (Debian/Ubuntu: apt-get install -y nats-server; ` +
              `or see https://docs.nats.io/running-a-nats-service/introduction/installation), ` +
              `or set AGGREGATE_NATS_URL to use a running server.`,
          ),
        );
      } else {
        reject(new NatsServerError(`could not start ${binary}: ${err.message}`, { cause: err }));
      }
    });
  });

  const cleanup = async () => {
    await rm(portsDir, { recursive: true, force: true });
    if (ownStore) await rm(storeDir, { recursive: true, force: true });
  };

  let port: number;
  const waiting = new AbortController();
  try {
    port = await Promise.race([
      waitForPort(portsDir, options.startTimeoutMs ?? 10_000, waiting.signal),
      exited.then((code) => {
        throw new NatsServerError(`${binary} exited with code ${code} before it was ready: ${stderr.trim()}`);
      }),
    ]);
  } catch (err) {
    child.kill("SIGKILL");
    await cleanup();
    throw err;
  } finally {
    waiting.abort();
  }

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
        await exited.catch(() => undefined);
        clearTimeout(timer);
      }
      await cleanup();
    })();
    return stopped;
  };

  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    pid: child.pid ?? -1,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

async function waitForPort(portsDir: string, timeoutMs: number, signal: AbortSignal): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !signal.aborted) {
    const files = await readdir(portsDir).catch(() => [] as string[]);
    const file = files.find((f) => f.endsWith(".ports"));
    if (file) {
      try {
        const ports = JSON.parse(await readFile(path.join(portsDir, file), "utf8")) as { nats?: string[] };
        const url = ports.nats?.[0];
        const port = url ? Number(new URL(url).port) : NaN;
        if (Number.isInteger(port) && port > 0) return port;
      } catch {
        // the file may be half-written; read it again on the next tick
      }
    }
    await sleep(20);
  }
  throw new NatsServerError(`nats-server did not report its port within ${timeoutMs} ms`);
}

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { headers as natsHeaders, type Msg, type NatsConnection } from "@nats-io/nats-core";
import { pino } from "pino";
import { startApp, type App } from "../../shared/app/index.ts";
import { loadConfig } from "../../shared/config/index.ts";

export const FUNCTIONS_DIR = path.resolve(import.meta.dirname, "../../functions");

export interface TestApp extends App {
  /** Every log line the app wrote, parsed. */
  readonly logs: Array<Record<string, unknown>>;
}

/**
 * Starts the real service in this process against a test nats-server, with the given
 * `AGGREGATE_*` environment on top of test defaults (any free HTTP port, logs kept in memory,
 * no read model unless `AGGREGATE_QUERY` says so).
 */
export async function startTestApp(natsUrl: string, env: Record<string, string> = {}): Promise<TestApp> {
  const storage = await mkdtemp(path.join(tmpdir(), "aggregate-test-"));
  const config = loadConfig({
    env: {
      AGGREGATE_NATS_URL: natsUrl,
      AGGREGATE_HTTP_PORT: "0",
      AGGREGATE_FUNCTIONS_DIR: FUNCTIONS_DIR,
      AGGREGATE_STORAGE_PATH: storage,
      AGGREGATE_LOG_LEVEL: "debug",
      // The read model doubles the work per command; the files that test it turn it on.
      AGGREGATE_QUERY: "false",
      ...env,
    },
  });
  const logs: Array<Record<string, unknown>> = [];
  const log = pino(
    { level: config.logLevel },
    {
      write(line: string) {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      },
    },
  );
  const app = await startApp({ config, log, version: "0.0.0-test" });
  const stop = async () => {
    await app.stop();
    await rm(storage, { recursive: true, force: true });
  };
  return Object.assign(Object.create(app) as App, app, { logs, stop, [Symbol.asyncDispose]: stop });
}

export interface Reply {
  /** The numeric service error code, undefined on success. */
  readonly status: number | undefined;
  readonly errorHeader: string | undefined;
  readonly body: Record<string, unknown>;
  readonly msg: Msg;
}

/** Sends a request the way a gateway does and decodes the reply. */
export async function request(
  nc: NatsConnection,
  subject: string,
  body: unknown,
  headers: Record<string, string | string[]> = {},
  timeout = 10_000,
): Promise<Reply> {
  const h = natsHeaders();
  for (const [k, v] of Object.entries(headers)) for (const value of [v].flat()) h.append(k, value);
  const data = body instanceof Uint8Array ? body : typeof body === "string" ? body : JSON.stringify(body);
  const msg = await nc.request(subject, data, { timeout, headers: h });
  const code = msg.headers?.get("Nats-Service-Error-Code");
  return {
    status: code ? Number(code) : undefined,
    errorHeader: msg.headers?.get("Nats-Service-Error") || undefined,
    body: msg.data.length ? msg.json<Record<string, unknown>>() : {},
    msg,
  };
}

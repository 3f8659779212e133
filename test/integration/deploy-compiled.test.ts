/**
 * What the container runs: the tsc output of `tsconfig.build.json`, started with plain node (no
 * tsx), serves a command and exits 0 on SIGTERM.
 */
import { execFile, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import path from "node:path";
import { once } from "node:events";
import { promisify } from "node:util";
import { afterAll, beforeAll, expect, it } from "vitest";
import { connect } from "@nats-io/transport-node";
import { startNatsServer, type NatsServer } from "../../shared/nats-server/index.ts";
import { request } from "../support/service.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
let server: NatsServer;
let outDir: string;

beforeAll(async () => {
  server = await startNatsServer();
  // Inside the repository, so that node resolves node_modules as it does in the image's /app.
  await mkdir(path.join(ROOT, ".data"), { recursive: true });
  outDir = await mkdtemp(path.join(ROOT, ".data", "compiled-"));
  // --noCheck: the emit is what matters here (typecheck runs separately); it halves the time.
  await promisify(execFile)(
    process.execPath,
    [
      path.join(ROOT, "node_modules/typescript/bin/tsc"),
      "-p",
      "tsconfig.build.json",
      "--noCheck",
      "--outDir",
      outDir,
    ],
    { cwd: ROOT },
  );
}, 120_000);

afterAll(async () => {
  await server?.stop();
  if (outDir) await rm(outDir, { recursive: true, force: true });
});

it("runs dist/shared/main.js with plain node, serves a command, and exits 0 on SIGTERM", async () => {
  const child = spawn(process.execPath, ["--enable-source-maps", path.join(outDir, "shared/main.js")], {
    cwd: outDir,
    env: {
      PATH: process.env["PATH"],
      NODE_ENV: "production",
      AGGREGATE_NATS_URL: server.url,
      AGGREGATE_HTTP_PORT: "0",
      AGGREGATE_FUNCTIONS_DIR: path.join(ROOT, "functions"),
      AGGREGATE_STORAGE_PATH: path.join(outDir, "data"),
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: Array<Record<string, unknown>> = [];
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    let buffer = "";
    child.stdout.on("data", (c: Buffer) => {
      buffer += c.toString();
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = JSON.parse(buffer.slice(0, nl)) as Record<string, unknown>;
        buffer = buffer.slice(nl + 1);
        lines.push(line);
        if (line["msg"] === "ready") resolve(line);
      }
    });
    child.once("exit", (code) => reject(new Error(`exited ${code} before ready: ${stderr}`)));
  });
  const exited = once(child, "exit");
  const line = await ready;
  expect(line["types"]).toEqual(["bank-account"]);

  const health = await fetch(`http://127.0.0.1:${String(line["http_port"])}/health`);
  expect(health.status).toBe(200);
  const nc = await connect({ servers: server.url });
  try {
    const reply = await request(nc, "aggregate.bank-account.submit", {
      payload: { type: "open", initial_balance: 5 },
    });
    expect(reply.status).toBeUndefined();
    expect(reply.body).toMatchObject({ version: 1 });
  } finally {
    await nc.close();
  }

  child.kill("SIGTERM");
  const [code, signal] = (await exited) as [number | null, string | null];
  expect({ code, signal, stderr }).toEqual({ code: 0, signal: null, stderr: "" });
  expect(lines.some((l) => l["msg"] === "shutting down")).toBe(true);
}, 60_000);

/** The README's walkthrough is a file; this runs it against the service, as a newcomer would. */
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { startTestNats } from "../support/nats.ts";
import { startTestApp, type TestApp } from "../support/service.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
let server: NatsServer;
let app: TestApp;

beforeAll(async () => {
  server = await startTestNats();
  app = await startTestApp(server.url);
});
afterAll(async () => {
  await app?.stop();
  await server?.stop();
});

it("runs the README walkthrough: open, deposit, a refused withdrawal, then the state", async () => {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--import", "tsx", "infra/examples/walkthrough.ts"],
    {
      cwd: ROOT,
      env: { ...process.env, NATS_URL: server.url },
      timeout: 30_000,
    },
  );
  const result = JSON.parse(stdout.trim()) as {
    opened: number;
    refused: unknown;
    state: { tenant_id: string; version: number; state: unknown };
  };
  expect(result.opened).toBe(1);
  expect(result.refused).toEqual({ error: { code: "DecideError", message: "insufficient funds" } });
  expect(result.state).toMatchObject({ tenant_id: "acme", aggregate_type: "bank-account", version: 2 });
  expect(result.state.state).toEqual({ balance: 150, status: "open" });
});

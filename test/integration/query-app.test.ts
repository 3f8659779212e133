/** The query endpoint as the service runs it: wired into the app, fed by its own commands. */
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { request, startTestApp, type TestApp } from "../support/service.ts";

let server: NatsServer;
let nc: NatsConnection;
let app: TestApp;

beforeAll(async () => {
  server = await startTestNats();
  app = await startTestApp(server.url, { AGGREGATE_QUERY: "true" });
  nc = await connectTest(server);
});
afterAll(async () => {
  await nc?.close();
  await app?.stop();
  await server?.stop();
});

it("answers aggregate.<type>.query with the caller's tenant's matches, reading its own writes", async () => {
  const submit = (tenant: string, amount: number) =>
    request(
      nc,
      "aggregate.bank-account.submit",
      { payload: { type: "deposit", amount } },
      { "x-tenant-id": tenant },
    );
  await submit("tenant-a", 10);
  const rich = await submit("tenant-a", 100);
  const other = await submit("tenant-b", 500);
  const query = (tenant: string, seq: number) =>
    request(
      nc,
      "aggregate.bank-account.query",
      { filter: "balance > 50", min_stream_seq: seq },
      { "x-tenant-id": tenant },
    );
  const a = await query(
    "tenant-a",
    Math.max(rich.body["stream_seq"] as number, other.body["stream_seq"] as number),
  );
  expect(a.status).toBeUndefined();
  expect(a.body["items"]).toEqual([
    { aggregate_id: rich.body["aggregate_id"], version: 1, state: { balance: 100, status: "open" } },
  ]);
  const b = await query("tenant-b", other.body["stream_seq"] as number);
  expect((b.body["items"] as Array<{ aggregate_id: string }>).map((i) => i.aggregate_id)).toEqual([
    other.body["aggregate_id"],
  ]);
  const bad = await request(
    nc,
    "aggregate.bank-account.query",
    { filter: "balance >" },
    { "x-tenant-id": "tenant-a" },
  );
  expect(bad.status).toBe(400);
  const ready = await fetch(`http://127.0.0.1:${app.httpPort}/ready`);
  expect(await ready.json()).toHaveProperty("projections");
  const metrics = await (await fetch(`http://127.0.0.1:${app.httpPort}/metrics`)).text();
  expect(metrics).toContain("aggregate_projection_pending_commits");
});

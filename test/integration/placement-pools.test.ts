/**
 * Tenant pools on a real nats-server: two workers in pools `a` and `b` both subscribe
 * `aggregate.bank-account.submit` (each pool in its own queue group), and the placement table in
 * the TENANT_PLACEMENT bucket decides which one answers. Changes to the bucket are followed live.
 * Which worker answered is read from its own counters (`ok`, `not_owner`), the numbers
 * `$SRV.STATS` publishes.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { Svcm } from "@nats-io/services";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminRequest } from "../../shared/admin/index.ts";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { loadPlacementTable, resolvePool } from "../../shared/placement/index.ts";
import {
  openPlacementBucket,
  openPlacementStore,
  type PlacementStore,
} from "../../shared/placement-store/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { request, startTestApp, type TestApp } from "../support/service.ts";
import { SUBMIT } from "../support/service-replies.ts";

const TOKEN = "admin-token-0123456789";
const TYPE = "bank-account";

let server: NatsServer;
let nc: NatsConnection;
let store: PlacementStore;
let a: TestApp;
let b: TestApp;

beforeAll(async () => {
  server = await startTestNats();
  nc = await connectTest(server);
  store = openPlacementStore(await openPlacementBucket(nc, "TENANT_PLACEMENT"));
  await store.put("pool.a", {}, 0);
  await store.put("pool.b", {}, 0);
  await store.put("defaults", { default_pool: "a" }, 0);
  await store.put("tenant.acme", { pool: "b" }, 0);
  const env = { AGGREGATE_ADMIN_TOKEN: TOKEN, AGGREGATE_SANDBOX_THREADS: "0" };
  a = await startTestApp(server.url, { ...env, AGGREGATE_POOL: "a" });
  b = await startTestApp(server.url, { ...env, AGGREGATE_POOL: "b" });
});

afterAll(async () => {
  await nc?.close();
  await a?.stop();
  await b?.stop();
  await server?.stop();
});

const counters = (app: TestApp) => ({ ...app.services.stats(TYPE)! });

/** Sends one deposit for `tenant`; resolves to the reply, or "timeout" when nobody answered. */
async function deposit(tenant: string, timeout = 2_000) {
  try {
    return await request(
      nc,
      SUBMIT,
      { payload: { type: "deposit", amount: 1 } },
      { "x-tenant-id": tenant },
      timeout,
    );
  } catch (err) {
    if (/timeout/i.test(String(err))) return "timeout" as const;
    throw err;
  }
}

/** Which app answered `n` deposits for `tenant`, measured by both apps' counters. */
async function answeredBy(tenant: string, n = 3): Promise<string> {
  const before = { a: counters(a), b: counters(b) };
  for (let i = 0; i < n; i++) {
    const reply = await deposit(tenant);
    expect(reply, tenant).not.toBe("timeout");
    if (reply !== "timeout") expect(reply.status, JSON.stringify(reply.body)).toBeUndefined();
  }
  const after = { a: counters(a), b: counters(b) };
  const okA = after.a.ok - before.a.ok;
  const okB = after.b.ok - before.b.ok;
  // every request reached both pools: one answered it, the other dropped it
  expect(okA + okB).toBe(n);
  expect(after.a.not_owner - before.a.not_owner + (after.b.not_owner - before.b.not_owner)).toBe(n);
  return okA === n ? "a" : okB === n ? "b" : `split a=${okA} b=${okB}`;
}

async function putAndWait(key: string, value: unknown): Promise<number> {
  const current = await store.get(key);
  const revision = await store.put(key, value, current?.revision ?? 0);
  await waitForRevision(revision);
  return revision;
}

async function waitForRevision(revision: number) {
  for (const app of [a, b]) expect(await app.placement.waitForRevision(revision, 5_000)).toBe(true);
}

describe("placement from the TENANT_PLACEMENT bucket", () => {
  it("sends a tenant without an entry to the default pool, and a pinned tenant to its pool only", async () => {
    expect(a.placement.status()).toMatchObject({ origin: "kv" });
    expect(await answeredBy("someone")).toBe("a");
    expect(await answeredBy("acme")).toBe("b");
    // the default tenant (no header) too
    expect(await answeredBy("")).toBe("a");
  });

  it("shows the pool in $SRV.INFO metadata and keeps one service name per type", async () => {
    const infos = [];
    for await (const i of await new Svcm(nc).client().info(`aggregate-${TYPE}`)) infos.push(i);
    expect(infos.map((i) => i.name)).toEqual([`aggregate-${TYPE}`, `aggregate-${TYPE}`]);
    expect(infos.map((i) => i.metadata?.["pool"]).sort()).toEqual(["a", "b"]);
    const b = infos.find((i) => i.metadata?.["pool"] === "b")!;
    expect(b.endpoints.find((e) => e.subject === SUBMIT)?.queue_group).toBe(`q-${TYPE}-b`);
    expect(b.endpoints.map((e) => e.subject)).toContain(`${SUBMIT}.b`);
  });

  it("follows a change of the bucket without a restart (hot reload)", async () => {
    const { revision: before, updates } = a.placement.status();
    const clientId = a.nc.info?.client_id;
    await putAndWait("tenant.acme", { pool: "a", epoch: 2 });
    expect(await answeredBy("acme")).toBe("a");
    await putAndWait("tenant.acme", { pool: "b", epoch: 3 });
    expect(await answeredBy("acme")).toBe("b");
    expect(a.placement.status().revision).toBeGreaterThan(before);
    expect(a.placement.status().updates).toBe(updates + 2);
    // the same process, the same connection: nothing restarted
    expect(a.nc.isClosed()).toBe(false);
    expect(a.nc.info?.client_id).toBe(clientId);
  });

  it("answers a paused tenant's command once, with 503, from its target pool, and applies nothing", async () => {
    await putAndWait("tenant.initech", { pool: "b", epoch: 1 });
    expect(await answeredBy("initech")).toBe("b");
    await putAndWait("tenant.initech", { pool: "b", state: "draining", from: "a", epoch: 1 });
    const before = { a: counters(a), b: counters(b) };
    const reply = await deposit("initech");
    expect(reply).not.toBe("timeout");
    if (reply === "timeout") return;
    expect(reply.status).toBe(503);
    expect(JSON.stringify(reply.body)).toMatch(/paused/);
    const after = { a: counters(a), b: counters(b) };
    expect(after.a.ok + after.b.ok).toBe(before.a.ok + before.b.ok);
    expect(after.b.errors - before.b.errors).toBe(1);
    expect(after.a.errors - before.a.errors).toBe(0);
    await putAndWait("tenant.initech", { pool: "b", epoch: 2 });
    expect(await answeredBy("initech")).toBe("b");
  });

  it("refuses a write based on an old revision (compare-and-set)", async () => {
    const current = (await store.get("tenant.acme"))!;
    await expect(store.put("tenant.acme", { pool: "a" }, current.revision - 1)).rejects.toThrow(
      /changed by someone else/,
    );
    await expect(store.put("tenant.acme", { pool: "a" }, 0)).rejects.toThrow(/changed by someone else/);
    expect((await store.get("tenant.acme"))!.revision).toBe(current.revision);
  });

  it("ignores a garbage entry with a warning, as if absent, and keeps serving", async () => {
    await putAndWait("tenant.globex", { pool: "b" });
    expect(await answeredBy("globex")).toBe("b");
    // written around the CLI's validation, straight into the bucket
    const revision = await store.kv.put("tenant.globex", "{ not json");
    const poolRevision = await store.kv.put("pool.b", JSON.stringify({ weight: "heavy" }));
    await waitForRevision(Math.max(revision, poolRevision));
    const ignored = a.placement.status().ignored;
    expect(ignored["tenant.globex"]).toMatch(/not JSON/);
    expect(ignored["pool.b"]).toMatch(/weight/);
    expect(a.logs.some((l) => l["msg"] === "placement entry ignored" && l["key"] === "tenant.globex")).toBe(
      true,
    );
    // globex has no valid entry now: the default pool; acme stays pinned to b (b is still a pool)
    expect(await answeredBy("globex")).toBe("a");
    expect(await answeredBy("acme")).toBe("b");
    await store.kv.put("pool.b", "{}");
  });

  it("shares unplaced tenants among several default pools by rendezvous hashing; pins stay", async () => {
    await putAndWait("defaults", { default_pool: ["a", "b"] });
    const table = loadPlacementTable(`{pools: {a: {}, b: {}}, default_pool: [a, b]}`);
    const tenants = Array.from({ length: 12 }, (_, i) => `hashed-${i}`);
    const expected = tenants.map((t) => resolvePool(table, t).pool);
    expect(new Set(expected)).toEqual(new Set(["a", "b"]));
    for (const [i, t] of tenants.entries()) expect(await answeredBy(t, 1), t).toBe(expected[i]);
    // a pinned tenant is not moved by the change of the defaults
    expect(await answeredBy("acme")).toBe("b");
    await putAndWait("defaults", { default_pool: "a" });
  });

  it("forwards a request sent to a pool's own subject that another pool owns, once", async () => {
    const before = { a: counters(a), b: counters(b) };
    // acme is b's; a gateway with an old table sends it to a's own subject
    const reply = await request(
      nc,
      `${SUBMIT}.a`,
      { payload: { type: "deposit", amount: 1 } },
      { "x-tenant-id": "acme" },
      2_000,
    );
    expect(reply.status).toBeUndefined();
    expect(counters(a).forwarded - before.a.forwarded).toBe(1);
    expect(counters(b).ok - before.b.ok).toBe(1);
    expect(counters(a).ok - before.a.ok).toBe(0);
    // A forwarding header from the caller changes nothing: only the forwarding subject counts.
    const forged = await request(
      nc,
      `${SUBMIT}.a`,
      { payload: { type: "deposit", amount: 1 } },
      { "x-tenant-id": "acme", "Aggregate-Forwarded-By": "b" },
      2_000,
    );
    expect(forged.status).toBeUndefined();
    expect(counters(a).ok - before.a.ok).toBe(0);
    expect(counters(b).ok - before.b.ok).toBe(2);
  });

  it("answers an invalid tenant header exactly once (from the default tenant's pool)", async () => {
    const before = { a: counters(a), b: counters(b) };
    const reply = await deposit("not a tenant!");
    expect(reply).not.toBe("timeout");
    if (reply !== "timeout") expect(reply.status).toBe(400);
    expect(counters(a).errors - before.a.errors).toBe(1);
    expect(counters(b).errors - before.b.errors).toBe(0);
  });
});

describe("admin endpoints over NATS (no queue group)", () => {
  it("reach every replica with `all`, and only a pool's replicas with its name", async () => {
    const all = await adminRequest(nc, "all", "status", {}, { token: TOKEN, maxWaitMs: 500 });
    expect(all.map((r) => r.body["pool"]).sort()).toEqual(["a", "b"]);
    for (const r of all) expect(r.body).toMatchObject({ placement: { origin: "kv" } });
    const onlyB = await adminRequest(
      nc,
      "b",
      "status",
      { tenant_id: "acme" },
      { token: TOKEN, maxWaitMs: 500 },
    );
    expect(onlyB).toHaveLength(1);
    expect(onlyB[0]!.body).toMatchObject({
      pool: "b",
      tenant_id: "acme",
      ownership: { serve: true, reason: "owner" },
      tenant_in_flight: 0,
    });
  });

  it("refuses a request without the bearer token on every replica", async () => {
    const replies = await adminRequest(
      nc,
      "all",
      "reload",
      {},
      { token: "wrong-token-0123456789", maxWaitMs: 500 },
    );
    expect(replies.map((r) => r.status)).toEqual([401, 401]);
  });

  it("drains and undrains a tenant on every replica, and reloads the placement table", async () => {
    const drained = await adminRequest(
      nc,
      "all",
      "drain",
      { tenant_id: "someone" },
      { token: TOKEN, maxWaitMs: 1_000 },
    );
    expect(drained.map((r) => r.body)).toEqual([
      expect.objectContaining({ tenant_id: "someone", drained: true }),
      expect.objectContaining({ tenant_id: "someone", drained: true }),
    ]);
    const refused = await deposit("someone");
    expect(refused !== "timeout" && refused.status).toBe(503);
    const undrained = await adminRequest(
      nc,
      "all",
      "undrain",
      { tenant_id: "someone" },
      { token: TOKEN, maxWaitMs: 500 },
    );
    expect(undrained).toHaveLength(2);
    expect(await answeredBy("someone", 1)).toBe("a");

    const reloaded = await adminRequest(nc, "all", "reload", {}, { token: TOKEN, maxWaitMs: 2_000 });
    expect(reloaded).toHaveLength(2);
    for (const r of reloaded) expect(r.body).toMatchObject({ placement: { origin: "kv" } });
    const bad = await adminRequest(nc, "a", "drain", { tenant_id: "a.b" }, { token: TOKEN, maxWaitMs: 500 });
    expect(bad.map((r) => r.status)).toEqual([400]);
  });

  it("are one micro service, aggregate-admin, with one instance per replica and no queue group", async () => {
    const infos = [];
    for await (const i of await new Svcm(nc).client().info("aggregate-admin")) infos.push(i);
    expect(infos.map((i) => i.metadata?.["pool"]).sort()).toEqual(["a", "b"]);
    for (const i of infos) for (const e of i.endpoints) expect(e.queue_group ?? "").toBe("");
  });
});

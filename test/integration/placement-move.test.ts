/**
 * Moving a tenant between pools under steady load, on a real nats-server: workers in pools `a`
 * and `b`, sequential clients (one per aggregate) retrying each command with the same command id
 * until it is acknowledged, and the tenant moved a -> b mid-run with the same code the CLI runs
 * (`moveTenant` with `confirmHandover` over the admin endpoints).
 *
 * Measured: which pool answered, from the workers' `$SRV.STATS`; every attempt's handlers, from
 * the workers' command log lines (each attempt carries its own correlation id); and the stream
 * read back: every acknowledged command exactly once at the version it was acknowledged with,
 * versions contiguous, nothing applied that was only ever refused.
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { Svcm } from "@nats-io/services";
import { afterAll, beforeAll, expect, it } from "vitest";
import { confirmHandover } from "../../shared/admin/index.ts";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import {
  moveTenant,
  openPlacementBucket,
  openPlacementStore,
  type PlacementStore,
} from "../../shared/placement-store/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { expectContiguousOnce, readCommits } from "../support/stream-audit.ts";
import { request, startTestApp, type TestApp } from "../support/service.ts";
import { STREAM, SUBMIT } from "../support/service-replies.ts";

const TOKEN = "admin-token-0123456789";
const TENANT = "mover";
const AGGREGATES = 4;
const BEFORE_MS = 1_500;
const AFTER_MS = 1_500;

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
  await store.put(`tenant.${TENANT}`, { pool: "a", state: "active", epoch: 1 }, 0);
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

/** `ok` answers per pool for the type, as `$SRV.STATS` reports them (every instance). */
async function okByPool(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for await (const s of await new Svcm(nc).client().stats("aggregate-bank-account")) {
    const data = s.endpoints?.find((e) => e.subject === SUBMIT)?.data as { pool?: string; ok?: number };
    out[data.pool!] = (out[data.pool!] ?? 0) + (data.ok ?? 0);
  }
  return out;
}

interface Attempt {
  readonly command: string;
  readonly correlation: string;
  readonly aggregate: string;
  outcome?: "ok" | "duplicate" | "timeout" | `error ${number}`;
  version?: number;
  seq?: number;
}

it("moves a tenant a -> b under steady load: nothing lost, duplicated or applied after a refusal", async () => {
  const attempts: Attempt[] = [];
  let stop = false;

  async function client(aggregate: string): Promise<void> {
    while (!stop) {
      const command = randomUUID();
      for (;;) {
        const attempt: Attempt = { command, aggregate, correlation: randomUUID() };
        attempts.push(attempt);
        try {
          const reply = await request(
            nc,
            SUBMIT,
            { command_id: command, aggregate_id: aggregate, payload: { type: "deposit", amount: 1 } },
            { "x-tenant-id": TENANT, "x-correlation-id": attempt.correlation },
            1_000,
          );
          if (reply.status === undefined) {
            attempt.outcome = reply.body["duplicate"] ? "duplicate" : "ok";
            attempt.version = Number(reply.body["version"]);
            attempt.seq = Number(reply.body["stream_seq"]);
            break;
          }
          attempt.outcome = `error ${reply.status}`;
        } catch (err) {
          if (!/timeout/i.test(String(err))) throw err;
          attempt.outcome = "timeout";
        }
        await sleep(20);
      }
    }
  }

  const ids = Array.from({ length: AGGREGATES }, () => randomUUID());
  const identity = { a: a.nc.info?.client_id, b: b.nc.info?.client_id };
  const updates = { a: a.placement.status().updates, b: b.placement.status().updates };
  const stats0 = await okByPool();
  const clients = ids.map((id) => client(id));

  await sleep(BEFORE_MS);
  const stats1 = await okByPool();
  const moveStarted = Date.now();
  const result = await moveTenant({
    store,
    tenant: TENANT,
    to: "b",
    confirm: (revision, from, to) =>
      confirmHandover(nc, {
        token: TOKEN,
        revision,
        tenant: TENANT,
        from,
        to,
        timeoutMs: 10_000,
        replyWaitMs: 300,
      }),
  });
  const moveMs = Date.now() - moveStarted;
  const stats2 = await okByPool();
  await sleep(AFTER_MS);
  const stats3 = await okByPool();
  stop = true;
  await Promise.all(clients);

  const outcomes: Record<string, number> = {};
  for (const t of attempts) outcomes[t.outcome!] = (outcomes[t.outcome!] ?? 0) + 1;
  console.log("move", result, `${moveMs} ms; attempts`, outcomes, "ok by pool", {
    stats0,
    stats1,
    stats2,
    stats3,
  });

  expect(result).toMatchObject({ from: "a", to: "b", moved: true, epoch: 2 });
  expect((await store.get(`tenant.${TENANT}`))?.value).toEqual({ pool: "b", state: "active", epoch: 2 });

  // The pool change, in the answering workers' stats: a answered before, b after, never both.
  expect(stats1["a"]! - stats0["a"]!).toBeGreaterThan(10);
  expect(stats1["b"]! - stats0["b"]!).toBe(0);
  expect(stats3["b"]! - stats2["b"]!).toBeGreaterThan(10);
  expect(stats3["a"]! - stats2["a"]!).toBe(0);

  // Hot reload: the same connections, two table updates (handover, active) in each worker.
  expect({ a: a.nc.info?.client_id, b: b.nc.info?.client_id }).toEqual(identity);
  expect(a.placement.status().updates - updates.a).toBe(2);
  expect(b.placement.status().updates - updates.b).toBe(2);

  // Every attempt was handled by at most one worker (from the command log lines).
  const handlers = new Map<string, string[]>();
  for (const [pool, app] of [
    ["a", a],
    ["b", b],
  ] as const) {
    for (const line of app.logs) {
      if (line["component"] !== "command" || typeof line["correlation_id"] !== "string") continue;
      const list = handlers.get(line["correlation_id"]) ?? [];
      list.push(pool);
      handlers.set(line["correlation_id"], list);
    }
  }
  // Only the first write (handover) changes two pools at once, and each pool applies it when
  // its own watcher delivers it: an attempt sent in that instant may be handled by both pools
  // (safe: the second finds the command id) or by neither (the client's retry is answered). A
  // sequential client has one attempt in flight, so each can meet this at most once.
  const doubled = attempts.filter((t) => (handlers.get(t.correlation)?.length ?? 0) > 1);
  const unanswered = attempts.filter((t) => t.outcome === "timeout");
  expect(doubled.length, JSON.stringify(doubled.slice(0, 3))).toBeLessThanOrEqual(AGGREGATES);
  expect(unanswered.length).toBeLessThanOrEqual(AGGREGATES);
  for (const t of unanswered) expect(handlers.get(t.correlation) ?? []).toEqual([]);
  // No refusals at all: the move never answers with an error.
  expect(attempts.filter((t) => t.outcome?.startsWith("error"))).toEqual([]);

  // The stream, read back.
  const jsm = await jetstreamManager(nc);
  const stored = await readCommits(jsm, STREAM, `tenant.${TENANT}.`);
  const acked = attempts.filter((t) => t.outcome === "ok" || t.outcome === "duplicate");
  const ackedCommands = new Set(acked.map((t) => t.command));
  // every command a client started was acknowledged in the end (clients retry until then)
  expect(new Set(attempts.map((t) => t.command)).size).toBe(ackedCommands.size);
  expectContiguousOnce(stored, ids);
  for (const id of ids) {
    const commands = (stored.get(id) ?? []).map((c) => c.command);
    // nothing in the stream that was not acknowledged (nothing applied after a refusal or a give-up)
    for (const c of commands) expect(ackedCommands.has(c), `unacknowledged command ${c} applied`).toBe(true);
  }
  for (const t of acked) {
    const commit = stored.get(t.aggregate)?.find((c) => c.command === t.command);
    expect(commit, `acknowledged command ${t.command} is missing`).toBeDefined();
    expect(commit).toMatchObject({ version: t.version, seq: t.seq });
  }
  expect(acked.length).toBeGreaterThan(40);
}, 60_000);

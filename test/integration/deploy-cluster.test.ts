/**
 * A real 3-node JetStream cluster on loopback, run from the shipped nats-config/cluster.conf
 * (ports, routes and names from the command line), R3 stream and bucket, two workers, steady
 * commands with retries. The stream leader is killed (SIGKILL) and restarted mid-run; afterwards
 * every acknowledged command is in the stream exactly once and every aggregate's versions are
 * contiguous.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, expect, it } from "vitest";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { startNatsServer, type NatsServer } from "../../shared/nats-server/index.ts";
import { request, startTestApp, type TestApp } from "../support/service.ts";
import { expectContiguousOnce, readCommits } from "../support/stream-audit.ts";

const CONFIG = path.resolve(import.meta.dirname, "../../nats-config/cluster.conf");
const STREAM = "AGGREGATE_EVENTS";
const PASSWORDS = {
  NATS_ADMIN_PASSWORD: "admin-secret",
  NATS_GATEWAY_PASSWORD: "gateway-secret",
  NATS_WORKER_PASSWORD: "worker-secret",
  NATS_READER_ACME_PASSWORD: "acme-secret",
  NATS_READER_GLOBEX_PASSWORD: "globex-secret",
  NATS_SYS_PASSWORD: "sys-secret",
};
const AGGREGATES = 6;
const RUN_MS = 9_000;
const KILL_AT_MS = 2_500;
const DOWN_MS = 2_500;

interface Member {
  readonly name: string;
  readonly port: number;
  readonly clusterPort: number;
  readonly storeDir: string;
  server?: NatsServer;
}

let root: string;
let members: Member[] = [];
const workers: TestApp[] = [];
const connections: NatsConnection[] = [];

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function routes(): string {
  return members.map((m) => `nats://127.0.0.1:${m.clusterPort}`).join(",");
}

async function startMember(m: Member): Promise<void> {
  m.server = await startNatsServer({
    port: m.port,
    storeDir: m.storeDir,
    args: [
      "-c",
      CONFIG,
      "--name",
      m.name,
      "--cluster",
      `nats://127.0.0.1:${m.clusterPort}`,
      "--routes",
      routes(),
    ],
  });
}

function urls(): string {
  return members.map((m) => `nats://127.0.0.1:${m.port}`).join(",");
}

async function admin(): Promise<{ nc: NatsConnection; jsm: JetStreamManager }> {
  const nc = await connect({
    servers: urls(),
    user: "admin",
    pass: PASSWORDS.NATS_ADMIN_PASSWORD,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 100,
  });
  connections.push(nc);
  return { nc, jsm: await jetstreamManager(nc, { checkAPI: false, timeout: 5_000 }) };
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await sleep(200);
  }
  throw new Error(`${what} did not happen within ${timeoutMs} ms: ${String(last)}`);
}

beforeAll(async () => {
  Object.assign(process.env, PASSWORDS);
  root = await mkdtemp(path.join(tmpdir(), "aggregate-cluster-"));
  const ports = await Promise.all(Array.from({ length: 6 }, () => freePort()));
  members = [1, 2, 3].map((i) => ({
    name: `n${i}`,
    port: ports[i - 1]!,
    clusterPort: ports[i + 2]!,
    storeDir: path.join(root, `n${i}`),
  }));
  await Promise.all(members.map((m) => startMember(m)));
  const { jsm } = await admin();
  // JetStream answers once the cluster has elected a meta leader.
  await until("JetStream meta leader", async () => (await jsm.getAccountInfo()) ?? undefined);
  for (let i = 0; i < 2; i++) {
    workers.push(
      await startTestApp(urls(), {
        AGGREGATE_NATS_USER: "worker",
        AGGREGATE_NATS_PASSWORD: PASSWORDS.NATS_WORKER_PASSWORD,
        AGGREGATE_STREAM_REPLICAS: "3",
        AGGREGATE_REQUEST_TIMEOUT_MS: "2000",
        AGGREGATE_LOG_LEVEL: "warn",
      }),
    );
  }
}, 120_000);

afterAll(async () => {
  for (const nc of connections) await nc.close().catch(() => undefined);
  for (const w of workers) await w.stop().catch(() => undefined);
  for (const m of members) await m.server?.stop();
  if (root) await rm(root, { recursive: true, force: true });
}, 60_000);

interface Acked {
  readonly aggregate: string;
  readonly command: string;
  readonly version: number;
  readonly seq: number;
}

it("keeps every acknowledged command exactly once, versions contiguous, through a member's crash", async () => {
  const { jsm } = await admin();
  const stream = await jsm.streams.info(STREAM);
  expect(stream.config.num_replicas).toBe(3);
  expect((await jsm.streams.info("KV_AGGREGATE_SNAPSHOTS")).config.num_replicas).toBe(3);

  const gateway = await connect({
    servers: urls(),
    user: "gateway",
    pass: PASSWORDS.NATS_GATEWAY_PASSWORD,
    inboxPrefix: "_INBOX_GATEWAY",
    maxReconnectAttempts: -1,
    reconnectTimeWait: 100,
  });
  connections.push(gateway);

  const acked: Acked[] = [];
  const outcomes = new Map<string, number>();
  const count = (k: string) => outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
  const started = Date.now();
  const stopAt = started + RUN_MS;

  // One sequential client per aggregate: a command is retried with the same command id until
  // it is acknowledged, then the next one starts.
  async function client(aggregate: string): Promise<void> {
    while (Date.now() < stopAt) {
      const command = randomUUID();
      for (;;) {
        let reply;
        try {
          reply = await request(
            gateway,
            "aggregate.bank-account.submit",
            { command_id: command, aggregate_id: aggregate, payload: { type: "deposit", amount: 1 } },
            { "x-tenant-id": "acme" },
            2_000,
          );
        } catch (err) {
          count(`request: ${(err as Error).name}`);
          await sleep(100);
          continue;
        }
        if (reply.status === undefined) {
          count(reply.body["duplicate"] ? "ok (duplicate)" : "ok");
          acked.push({
            aggregate,
            command,
            version: Number(reply.body["version"]),
            seq: Number(reply.body["stream_seq"]),
          });
          break;
        }
        count(`${reply.status} ${String((reply.body["error"] as { code?: string } | undefined)?.code)}`);
        // 4xx other than a persisting conflict is a bug in this test or the service
        if (reply.status < 500 && reply.status !== 409)
          throw new Error(`refused: ${JSON.stringify(reply.body)}`);
        await sleep(100);
      }
    }
  }

  async function chaos(): Promise<string> {
    await sleep(KILL_AT_MS);
    const leader = (await jsm.streams.info(STREAM)).cluster?.leader;
    const victim = members.find((m) => m.name === leader) ?? members[0]!;
    process.kill(victim.server!.pid, "SIGKILL");
    await victim.server!.stop();
    await sleep(DOWN_MS);
    await startMember(victim);
    return victim.name;
  }

  const ids = Array.from({ length: AGGREGATES }, () => randomUUID());
  const [victim] = await Promise.all([chaos(), ...ids.map((id) => client(id))]);
  console.log(`killed ${victim}; outcomes`, Object.fromEntries(outcomes), `acked ${acked.length}`);
  expect(acked.length).toBeGreaterThan(AGGREGATES * 5);

  // Read the whole stream back once the restarted member has caught up.
  await until("stream healthy on 3 replicas", async () => {
    const s = await jsm.streams.info(STREAM);
    const current = (s.cluster?.replicas ?? []).filter((r) => r.current && !r.offline).length;
    return s.cluster?.leader && current === 2 ? s : undefined;
  });
  const stored = await readCommits(jsm, STREAM);
  expectContiguousOnce(stored, ids);
  // every acknowledged command is there, at the version and sequence it was acknowledged with
  for (const a of acked) {
    const commit = stored.get(a.aggregate)?.find((c) => c.command === a.command);
    expect(commit, `acknowledged command ${a.command} is missing`).toBeDefined();
    expect(commit).toMatchObject({ version: a.version, seq: a.seq });
  }
}, 120_000);

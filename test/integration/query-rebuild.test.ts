/**
 * A checkpoint is a position in one stream: when the events stream is deleted and created again,
 * the projector rebuilds the read model instead of waiting for sequences the new stream has not
 * reached (and so silently skipping its first commits).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { TenantId } from "../../shared/contract/index.ts";
import { loadFunctions } from "../../shared/functions/index.ts";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import {
  openSqliteStore,
  startQueryService,
  type QueryService,
  type ReadModelStore,
  type WatchNotification,
} from "../../shared/query/index.ts";
import { compileProgramFile, createQuickJsSandbox, type Sandbox } from "../../shared/sandbox/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { FUNCTIONS_DIR, request, startTestApp, type TestApp } from "../support/service.ts";

const TYPE = "bank-account";
const STREAM = "AGGREGATE_EVENTS";
const silent = { debug() {}, info() {}, warn() {}, error() {} };

let server: NatsServer;
let app: TestApp;
let nc: NatsConnection;
let jsm: JetStreamManager;
let sandbox: Sandbox;
let dir: string;
let store: ReadModelStore;
let query: QueryService;

beforeAll(async () => {
  server = await startTestNats();
  app = await startTestApp(server.url, { AGGREGATE_QUERY: "false" });
  nc = await connectTest(server);
  jsm = await jetstreamManager(nc);
  sandbox = createQuickJsSandbox();
  dir = await mkdtemp(path.join(tmpdir(), "query-rebuild-"));
  store = openSqliteStore({ file: path.join(dir, "read-model.sqlite") });
  const [fn] = await loadFunctions(
    FUNCTIONS_DIR,
    { snapshotThreshold: 100, timeoutMs: 1000, memoryMb: 32 },
    compileProgramFile,
  );
  query = await startQueryService({
    nc,
    js: jetstream(nc),
    jsm,
    stream: STREAM,
    types: [
      {
        type: fn!.type,
        program: await sandbox.load(fn!.source),
        initialState: fn!.initialState,
        queryFields: {},
      },
    ],
    store,
    policy: { multiTenancy: "optional", defaultTenant: "" as TenantId, newId: () => crypto.randomUUID() },
    log: silent,
    maxWaitMs: 2_000,
    identityCheckMs: 100,
  });
});

afterAll(async () => {
  await query?.stop();
  await store?.close();
  await sandbox?.close();
  await nc?.close();
  await app?.stop();
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function open(balance: number) {
  const r = await request(
    nc,
    `aggregate.${TYPE}.submit`,
    { payload: { type: "open", initial_balance: balance } },
    { "x-tenant-id": "t" },
  );
  expect(r.status, JSON.stringify(r.body)).toBeUndefined();
  return { id: r.body["aggregate_id"] as string, seq: r.body["stream_seq"] as number };
}

async function ids(minSeq?: number): Promise<string[]> {
  const r = await request(
    nc,
    `aggregate.${TYPE}.query`,
    { filter: "", limit: 500, ...(minSeq === undefined ? {} : { min_stream_seq: minSeq }) },
    { "x-tenant-id": "t" },
  );
  expect(r.status, JSON.stringify(r.body)).toBeUndefined();
  return (r.body["items"] as Array<{ aggregate_id: string }>).map((i) => i.aggregate_id).sort();
}

it("rebuilds when the stream is deleted and created again, and ends the watches with `rebuild`", async () => {
  const old = [await open(1), await open(2), await open(3), await open(4)];
  expect(await ids(old.at(-1)!.seq)).toEqual(old.map((o) => o.id).sort());
  const notes: WatchNotification[] = [];
  nc.subscribe("tenant.t.watch.rebuild", {
    callback: (_e, m) => {
      notes.push(m.json<WatchNotification>());
    },
  });
  await nc.flush();
  const w = await request(
    nc,
    `aggregate.${TYPE}.watch`,
    { deliver_to: "tenant.t.watch.rebuild" },
    { "x-tenant-id": "t" },
  );
  expect(w.status).toBeUndefined();

  const info = await jsm.streams.info(STREAM);
  await jsm.streams.delete(STREAM);
  await jsm.streams.add(info.config);
  // The new stream starts at sequence 1, far below the checkpoint.
  const fresh = await open(9);
  expect(fresh.seq).toBe(1);
  const deadline = Date.now() + 10_000;
  let seen = await ids();
  while (JSON.stringify(seen) !== JSON.stringify([fresh.id]) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    seen = await ids();
  }
  expect(seen).toEqual([fresh.id]);
  expect(notes.at(-1)).toMatchObject({ type: "end", reason: "rebuild" });
  // And it keeps projecting the new stream.
  const next = await open(10);
  expect(await ids(next.seq)).toEqual([fresh.id, next.id].sort());
});

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TenantId } from "../../shared/contract/index.ts";
import { loadFunctions } from "../../shared/functions/index.ts";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import {
  openSqliteStore,
  startQueryService,
  type QueryService,
  type ReadModelStore,
} from "../../shared/query/index.ts";
import type { KnownState } from "../../shared/query/projector.ts";
import { compileProgramFile, createQuickJsSandbox, type Sandbox } from "../../shared/sandbox/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { FUNCTIONS_DIR, request, startTestApp, type TestApp } from "../support/service.ts";

const TYPE = "bank-account";
const SUBMIT = `aggregate.${TYPE}.submit`;
const QUERY = `aggregate.${TYPE}.query`;
const silent = { debug() {}, info() {}, warn() {}, error: (o: object, m?: string) => console.error(m, o) };

let server: NatsServer;
let app: TestApp;
let nc: NatsConnection;
let sandbox: Sandbox;
let dir: string;
let store: ReadModelStore;
let query: QueryService;

async function startQuery(knownState?: KnownState): Promise<void> {
  store = openSqliteStore({ file: path.join(dir, "read-model.sqlite") });
  const [fn] = await loadFunctions(
    FUNCTIONS_DIR,
    { snapshotThreshold: 100, timeoutMs: 1000, memoryMb: 32 },
    compileProgramFile,
  );
  query = await startQueryService({
    nc,
    js: jetstream(nc),
    jsm: await jetstreamManager(nc),
    stream: "AGGREGATE_EVENTS",
    types: [
      {
        type: fn!.type,
        program: await sandbox.load(fn!.source),
        initialState: fn!.initialState,
        queryFields: { balance: "number", status: "string", ...fn!.manifest.query_fields },
        ...(knownState ? { knownState } : {}),
      },
    ],
    store,
    policy: { multiTenancy: "optional", defaultTenant: "" as TenantId, newId: () => crypto.randomUUID() },
    log: silent,

    maxWaitMs: 1_000,
  });
}

async function stopQuery(): Promise<void> {
  await query.stop();
  await store.close();
}

beforeAll(async () => {
  server = await startTestNats();
  // This file runs its own query service (to restart it and delete its store): the app's stays off,
  // or the two would share the endpoint's queue group and each other's cursors.
  app = await startTestApp(server.url, { AGGREGATE_QUERY: "false" });
  nc = await connectTest(server);
  sandbox = createQuickJsSandbox();
  dir = await mkdtemp(path.join(tmpdir(), "query-endpoint-"));
  await startQuery();
});

afterAll(async () => {
  await stopQuery();
  await sandbox?.close();
  await nc?.close();
  await app?.stop();
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function open(tenant: string, balance: number, id: string = crypto.randomUUID()) {
  const r = await request(
    nc,
    SUBMIT,
    { aggregate_id: id, payload: { type: "open", initial_balance: balance } },
    {
      "x-tenant-id": tenant,
    },
  );
  expect(r.status).toBeUndefined();
  return { id, seq: r.body["stream_seq"] as number };
}

async function ask(tenant: string, body: Record<string, unknown>) {
  return request(nc, QUERY, body, tenant ? { "x-tenant-id": tenant } : {});
}

const ids = (r: { body: Record<string, unknown> }) =>
  (r.body["items"] as Array<{ aggregate_id: string }>).map((i) => i.aggregate_id);

describe("aggregate.<type>.query", () => {
  it("T12.1: `balance > 50` finds the account, after its own write (read-your-writes)", async () => {
    await open("t121", 10);
    const rich = await open("t121", 100);
    const r = await ask("t121", { filter: "balance > 50", min_stream_seq: rich.seq });
    expect(r.status).toBeUndefined();
    expect(r.body).toEqual({
      items: [{ aggregate_id: rich.id, version: 1, state: { balance: 100, status: "open" } }],
      next_cursor: null,
    });
  });

  it("T12.2: a tenant's query never returns another tenant's aggregates, also with the same ids", async () => {
    const shared = crypto.randomUUID();
    await open("tenant-a", 60, shared);
    const b = await open("tenant-b", 70, shared);
    const a = await ask("tenant-a", { filter: "balance > 0", min_stream_seq: b.seq });
    const bb = await ask("tenant-b", { filter: "balance > 0", min_stream_seq: b.seq });
    expect(a.body["items"]).toEqual([
      { aggregate_id: shared, version: 1, state: { balance: 60, status: "open" } },
    ]);
    expect(bb.body["items"]).toEqual([
      { aggregate_id: shared, version: 1, state: { balance: 70, status: "open" } },
    ]);
    const none = await ask("tenant-c", { filter: "", min_stream_seq: b.seq });
    expect(none.body["items"]).toEqual([]);
  });

  it("walks every page exactly once while other aggregates keep changing; a tampered cursor is a 400", async () => {
    const tenant = "pager";
    const opened = [];
    for (let i = 0; i < 23; i++) opened.push(await open(tenant, 100 + (i % 5)));
    const noise = await open(tenant, 1);
    let keepGoing = true;
    const churn = (async () => {
      while (keepGoing) {
        await request(
          nc,
          SUBMIT,
          { aggregate_id: noise.id, payload: { type: "deposit", amount: 1 } },
          {
            "x-tenant-id": tenant,
          },
        );
      }
    })();
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r = await ask(tenant, {
        filter: "balance >= 100 && balance < 200",
        sort: ["-balance"],
        limit: 5,
        cursor,
        min_stream_seq: opened.at(-1)!.seq,
      });
      expect(r.status).toBeUndefined();
      seen.push(...ids(r));
      cursor = r.body["next_cursor"] as string | null;
      pages++;
      if (pages === 2 && cursor) {
        const tampered = cursor.slice(0, 4) + (cursor[4] === "A" ? "B" : "A") + cursor.slice(5);
        const bad = await ask(tenant, {
          filter: "balance >= 100 && balance < 200",
          sort: ["-balance"],
          cursor: tampered,
        });
        expect(bad.status).toBe(400);
        const otherQuery = await ask(tenant, { filter: "balance >= 100", sort: ["-balance"], cursor });
        expect(otherQuery.status).toBe(400);
      }
    } while (cursor);
    keepGoing = false;
    await churn;
    expect(pages).toBe(5);
    expect(seen.slice().sort()).toEqual(opened.map((o) => o.id).sort());
  });

  it("refuses bad requests with 400 and the filter position", async () => {
    const bad = await ask("t", { filter: "balance > 50 && foo(1)" });
    expect(bad.status).toBe(400);
    expect((bad.body["error"] as { message: string }).message).toMatch(/position 16/);
    for (const body of [
      { filter: "balance >" },
      { filter: "balance + 1 > 2" },
      { sort: ["owner"] },
      { limit: 501 },
      { tenant_id: "other" },
      { filter: 5 },
    ]) {
      const r = await ask("t", body);
      expect(r.status, JSON.stringify(body)).toBe(400);
    }
  });

  it("answers 503 when the read model cannot reach min_stream_seq in time", async () => {
    const r = await ask("t", { min_stream_seq: 10_000_000 });
    expect(r.status).toBe(503);
  });

  it("survives hostile filters: a 400 or a harmless answer, never a store error or another tenant", async () => {
    await open("victim", 999);
    const mine = await open("attacker", 5);
    const hostile = [
      `status == "x' OR 1=1 --"`,
      `status == "\\"; DROP TABLE aggregates; --"`,
      "status == 'a' /* comment */",
      `owner.name == "é😀\\u202e"`,
      "a'b == 1",
      "__proto__ == 1",
      "constructor.prototype == 1",
      `balance in [${Array.from({ length: 10_000 }, (_, i) => i).join(",")}]`,
      `${"(".repeat(200)}balance > 1${")".repeat(200)}`,
      Array.from({ length: 300 }, () => "balance > 1").join(" && "),
      "tenant == 'victim'",
      "balance > 1; SELECT 1",
      `status == "\\u0000"`,
    ];
    for (const filter of hostile) {
      const r = await ask("attacker", { filter, min_stream_seq: mine.seq });
      expect([undefined, 400], filter.slice(0, 60)).toContain(r.status);
      if (r.status === undefined) {
        for (const item of r.body["items"] as Array<{ aggregate_id: string }>)
          expect(item.aggregate_id).toBe(mine.id);
      }
    }
    const stillThere = await ask("victim", { filter: "balance == 999" });
    expect(ids(stillThere)).toHaveLength(1);
  });

  it("rebuilds the same read model from the stream after the SQLite file is deleted", async () => {
    const last = await open("rebuild", 42);
    const before = await ask("", { filter: "", limit: 500, min_stream_seq: last.seq });
    const beforeOthers = await ask("rebuild", { filter: "", limit: 500, min_stream_seq: last.seq });
    await stopQuery();
    await rm(dir, { recursive: true, force: true });
    await startQuery();
    const after = await ask("", { filter: "", limit: 500, min_stream_seq: last.seq });
    const afterOthers = await ask("rebuild", { filter: "", limit: 500, min_stream_seq: last.seq });
    expect(after.body).toEqual(before.body);
    expect(afterOthers.body).toEqual(beforeOthers.body);
    expect(ids(afterOthers)).toEqual([last.id]);
  });

  it("takes a state the process already knows instead of folding the commit again, only for that exact version", async () => {
    await stopQuery();
    const asked: Array<[string, number]> = [];
    await startQuery((tenant, id, version) => {
      asked.push([tenant, version]);
      // A state no fold of these events could give: seeing it proves the hint was used.
      return tenant === "hinted" && version === 1 ? `{"balance":-1,"status":"from-cache"}` : undefined;
    });
    try {
      const hinted = await open("hinted", 5);
      const plain = await open("plain", 7);
      const r = await ask("hinted", { filter: "", min_stream_seq: plain.seq });
      expect(r.body["items"]).toEqual([
        { aggregate_id: hinted.id, version: 1, state: { balance: -1, status: "from-cache" } },
      ]);
      const p = await ask("plain", { filter: "", min_stream_seq: plain.seq });
      expect(p.body["items"]).toEqual([
        { aggregate_id: plain.id, version: 1, state: { balance: 7, status: "open" } },
      ]);
      expect(asked).toContainEqual(["hinted", 1]);
      expect(asked).toContainEqual(["plain", 1]);
    } finally {
      await stopQuery();
      await startQuery();
    }
  });
});

/**
 * The PostgreSQL read model as the service runs it with several replicas: one projector at a time
 * (advisory lock), the others reading and forwarding watches; a hand-over when the holder stops;
 * states PostgreSQL cannot store as they are (U+0000).
 */
import { randomUUID } from "node:crypto";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import type { ProjectorStatus, WatchNotification } from "../../shared/query/index.ts";
import { createTestDatabase, type TestDatabase } from "../unit/query/pg-database.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { request, startTestApp, type TestApp } from "../support/service.ts";

const TYPE = "bank-account";
const SUBMIT = `aggregate.${TYPE}.submit`;
const QUERY = `aggregate.${TYPE}.query`;
const WATCH = `aggregate.${TYPE}.watch`;

let server: NatsServer;
let nc: NatsConnection;
let database: TestDatabase;
const apps: TestApp[] = [];

beforeAll(async () => {
  server = await startTestNats();
  nc = await connectTest(server);
  database = await createTestDatabase();
  for (let i = 0; i < 2; i++) {
    apps.push(await startTestApp(server.url, { AGGREGATE_QUERY: "true", AGGREGATE_QUERY_URL: database.url }));
  }
});
afterAll(async () => {
  await nc?.close();
  for (const app of apps) await app.stop();
  await server?.stop();
  await database?.[Symbol.asyncDispose]();
});

async function command(tenant: string, payload: Record<string, unknown>, id?: string) {
  const r = await request(
    nc,
    SUBMIT,
    { ...(id ? { aggregate_id: id } : {}), payload },
    { "x-tenant-id": tenant },
  );
  expect(r.status, JSON.stringify(r.body)).toBeUndefined();
  return { id: r.body["aggregate_id"] as string, seq: r.body["stream_seq"] as number };
}

async function projecting(app: TestApp): Promise<boolean> {
  const ready = (await (await fetch(`http://127.0.0.1:${app.httpPort}/ready`)).json()) as {
    projections: ProjectorStatus[];
  };
  return ready.projections.find((p) => p.aggregate_type === TYPE)?.projecting === true;
}

async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function everything(tenant: string, minSeq: number) {
  const r = await request(
    nc,
    QUERY,
    { filter: "", limit: 500, min_stream_seq: minSeq },
    { "x-tenant-id": tenant },
  );
  expect(r.status, JSON.stringify(r.body)).toBeUndefined();
  return r.body["items"] as Array<{ aggregate_id: string; version: number; state: unknown }>;
}

it("stores a state holding U+0000 (as U+FFFD) instead of retrying it forever, and goes on projecting", async () => {
  const odd = await command("nul", { type: "open", initial_balance: 3, owner: "a\u0000b" });
  const after = await command("nul", { type: "open", initial_balance: 4 });
  const items = await everything("nul", after.seq);
  expect(items.find((i) => i.aggregate_id === odd.id)?.state).toEqual({
    balance: 3,
    status: "open",
    owner: "a\ufffdb",
  });
  expect(items.map((i) => i.aggregate_id)).toContain(after.id);
  const holder = apps.find((a) => a.logs.some((l) => String(l["msg"]).includes("U+0000")));
  expect(holder).toBeDefined();
});

it("projects from one replica at a time, forwards watches to it, and hands over when it stops; the model equals a fresh rebuild", async () => {
  await until(
    async () => (await Promise.all(apps.map(projecting))).filter(Boolean).length === 1,
    "one holder",
  );
  const states = await Promise.all(apps.map(projecting));
  expect(states.filter(Boolean)).toHaveLength(1);
  const holder = apps[states.indexOf(true)]!;
  const other = apps[states.indexOf(false)]!;

  // Watches reach the holder whichever replica takes the request (queue group): several tries
  // land on both with high probability, and every one must work.
  const t = "replicas";
  const notes = new Map<string, WatchNotification[]>();
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) {
    const deliverTo = `tenant.${t}.watch.pg.${randomUUID()}`;
    const list: WatchNotification[] = [];
    nc.subscribe(deliverTo, {
      callback: (_e, m) => {
        list.push(m.json<WatchNotification>());
      },
    });
    await nc.flush();
    const r = await request(
      nc,
      WATCH,
      { filter: "balance > 100", deliver_to: deliverTo },
      { "x-tenant-id": t },
    );
    expect(r.status, JSON.stringify(r.body)).toBeUndefined();
    notes.set(r.body["subscription_id"] as string, list);
    ids.push(r.body["subscription_id"] as string);
  }
  const rich = await command(t, { type: "open", initial_balance: 500 });
  await until(
    () => [...notes.values()].every((l) => l.some((n) => n.type === "enter")),
    "every watch's enter",
  );
  for (const list of notes.values()) {
    expect(list[0]).toMatchObject({ type: "enter", aggregate_id: rich.id, version: 1 });
  }

  const accounts: string[] = [];
  for (let i = 0; i < 10; i++) accounts.push((await command(t, { type: "open", initial_balance: i })).id);
  await holder.stop();
  apps.splice(apps.indexOf(holder), 1);
  // The holder's watches were told it stopped.
  await until(
    () => [...notes.values()].every((l) => l.at(-1)?.type === "end"),
    "the watches' end notifications",
  );
  expect([...notes.values()].map((l) => l.at(-1))).toEqual(
    ids.map(
      (id) => expect.objectContaining({ subscription_id: id, type: "end", reason: "shutdown" }) as unknown,
    ),
  );
  let last = 0;
  for (const id of accounts) last = (await command(t, { type: "deposit", amount: 7 }, id)).seq;
  await until(() => projecting(other), "the other replica to take over");
  const afterHandOver = await everything(t, last);
  expect(afterHandOver).toHaveLength(11);
  expect(afterHandOver.every((i) => i.version === (i.aggregate_id === rich.id ? 1 : 2))).toBe(true);

  // Watches now go to the new holder.
  const h = natsHeaders();
  h.set("x-tenant-id", t);
  const w = await request(nc, WATCH, { filter: "balance > 100" }, { "x-tenant-id": t });
  expect(w.body["items"]).toEqual([expect.objectContaining({ aggregate_id: rich.id })]);
  await nc.request(w.body["cancel_subject"] as string, "", { headers: h, timeout: 2_000 });

  // A single projector on an empty database builds the same model from the stream.
  const fresh = await createTestDatabase();
  try {
    const before = await Promise.all(["nul", t].map((tenant) => everything(tenant, last)));
    await other.stop();
    apps.splice(apps.indexOf(other), 1);
    const rebuilt = await startTestApp(server.url, {
      AGGREGATE_QUERY: "true",
      AGGREGATE_QUERY_URL: fresh.url,
    });
    apps.push(rebuilt);
    const after = await Promise.all(["nul", t].map((tenant) => everything(tenant, last)));
    expect(after).toEqual(before);
    await rebuilt.stop();
    apps.splice(apps.indexOf(rebuilt), 1);
  } finally {
    await fresh[Symbol.asyncDispose]();
  }
});

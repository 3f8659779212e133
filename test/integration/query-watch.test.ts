/**
 * `aggregate.<type>.watch`: live enter/update/leave notifications for a filter, as the service
 * runs them (SQLite read model, its own projector), through real NATS.
 */
import { randomUUID } from "node:crypto";
import { headers as natsHeaders, type NatsConnection, type Subscription } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import type { WatchNotification } from "../../shared/query/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { request, startTestApp, type Reply, type TestApp } from "../support/service.ts";

const TYPE = "bank-account";
const SUBMIT = `aggregate.${TYPE}.submit`;
const QUERY = `aggregate.${TYPE}.query`;
const WATCH = `aggregate.${TYPE}.watch`;
const TTL_MS = 1_000;

let server: NatsServer;
let app: TestApp;
let nc: NatsConnection;

beforeAll(async () => {
  server = await startTestNats();
  app = await startTestApp(server.url, {
    AGGREGATE_QUERY: "true",
    AGGREGATE_WATCH_TTL_MS: String(TTL_MS),
    AGGREGATE_WATCH_MAX_PER_TENANT: "3",
  });
  nc = await connectTest(server);
});
afterAll(async () => {
  await nc?.close();
  await app?.stop();
  await server?.stop();
});

interface Item {
  aggregate_id: string;
  version: number;
  state: unknown;
}

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

const tenantHeader = (tenant: string) => {
  const h = natsHeaders();
  h.set("x-tenant-id", tenant);
  return h;
};

/** A watching client: subscribes to its delivery subject first, then asks, then renews. */
async function watch(tenant: string, filter: string, opts: { renew?: boolean; deliverTo?: string } = {}) {
  const deliverTo = opts.deliverTo ?? `tenant.${tenant}.watch.test.${randomUUID()}`;
  const notes: WatchNotification[] = [];
  const sub: Subscription = nc.subscribe(deliverTo, {
    callback: (_err, m) => {
      notes.push(m.json<WatchNotification>());
    },
  });
  await nc.flush();
  const reply = await request(nc, WATCH, { filter, deliver_to: deliverTo }, { "x-tenant-id": tenant });
  const renewSubject = reply.body["renew_subject"] as string | undefined;
  const timer =
    opts.renew !== false && renewSubject
      ? setInterval(() => {
          nc.request(renewSubject, "", { headers: tenantHeader(tenant), timeout: 1_000 }).catch(
            () => undefined,
          );
        }, TTL_MS / 4)
      : undefined;
  return {
    reply,
    notes,
    async close() {
      clearInterval(timer);
      const cancel = reply.body["cancel_subject"] as string | undefined;
      if (cancel)
        await nc
          .request(cancel, "", { headers: tenantHeader(tenant), timeout: 1_000 })
          .catch(() => undefined);
      sub.unsubscribe();
    },
  };
}

async function until(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The client-side view: initial matches, then every notification in order. */
function reconstruct(reply: Reply, notes: readonly WatchNotification[]): Map<string, Item> {
  const view = new Map<string, Item>();
  for (const item of reply.body["items"] as Item[]) view.set(item.aggregate_id, item);
  for (const n of notes) {
    if (n.type === "end") continue;
    if (n.type === "leave") view.delete(n.aggregate_id);
    else view.set(n.aggregate_id, { aggregate_id: n.aggregate_id, version: n.version, state: n.state });
  }
  return view;
}

const changes = (notes: readonly WatchNotification[]) =>
  notes.flatMap((n) => (n.type === "end" ? [] : [[n.type, n.aggregate_id, n.version] as const]));

describe("aggregate.<type>.watch", () => {
  it("sends enter, update and leave for a scripted sequence of commands, in order", async () => {
    const t = "script";
    const a = await command(t, { type: "open", initial_balance: 50 });
    const b = await command(t, { type: "open", initial_balance: 200 });
    const w = await watch(t, "balance > 100");
    expect(w.reply.status).toBeUndefined();
    expect(w.reply.body).toMatchObject({
      deliver_to: expect.stringMatching(/^tenant\.script\.watch\./) as unknown,
      ttl_ms: TTL_MS,
      next_cursor: null,
      items: [{ aggregate_id: b.id, version: 1, state: { balance: 200, status: "open" } }],
    });
    expect(w.reply.body["stream_seq"]).toBeGreaterThanOrEqual(b.seq);
    const seqs = [
      await command(t, { type: "deposit", amount: 100 }, a.id), // a 150: enter
      await command(t, { type: "deposit", amount: 10 }, b.id), // b 210: update
      await command(t, { type: "withdraw", amount: 100 }, a.id), // a 50: leave
      await command(t, { type: "deposit", amount: 1 }, a.id), // a 51: nothing
      await command(t, { type: "open", initial_balance: 500 }), // c: enter
      await command(t, { type: "withdraw", amount: 210 }, b.id), // b 0: leave
    ];
    const c = seqs[4]!.id;
    await until(() => w.notes.length >= 5, "five notifications");
    await new Promise((r) => setTimeout(r, 100)); // nothing more may come
    expect(changes(w.notes)).toEqual([
      ["enter", a.id, 2],
      ["update", b.id, 2],
      ["leave", a.id, 3],
      ["enter", c, 1],
      ["leave", b.id, 3],
    ]);
    expect(w.notes.map((n) => n.watch_seq)).toEqual([1, 2, 3, 4, 5]);
    const noted = w.notes.flatMap((n) => (n.type === "end" ? [] : [n.stream_seq]));
    expect(noted).toEqual([seqs[0]!.seq, seqs[1]!.seq, seqs[2]!.seq, seqs[4]!.seq, seqs[5]!.seq]);
    expect(w.notes[0]).toMatchObject({ state: { balance: 150, status: "open" } });
    expect(w.notes[2]).not.toHaveProperty("state");
    await w.close();
    await until(() => w.notes.at(-1)?.type === "end", "the end notification");
    expect(w.notes.at(-1)).toMatchObject({ type: "end", reason: "cancelled", watch_seq: 6 });
  });

  it("loses nothing across the handshake while commands run concurrently: initial result + notifications = final query", async () => {
    const t = "race";
    const accounts: string[] = [];
    for (let i = 0; i < 16; i++)
      accounts.push((await command(t, { type: "open", initial_balance: 80 + i * 3 })).id);
    let done = 0;
    let maxSeq = 0;
    let firstSeq = Number.MAX_SAFE_INTEGER;
    const total = 240;
    const worker = async (k: number) => {
      for (let i = k; i < total; i += 8) {
        const id = accounts[(i * 7) % accounts.length]!;
        const r = await request(
          nc,
          SUBMIT,
          {
            aggregate_id: id,
            payload: i % 3 === 0 ? { type: "withdraw", amount: 9 } : { type: "deposit", amount: 4 },
          },
          { "x-tenant-id": t },
        );
        // A withdrawal may be refused (insufficient funds); that changes nothing.
        if (r.status === undefined) {
          const seq = r.body["stream_seq"] as number;
          maxSeq = Math.max(maxSeq, seq);
          firstSeq = Math.min(firstSeq, seq);
        }
        done++;
      }
    };
    const load = Promise.all(Array.from({ length: 8 }, (_, k) => worker(k)));
    await until(() => done >= total / 4, "a quarter of the load");
    const w = await watch(t, "balance > 100");
    expect(w.reply.status).toBeUndefined();
    const handshakeSeq = w.reply.body["stream_seq"] as number;
    await load;
    // The watch really started in the middle of the load.
    expect(handshakeSeq).toBeGreaterThan(firstSeq);
    expect(handshakeSeq).toBeLessThan(maxSeq);
    const final = await request(
      nc,
      QUERY,
      { filter: "balance > 100", limit: 500, min_stream_seq: maxSeq },
      { "x-tenant-id": t },
    );
    const expected = new Map((final.body["items"] as Item[]).map((i) => [i.aggregate_id, i]));
    const lastNoted = () => Math.max(0, ...w.notes.flatMap((n) => (n.type === "end" ? [] : [n.stream_seq])));
    await until(() => {
      const view = reconstruct(w.reply, w.notes);
      return JSON.stringify([...view].sort()) === JSON.stringify([...expected].sort());
    }, `the reconstruction to reach the final query (last notification at ${lastNoted()})`).catch(
      () => undefined,
    );
    expect([...reconstruct(w.reply, w.notes)].sort()).toEqual([...expected].sort());
    // No gap, no duplicate, and stream order.
    expect(w.notes.map((n) => n.watch_seq)).toEqual(w.notes.map((_, i) => i + 1));
    const noted = w.notes.flatMap((n) => (n.type === "end" ? [] : [n.stream_seq]));
    expect(noted).toEqual([...noted].sort((x, y) => x - y));
    expect(new Set(noted).size).toBe(noted.length);
    expect(noted.every((s) => s > handshakeSeq)).toBe(true);
    expect(w.notes.length).toBeGreaterThan(0);
    await w.close();
  });

  it("keeps notifications inside the tenant, even for the same aggregate id", async () => {
    const shared = randomUUID();
    const wa = await watch("iso-a", "balance > 0");
    const wb = await watch("iso-b", "balance > 0");
    expect(wa.reply.body["deliver_to"]).toMatch(/^tenant\.iso-a\.watch\./);
    await command("iso-a", { type: "open", initial_balance: 5 }, shared);
    await command("iso-b", { type: "open", initial_balance: 7 }, shared);
    await command("iso-b", { type: "deposit", amount: 1 }, shared);
    await until(() => wa.notes.length >= 1 && wb.notes.length >= 2, "both tenants' notifications");
    await new Promise((r) => setTimeout(r, 100));
    expect(changes(wa.notes)).toEqual([["enter", shared, 1]]);
    expect(wa.notes[0]).toMatchObject({ state: { balance: 5 } });
    expect(changes(wb.notes)).toEqual([
      ["enter", shared, 1],
      ["update", shared, 2],
    ]);
    // Another tenant can neither renew nor cancel the watch.
    const renew = await request(nc, wa.reply.body["renew_subject"] as string, "", { "x-tenant-id": "iso-b" });
    expect(renew.status).toBe(403);
    await wa.close();
    await wb.close();
  });

  it("refuses a delivery subject outside the caller's tenant's watch prefix", async () => {
    for (const deliver_to of [
      "tenant.iso-b.watch.x",
      `tenant.iso-a.aggregate.${TYPE}.${randomUUID()}`,
      "tenant.iso-a.watch.*",
      "tenant.iso-a.watch.>",
      "tenant.iso-a.watch.",
      "tenant.iso-a.watch",
      "tenant.iso-a.watch.a b",
      "_INBOX.abc",
    ]) {
      const r = await request(nc, WATCH, { filter: "", deliver_to }, { "x-tenant-id": "iso-a" });
      expect(r.status, deliver_to).toBe(400);
    }
  });

  it("answers a bad filter with 400 naming the position, and a bad body with 400", async () => {
    const r = await request(nc, WATCH, { filter: "balance > 50 && foo(1)" }, { "x-tenant-id": "bad" });
    expect(r.status).toBe(400);
    expect((r.body["error"] as { message: string }).message).toMatch(/position 16/);
    for (const body of [{ tenant_id: "other" }, { filter: 5 }, { limit: 0 }, "not json"]) {
      const bad = await request(nc, WATCH, body, { "x-tenant-id": "bad" });
      expect(bad.status, JSON.stringify(body)).toBe(400);
    }
  });

  it("removes an abandoned watch after its TTL and tells it `expired`; a renewed one lives on", async () => {
    const abandoned = await watch("ttl", "", { renew: false });
    const kept = await watch("ttl", "");
    const deliverTo = abandoned.reply.body["deliver_to"] as string;
    expect(deliverTo).toMatch(/^tenant\.ttl\.watch\./);
    await until(() => abandoned.notes.some((n) => n.type === "end"), "the expiry", TTL_MS * 4);
    expect(abandoned.notes.at(-1)).toMatchObject({ type: "end", reason: "expired" });
    // Gone: its control subject has no responders any more.
    await expect(
      nc.request(abandoned.reply.body["renew_subject"] as string, "", {
        headers: tenantHeader("ttl"),
        timeout: 1_000,
      }),
    ).rejects.toThrow(/no responders/i);
    const r = await command("ttl", { type: "open", initial_balance: 1 });
    await until(() => kept.notes.some((n) => n.type === "enter"), "the renewed watch's notification");
    expect(changes(kept.notes)).toEqual([["enter", r.id, 1]]);
    expect(kept.notes.some((n) => n.type === "end")).toBe(false);
    const renewed = await request(nc, kept.reply.body["renew_subject"] as string, "", {
      "x-tenant-id": "ttl",
    });
    expect(renewed.body).toMatchObject({ subscription_id: kept.reply.body["subscription_id"] });
    await kept.close();
    await abandoned.close();
  });

  it("bounds the watches per tenant with a 503, and a cancelled watch frees its place", async () => {
    const held = [];
    for (let i = 0; i < 3; i++) held.push(await watch("busy", ""));
    expect(held.every((w) => w.reply.status === undefined)).toBe(true);
    const over = await request(nc, WATCH, {}, { "x-tenant-id": "busy" });
    expect(over.status).toBe(503);
    expect(over.errorHeader).toMatch(/AGGREGATE_WATCH_MAX_PER_TENANT/);
    const other = await watch("not-busy", "");
    expect(other.reply.status).toBeUndefined();
    await held[0]!.close();
    const again = await watch("busy", "");
    expect(again.reply.status).toBeUndefined();
    for (const w of [...held.slice(1), other, again]) await w.close();
  });

  it("pages a large initial result with a cursor that `query` continues", async () => {
    const t = "pages";
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await command(t, { type: "open", initial_balance: 10 })).id);
    const first = await request(nc, WATCH, { filter: "balance == 10", limit: 2 }, { "x-tenant-id": t });
    expect((first.body["items"] as Item[]).length).toBe(2);
    const seen = (first.body["items"] as Item[]).map((i) => i.aggregate_id);
    let cursor = first.body["next_cursor"] as string | null;
    while (cursor) {
      const page = await request(
        nc,
        QUERY,
        { filter: "balance == 10", limit: 2, cursor },
        { "x-tenant-id": t },
      );
      expect(page.status).toBeUndefined();
      seen.push(...(page.body["items"] as Item[]).map((i) => i.aggregate_id));
      cursor = page.body["next_cursor"] as string | null;
    }
    expect(seen).toEqual([...ids].sort());
    await nc.request(first.body["cancel_subject"] as string, "", {
      headers: tenantHeader(t),
      timeout: 2_000,
    });
  });
});

describe("aggregate.<type>.query count", () => {
  it("returns the exact number of matches when asked, across pages, and only then", async () => {
    const t = "counting";
    let last = 0;
    for (let i = 0; i < 7; i++) last = (await command(t, { type: "open", initial_balance: i * 10 })).seq;
    const r = await request(
      nc,
      QUERY,
      { filter: "balance >= 20", limit: 2, count: true, min_stream_seq: last },
      { "x-tenant-id": t },
    );
    expect(r.status).toBeUndefined();
    expect(r.body["total"]).toBe(5);
    expect((r.body["items"] as Item[]).length).toBe(2);
    const next = await request(
      nc,
      QUERY,
      { filter: "balance >= 20", limit: 2, count: true, cursor: r.body["next_cursor"] },
      { "x-tenant-id": t },
    );
    expect(next.body["total"]).toBe(5);
    const plain = await request(nc, QUERY, { filter: "balance >= 20" }, { "x-tenant-id": t });
    expect(plain.body).not.toHaveProperty("total");
    const none = await request(
      nc,
      QUERY,
      { filter: "balance >= 20", count: true },
      { "x-tenant-id": "nobody" },
    );
    expect(none.body).toMatchObject({ items: [], total: 0 });
    const bad = await request(nc, QUERY, { count: "yes" }, { "x-tenant-id": t });
    expect(bad.status).toBe(400);
  });
});

import { describe, expect, it } from "vitest";
import {
  compilePredicate,
  createWatchHub,
  parseFilter,
  type ProjectedChange,
  type WatchNotification,
} from "../../../shared/query/index.ts";

const silent = { debug() {}, info() {}, warn() {}, error() {} };
const decoder = new TextDecoder();

function hub(options: { now?: () => number; maxPerTenant?: number; maxBuffered?: number } = {}) {
  const sent: Array<{ subject: string; body: WatchNotification }> = [];
  const h = createWatchHub({
    type: "account",
    publish: (subject, data) =>
      sent.push({ subject, body: JSON.parse(decoder.decode(data)) as WatchNotification }),
    ttlMs: 1_000,
    maxPerTenant: options.maxPerTenant ?? 10,
    sweepMs: 60_000,
    log: silent,
    ...(options.maxBuffered === undefined ? {} : { maxBuffered: options.maxBuffered }),
    ...(options.now ? { now: options.now } : {}),
  });
  return { h, sent };
}

const change = (
  seq: number,
  id: string,
  version: number,
  before: object | undefined,
  after: object,
  tenant = "t",
): ProjectedChange => ({
  tenant,
  id,
  version,
  stream_seq: seq,
  before: before === undefined ? undefined : JSON.stringify(before),
  after: JSON.stringify(after),
});

const rich = compilePredicate(parseFilter("balance > 100"));

describe("watch hub", () => {
  it("drops buffered changes the initial result already holds and delivers the rest in order", () => {
    const { h, sent } = hub();
    h.open({ id: "w1", tenant: "t", subject: "tenant.t.watch.x", predicate: rich });
    h.listener.changes([
      change(5, "a", 1, undefined, { balance: 200 }),
      change(6, "b", 1, undefined, { balance: 300 }),
    ]);
    h.listener.changes([change(7, "a", 2, { balance: 200 }, { balance: 10 })]);
    expect(sent).toEqual([]); // nothing before the reply
    h.go("w1", 5);
    expect(
      sent.map((s) => [s.body.type, s.body.watch_seq, "stream_seq" in s.body ? s.body.stream_seq : 0]),
    ).toEqual([
      ["enter", 1, 6],
      ["leave", 2, 7],
    ]);
    h.listener.changes([change(8, "b", 2, { balance: 300 }, { balance: 301 })]);
    expect(sent.at(-1)?.body).toEqual({
      subscription_id: "w1",
      watch_seq: 3,
      type: "update",
      aggregate_id: "b",
      version: 2,
      stream_seq: 8,
      state: { balance: 301 },
    });
    h.stop();
  });

  it("drops a change announced after the handshake that the initial result already held", () => {
    // The read model's writer thread may commit a fold (so a page holds it) before the projector
    // announces its changes.
    const { h, sent } = hub();
    h.open({ id: "w1", tenant: "t", subject: "s", predicate: rich });
    h.go("w1", 6);
    h.listener.changes([
      change(5, "a", 1, undefined, { balance: 200 }),
      change(6, "b", 1, undefined, { balance: 300 }),
    ]);
    expect(sent).toEqual([]);
    h.listener.changes([change(7, "a", 2, { balance: 200 }, { balance: 250 })]);
    expect(sent.map((s) => [s.body.type, s.body.watch_seq])).toEqual([["update", 1]]);
    h.stop();
  });

  it("classifies against the filter: a new aggregate enters even if its initial state would match", () => {
    const { h, sent } = hub();
    const zero = compilePredicate(parseFilter("balance == 0"));
    h.open({ id: "w", tenant: "t", subject: "s", predicate: zero });
    h.go("w", 0);
    h.listener.changes([
      change(1, "a", 1, undefined, { balance: 0 }),
      change(2, "a", 2, { balance: 0 }, { balance: 5 }),
      change(3, "a", 3, { balance: 5 }, { balance: 6 }),
      change(4, "other-tenant", 1, undefined, { balance: 0 }, "u"),
    ]);
    expect(sent.map((s) => s.body.type)).toEqual(["enter", "leave"]);
    h.stop();
  });

  it("expires a watch that is not renewed, and refuses more than the per-tenant bound", () => {
    let clock = 0;
    const ended: string[] = [];
    const { h, sent } = hub({ now: () => clock, maxPerTenant: 2 });
    h.open({ id: "a", tenant: "t", subject: "s", predicate: rich, onEnd: () => ended.push("a") });
    h.open({ id: "b", tenant: "t", subject: "s", predicate: rich, onEnd: () => ended.push("b") });
    expect(() => h.open({ id: "c", tenant: "t", subject: "s", predicate: rich })).toThrow(
      expect.objectContaining({ name: "Unavailable" }) as Error,
    );
    h.open({ id: "d", tenant: "other", subject: "s", predicate: rich });
    clock = 900;
    expect(h.renew("b", "t")?.expiresAt).toBe(1_900);
    expect(h.renew("b", "other")).toBeUndefined();
    clock = 1_000;
    h.sweep();
    expect(ended).toEqual(["a"]);
    expect(h.get("b")).toBeDefined();
    expect(h.get("d")).toBeUndefined();
    expect(sent).toEqual([
      { subject: "s", body: { subscription_id: "a", watch_seq: 1, type: "end", reason: "expired" } },
      { subject: "s", body: { subscription_id: "d", watch_seq: 1, type: "end", reason: "expired" } },
    ]);
    h.stop();
    expect(h.size()).toBe(0);
  });

  it("ends a watch whose handshake buffer overflows, and every watch on an interruption", () => {
    const { h, sent } = hub({ maxBuffered: 1 });
    h.open({ id: "w", tenant: "t", subject: "s", predicate: rich });
    h.listener.changes([
      change(1, "a", 1, undefined, { balance: 200 }),
      change(2, "b", 1, undefined, { balance: 200 }),
    ]);
    h.go("w", 0);
    expect(sent.map((s) => s.body)).toEqual([
      { subscription_id: "w", watch_seq: 1, type: "end", reason: "overflow" },
    ]);
    h.open({ id: "x", tenant: "t", subject: "s", predicate: rich });
    h.go("x", 2);
    h.listener.interrupted("rebuild");
    expect(sent.at(-1)?.body).toEqual({ subscription_id: "x", watch_seq: 1, type: "end", reason: "rebuild" });
    expect(h.size()).toBe(0);
    h.stop();
  });
});

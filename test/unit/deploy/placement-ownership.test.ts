import { describe, expect, it } from "vitest";
import {
  buildPlacementTable,
  decideOwnership,
  loadPlacementTable,
  parsePlacementEntry,
  placementEntriesOf,
  resolvePool,
  type PlacementEntry,
  type PlacementTable,
} from "../../../shared/placement/index.ts";

const table = (tenants: Record<string, unknown>, extra: Record<string, unknown> = {}): PlacementTable =>
  loadPlacementTable(
    JSON.stringify({ pools: { a: {}, b: {}, c: {} }, default_pool: "a", tenants, ...extra }),
  );

/** Which of the pools answer the tenant under the table. */
const answering = (t: PlacementTable | undefined, tenant: string) =>
  ["a", "b", "c"].filter((p) => decideOwnership(t, tenant, p).serve);

function entries(values: Record<string, unknown>): PlacementEntry[] {
  const out: PlacementEntry[] = [];
  for (const [key, value] of Object.entries(values)) {
    const parsed = parsePlacementEntry(key, typeof value === "string" ? value : JSON.stringify(value));
    if (parsed.ok) out.push(parsed.entry);
  }
  return out;
}

describe("ownership: which pool answers a tenant", () => {
  it("lets exactly one pool answer in every state but the pause, and none during the pause", () => {
    expect(answering(table({ t: "b" }), "t")).toEqual(["b"]);
    expect(answering(table({}), "t")).toEqual(["a"]);
    expect(answering(table({ t: { pool: "b", state: "handover", from: "a", epoch: 1 } }), "t")).toEqual([
      "b",
    ]);
    expect(answering(table({ t: { pool: "b", state: "active", epoch: 2 } }), "t")).toEqual(["b"]);
    expect(answering(table({ t: { pool: "b", state: "draining", from: "a", epoch: 1 } }), "t")).toEqual([]);
  });

  it("tells the pool a tenant is leaving apart from a pool that never had it", () => {
    const t = table({ t: { pool: "b", state: "handover", from: "a", epoch: 1 } });
    expect(decideOwnership(t, "t", "a")).toEqual({ serve: false, reason: "leaving", owner: "b" });
    expect(decideOwnership(t, "t", "c")).toEqual({ serve: false, reason: "not-owner", owner: "b" });
    const paused = table({ t: { pool: "b", state: "draining", from: "a", epoch: 1 } });
    expect(decideOwnership(paused, "t", "b")).toEqual({ serve: false, reason: "paused", owner: undefined });
  });

  it("changes nobody's behaviour between handover and active: the second write of a move is safe", () => {
    const handover = table({ t: { pool: "b", state: "handover", from: "a", epoch: 4 } });
    const active = table({ t: { pool: "b", state: "active", epoch: 5 } });
    for (const pool of ["a", "b", "c"]) {
      expect(decideOwnership(handover, "t", pool).serve).toBe(decideOwnership(active, "t", pool).serve);
    }
  });

  it("serves every tenant in every pool when there is no table at all", () => {
    expect(answering(undefined, "t")).toEqual(["a", "b", "c"]);
  });

  it("sends unplaced tenants to one of several default pools by rendezvous, each to exactly one", () => {
    const t = table({}, { default_pool: ["a", "b", "c"] });
    const seen = new Set<string>();
    for (let i = 0; i < 60; i++) {
      const who = answering(t, `tenant-${i}`);
      expect(who).toHaveLength(1);
      expect(who[0]).toBe(resolvePool(t, `tenant-${i}`).pool);
      seen.add(who[0]!);
    }
    expect(seen).toEqual(new Set(["a", "b", "c"]));
  });
});

describe("placement table from KV entries", () => {
  it("builds the same table as the file format, and round-trips through placementEntriesOf", () => {
    const file = loadPlacementTable(`
default_pool: [a, b]
pools: {a: {weight: 2}, b: {}, big: {replicas: 3}}
tenants: {acme: big, globex: {pool: b, state: handover, from: a, epoch: 3}}
`);
    const kv = entries(Object.fromEntries(placementEntriesOf(file).map((e) => [e.key, e.value])));
    const built = buildPlacementTable(kv);
    expect(built.warnings).toEqual([]);
    expect(built.table).toEqual(file);
  });

  it("ignores garbage values, each on its own, and keeps the rest", () => {
    const garbage = {
      "tenant.bad-json": "{not json",
      "tenant.bad-pool": { pool: "NOT A POOL" },
      "tenant.bad-state": { pool: "a", state: "moving" },
      "tenant.no-from": { pool: "a", state: "handover" },
      "tenant.a.b": { pool: "a" },
      "pool.Bad_Name": {},
      "pool.all": {},
      "pool.x": { weight: -1 },
      defaults: { default_pool: 7 },
      "something.else": {},
    };
    for (const [key, value] of Object.entries(garbage)) {
      const parsed = parsePlacementEntry(key, typeof value === "string" ? value : JSON.stringify(value));
      expect(parsed.ok, key).toBe(false);
      if (!parsed.ok) expect(parsed.problem.startsWith(`${key}:`)).toBe(true);
    }
    const built = buildPlacementTable(entries({ ...garbage, "tenant.good": { pool: "b" }, "pool.b": {} }));
    expect(Object.keys(built.table!.tenants)).toEqual(["good"]);
    expect(resolvePool(built.table!, "good").pool).toBe("b");
    // no valid `defaults`: the default pool is `default`
    expect(resolvePool(built.table!, "other").pool).toBe("default");
  });

  it("keeps a pinned tenant on its pool when the pool's definition is missing or garbage", () => {
    const built = buildPlacementTable(entries({ "tenant.acme": { pool: "big" }, "pool.big": "garbage" }));
    expect(resolvePool(built.table!, "acme").pool).toBe("big");
    expect(built.warnings.join()).toMatch(/pool big .* no valid definition/);
  });

  it("has no table when the bucket holds nothing valid", () => {
    expect(buildPlacementTable([]).table).toBeUndefined();
    expect(buildPlacementTable(entries({ "tenant.x": "{" })).table).toBeUndefined();
  });
});

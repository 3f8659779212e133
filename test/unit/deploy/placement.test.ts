import { describe, expect, it } from "vitest";
import {
  generateConstraints,
  loadPlacementTable,
  PlacementConfigError,
  rendezvousOwner,
  resolvePool,
  tenantRangeLabel,
} from "../../../shared/placement/index.ts";

const tenants = (n: number, prefix = "tenant-") => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

function counts(
  keys: readonly string[],
  nodes: readonly { id: string; weight?: number }[],
): Map<string, number> {
  const out = new Map(nodes.map((n) => [n.id, 0]));
  for (const k of keys) {
    const owner = rendezvousOwner(k, nodes)!;
    out.set(owner, out.get(owner)! + 1);
  }
  return out;
}

describe("rendezvous hashing (seed T14.2, T14.5)", () => {
  it("spreads 300 tenants over 3 nodes within the seed's bound (max - min <= 30)", () => {
    const dist = [...counts(tenants(300), [{ id: "node-a" }, { id: "node-b" }, { id: "node-c" }]).values()];
    expect(dist.reduce((a, b) => a + b)).toBe(300);
    expect(Math.max(...dist) - Math.min(...dist), JSON.stringify(dist)).toBeLessThanOrEqual(30);
  });

  it("balances within 2% of the fair share over 30,000 tenants, and follows weights", () => {
    const even = counts(tenants(30_000), [{ id: "a" }, { id: "b" }, { id: "c" }]);
    for (const c of even.values()) expect(Math.abs(c / 30_000 - 1 / 3)).toBeLessThan(0.02);
    const weighted = counts(tenants(30_000), [
      { id: "small", weight: 1 },
      { id: "big", weight: 3 },
    ]);
    expect(Math.abs(weighted.get("big")! / 30_000 - 0.75)).toBeLessThan(0.02);
  });

  it("moves only tenants onto an added node, about 1/N of them", () => {
    const keys = tenants(3_000);
    const before = [{ id: "node-a" }, { id: "node-b" }];
    const after = [...before, { id: "node-c" }];
    let moved = 0;
    for (const k of keys) {
      const was = rendezvousOwner(k, before);
      const is = rendezvousOwner(k, after);
      // the seed's assertion, for every tenant rather than one
      expect(is === was || is === "node-c", `${k}: ${was} -> ${is}`).toBe(true);
      if (is !== was) moved++;
    }
    expect(moved / keys.length).toBeGreaterThan(1 / 3 - 0.04);
    expect(moved / keys.length).toBeLessThan(1 / 3 + 0.04);
  });

  it("is a pure function of the key and the candidate set (order does not matter)", () => {
    const nodes = [{ id: "x" }, { id: "y" }, { id: "z" }];
    for (const k of tenants(200))
      expect(rendezvousOwner(k, [...nodes].reverse())).toBe(rendezvousOwner(k, nodes));
    expect(rendezvousOwner("t", [])).toBeUndefined();
  });
});

describe("placement table (seed T14.3)", () => {
  it("loads the seed's YAML shorthand and answers a tenant's pool", () => {
    const table = loadPlacementTable(`
pools: {node-a: {}, node-b: {}}
default_pool: node-a
tenants:
  acme-corp: node-a
  globex: node-b
`);
    expect(resolvePool(table, "acme-corp").pool).toBe("node-a");
    expect(resolvePool(table, "globex")).toMatchObject({
      pool: "node-b",
      source: "pinned",
      entry: { state: "active", epoch: 1 },
    });
  });

  it("loads JSON with full entries and several hashed default pools", () => {
    const table = loadPlacementTable(
      JSON.stringify({
        default_pool: ["shared-1", "shared-2"],
        pools: {
          "shared-1": {},
          "shared-2": { weight: 2 },
          big: { replicas: 4, node_labels: { pool: "big" } },
        },
        tenants: { acme: { pool: "big", state: "handover", from: "shared-1", epoch: 3 } },
      }),
    );
    expect(resolvePool(table, "acme")).toMatchObject({ pool: "big", source: "pinned", entry: { epoch: 3 } });
    const r = resolvePool(table, "someone-else");
    expect(r.source).toBe("hashed");
    expect(["shared-1", "shared-2"]).toContain(r.pool);
    expect(table.pools["big"]).toMatchObject({ replicas: 4, weight: 1 });
  });

  it("keeps a pinned tenant pinned whatever happens to the hashed pools", () => {
    const pools = ["p1", "p2", "p3", "p4", "p5"];
    // find a tenant that hashing would put elsewhere than its pin, so the pin is what decides
    const base = { pools: Object.fromEntries(pools.map((p) => [p, {}])), default_pool: pools.slice(0, 2) };
    const unpinned = loadPlacementTable(JSON.stringify(base));
    const tenant = tenants(50).find((t) => resolvePool(unpinned, t).pool !== "p2")!;
    for (let n = 1; n <= pools.length; n++) {
      const table = loadPlacementTable(
        JSON.stringify({ ...base, default_pool: pools.slice(0, n), tenants: { [tenant]: "p2" } }),
      );
      expect(resolvePool(table, tenant)).toMatchObject({ pool: "p2", source: "pinned" });
    }
  });

  it("sends the default tenant ('' in requests, '_' in the table) like any other", () => {
    const table = loadPlacementTable(`{pools: {default: {}, vip: {}}, tenants: {_: vip}}`);
    expect(resolvePool(table, "").pool).toBe("vip");
    expect(resolvePool(table, "other")).toEqual({ pool: "default", source: "default" });
  });

  it.each([
    ["an undefined pool", `{pools: {a: {}}, default_pool: a, tenants: {t: b}}`, "pool b is not defined"],
    ["an undefined default pool", `{pools: {a: {}}}`, "default_pool: default is not a defined pool"],
    ["a bad tenant id", `{pools: {default: {}}, tenants: {"a.b": default}}`, "invalid tenant id"],
    ["an unknown key", `{pools: {default: {replica: 2}}}`, "replica"],
    [
      "a handover without its source",
      `{pools: {default: {}, b: {}}, tenants: {t: {pool: b, state: handover}}}`,
      "('from')",
    ],
    ["a pool name Swarm cannot use", `{pools: {Default_Pool: {}}, default_pool: Default_Pool}`, "pool name"],
  ])("refuses %s", (_what, text, message) => {
    expect(() => loadPlacementTable(text)).toThrow(PlacementConfigError);
    expect(() => loadPlacementTable(text)).toThrow(message);
  });
});

describe("constraint generator (seed T14.4)", () => {
  it("generates node.labels.tenant_range==a-m from a tenant range", () => {
    expect(tenantRangeLabel({ from: "a", to: "m" })).toBe("a-m");
    expect(generateConstraints({ tenant_range: { from: "a", to: "m" } })).toContain(
      "node.labels.tenant_range==a-m",
    );
  });

  it("generates one sorted constraint per node label, then the hand-written ones", () => {
    expect(
      generateConstraints({ node_labels: { zone: "eu-1", pool: "big" }, constraints: ["node.role==worker"] }),
    ).toEqual(["node.labels.pool==big", "node.labels.zone==eu-1", "node.role==worker"]);
  });

  it("refuses labels that would not make one valid constraint", () => {
    expect(() => generateConstraints({ node_labels: { pool: "a b" } })).toThrow("label value");
    expect(() => generateConstraints({ node_labels: { "x=y": "a" } })).toThrow("label key");
    expect(() => generateConstraints({ constraints: ["node.labels.x=a"] })).toThrow("use '=='");
  });
});

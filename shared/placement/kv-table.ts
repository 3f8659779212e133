/**
 * The placement table as it lives in the `TENANT_PLACEMENT` KV bucket: one key per tenant entry
 * (`tenant.<tenant key>`), one per pool (`pool.<name>`) and `defaults`. One key per tenant lets a
 * move be one compare-and-set on that tenant alone.
 *
 * Every value is validated on its own. A value that fails (not JSON, wrong shape, a key that
 * names nothing) is ignored with a warning, as if the key were absent: the table is then a pure
 * function of the bucket's contents, so every worker (also one started later) builds the same
 * table from the same revision, and a garbage write can never stop a worker.
 */
import * as v from "valibot";
import { PlacementKey, placementPoolKey, placementTenantKey } from "../naming/index.ts";
import {
  DefaultPools,
  entryProblems,
  PoolDefinition,
  PoolName,
  TenantPlacement,
  type PlacementTable,
} from "./placement-table.ts";

const TENANT_KEY_RE = /^(?:_|[A-Za-z0-9][A-Za-z0-9_-]{0,63})$/;

/** The `defaults` value. */
export const PlacementDefaults = v.strictObject({ default_pool: DefaultPools });
export type PlacementDefaults = v.InferOutput<typeof PlacementDefaults>;

/** One validated value of the bucket. */
export type PlacementEntry =
  | { readonly kind: "tenant"; readonly tenant: string; readonly placement: TenantPlacement }
  | { readonly kind: "pool"; readonly pool: PoolName; readonly definition: PoolDefinition }
  | { readonly kind: "defaults"; readonly pools: readonly PoolName[] };

export type ParsedEntry = { ok: true; entry: PlacementEntry } | { ok: false; problem: string };

const decoder = new TextDecoder();

function issues(result: { issues?: readonly v.BaseIssue<unknown>[] | undefined }): string {
  return (result.issues ?? [])
    .map((i) => {
      const where = v.getDotPath(i);
      return where ? `${where}: ${i.message}` : i.message;
    })
    .join("; ");
}

/** Validates the value stored under `key` (bytes or text of JSON). */
export function parsePlacementEntry(key: string, value: Uint8Array | string): ParsedEntry {
  let data: unknown;
  try {
    data = JSON.parse(typeof value === "string" ? value : decoder.decode(value));
  } catch {
    return { ok: false, problem: `${key}: the value is not JSON` };
  }
  if (key === PlacementKey.Defaults) {
    const r = v.safeParse(PlacementDefaults, data);
    if (!r.success) return { ok: false, problem: `${key}: ${issues(r)}` };
    const pools = typeof r.output.default_pool === "string" ? [r.output.default_pool] : r.output.default_pool;
    return { ok: true, entry: { kind: "defaults", pools: [...new Set(pools)] } };
  }
  if (key.startsWith(PlacementKey.PoolPrefix)) {
    const pool = key.slice(PlacementKey.PoolPrefix.length);
    const name = v.safeParse(PoolName, pool);
    if (!name.success) return { ok: false, problem: `${key}: ${issues(name)}` };
    const r = v.safeParse(PoolDefinition, data);
    if (!r.success) return { ok: false, problem: `${key}: ${issues(r)}` };
    return { ok: true, entry: { kind: "pool", pool, definition: r.output } };
  }
  if (key.startsWith(PlacementKey.TenantPrefix)) {
    const tenant = key.slice(PlacementKey.TenantPrefix.length);
    if (!TENANT_KEY_RE.test(tenant)) return { ok: false, problem: `${key}: invalid tenant id` };
    const r = v.safeParse(TenantPlacement, data);
    if (!r.success) return { ok: false, problem: `${key}: ${issues(r)}` };
    const problems = entryProblems(tenant, r.output);
    if (problems.length > 0) return { ok: false, problem: `${key}: ${problems.join("; ")}` };
    return { ok: true, entry: { kind: "tenant", tenant, placement: r.output } };
  }
  return { ok: false, problem: `${key}: not a placement key (tenant.<id>, pool.<name> or defaults)` };
}

export interface BuiltTable {
  /** Undefined when the bucket holds no valid entry: then every pool serves every tenant. */
  readonly table: PlacementTable | undefined;
  readonly warnings: readonly string[];
}

/**
 * The table from the valid entries of the bucket. Without a `defaults` entry the default pool is
 * `default`. A pool named by `defaults` or by a tenant entry but not defined (or whose definition
 * is garbage) is taken with the default definition (weight 1), with a warning: losing a pool's
 * definition must not move its pinned tenants elsewhere.
 */
export function buildPlacementTable(entries: Iterable<PlacementEntry>): BuiltTable {
  const pools: Record<string, PoolDefinition> = {};
  const tenants: Record<string, TenantPlacement> = {};
  let defaults: readonly PoolName[] | undefined;
  let any = false;
  for (const e of entries) {
    any = true;
    if (e.kind === "pool") pools[e.pool] = e.definition;
    else if (e.kind === "tenant") tenants[e.tenant] = Object.freeze(e.placement);
    else defaults = e.pools;
  }
  if (!any) return { table: undefined, warnings: [] };
  const warnings: string[] = [];
  const defaultPools = defaults ?? ["default"];
  const fallback = v.parse(PoolDefinition, {});
  const need = (pool: string, by: string) => {
    if (Object.hasOwn(pools, pool)) return;
    pools[pool] = fallback;
    // The implicit `default` pool of a table without `defaults` is expected, not a problem.
    if (!(defaults === undefined && pool === "default" && by === "defaults")) {
      warnings.push(`pool ${pool} (named by ${by}) has no valid definition; using weight 1`);
    }
  };
  for (const pool of defaultPools) need(pool, "defaults");
  for (const [tenant, entry] of Object.entries(tenants)) {
    need(entry.pool, `tenant.${tenant}`);
    if (entry.from !== undefined) need(entry.from, `tenant.${tenant}`);
  }
  return {
    table: Object.freeze({
      version: 1,
      default_pools: Object.freeze([...defaultPools]),
      pools: Object.freeze(pools),
      tenants: Object.freeze(tenants),
    }),
    warnings,
  };
}

/** The bucket entries of a table (from a file such as `infra/swarm/pools.yaml`), for an import. */
export function placementEntriesOf(table: PlacementTable): Array<{ key: string; value: unknown }> {
  const out: Array<{ key: string; value: unknown }> = [];
  for (const [pool, definition] of Object.entries(table.pools)) {
    out.push({ key: placementPoolKey(pool), value: definition });
  }
  out.push({
    key: PlacementKey.Defaults,
    value: {
      default_pool: table.default_pools.length === 1 ? table.default_pools[0] : [...table.default_pools],
    },
  });
  for (const [tenant, placement] of Object.entries(table.tenants)) {
    out.push({ key: placementTenantKey(tenant), value: placement });
  }
  return out;
}

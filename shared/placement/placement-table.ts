/**
 * The tenant placement table: which worker pool serves which tenant. Pure data and functions;
 * where the table lives (the `TENANT_PLACEMENT` KV bucket, a local JSON/YAML fallback) and how a
 * move is carried out belong to the service. The same table drives the Swarm stack generator
 * (`infra/swarm/generate.ts`): one worker service per pool.
 *
 * Resolution: an explicit tenant entry wins (a pinned tenant stays where it is put); a tenant
 * without one goes to the default pool, or, when several default pools are listed, to one of
 * them by rendezvous hashing on the pools' weights.
 */
import * as v from "valibot";
import { parse as parseYaml } from "yaml";
import { rendezvousOwner } from "./rendezvous.ts";

/** Pool names become Swarm service names, NATS queue-group suffixes and label values. */
const POOL_NAME_RE = /^[a-z][a-z0-9-]{0,30}[a-z0-9]$|^[a-z]$/;
/** Tenant ids as CONTRACT.md §1 defines them; `_` is the default tenant, as in subjects. */
const TENANT_KEY_RE = /^(?:_|[A-Za-z0-9][A-Za-z0-9_-]{0,63})$/;

export const PoolName = v.pipe(
  v.string(),
  v.regex(POOL_NAME_RE, "pool name must match ^[a-z][a-z0-9-]*[a-z0-9]$, at most 32 characters"),
  // `aggregate-admin.all.<verb>` addresses every replica of every pool.
  v.check((name) => name !== "all", "pool name 'all' is reserved"),
);
export type PoolName = v.InferOutput<typeof PoolName>;

/** A tenant's placement lifecycle: `active`, or part-way through a move (`handover`, `draining`). */
export const PlacementState = v.picklist(["active", "handover", "draining"]);
export type PlacementState = v.InferOutput<typeof PlacementState>;

/** One worker pool. */
export const PoolDefinition = v.strictObject({
  /** Share of hashed tenants when the pool is one of several default pools. */
  weight: v.optional(v.pipe(v.number(), v.minValue(0.001), v.maxValue(1000)), 1),
  /** Worker replicas in the Swarm stack. */
  replicas: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(1000)), 2),
  /** Node labels the pool's workers need (`node.labels.<key>==<value>`). */
  node_labels: v.optional(v.record(v.string(), v.string()), {}),
  /** A seed-style tenant range the pool's nodes carry as `node.labels.tenant_range==<from>-<to>`. */
  tenant_range: v.optional(v.strictObject({ from: v.string(), to: v.string() })),
  /** Extra Swarm constraints written by hand, e.g. `node.role==worker`. */
  constraints: v.optional(v.array(v.string()), []),
  /** Per-replica resource limits for the stack. */
  resources: v.optional(
    v.strictObject({
      cpus: v.optional(
        v.pipe(v.string(), v.regex(/^\d+(\.\d+)?$/, "cpus is a decimal string such as '1.5'")),
      ),
      memory: v.optional(v.pipe(v.string(), v.regex(/^\d+[kmg]?b?$/i, "memory such as '512M'"))),
    }),
  ),
  /** Extra `AGGREGATE_*` environment for the pool's workers (e.g. a bigger cache). */
  env: v.optional(v.record(v.pipe(v.string(), v.regex(/^AGGREGATE_[A-Z0-9_]+$/)), v.string()), {}),
});
export type PoolDefinition = v.InferOutput<typeof PoolDefinition>;

/** An explicit tenant entry; `epoch` grows by one with every completed move. */
export const TenantPlacement = v.strictObject({
  pool: PoolName,
  state: v.optional(PlacementState, "active"),
  epoch: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1)), 1),
  /** The pool a `handover`/`draining` tenant is leaving. */
  from: v.optional(PoolName),
});
export type TenantPlacement = v.InferOutput<typeof TenantPlacement>;

/** The `default_pool` setting: one pool, or several equal pools sharing the unplaced tenants. */
export const DefaultPools = v.union([PoolName, v.pipe(v.array(PoolName), v.minLength(1))]);
export type DefaultPools = v.InferOutput<typeof DefaultPools>;

const TableShape = v.strictObject({
  version: v.optional(v.literal(1), 1),
  /** One pool, or several equal pools that share the tenants without an entry by weight. */
  default_pool: v.optional(DefaultPools, "default"),
  pools: v.pipe(
    v.record(PoolName, PoolDefinition),
    v.check((p) => Object.keys(p).length > 0, "define at least one pool"),
  ),
  /** `tenant: pool` shorthand, or a full entry. */
  tenants: v.optional(
    v.record(
      v.pipe(v.string(), v.regex(TENANT_KEY_RE, "invalid tenant id")),
      v.union([PoolName, TenantPlacement]),
    ),
    {},
  ),
});

/** The validated, normalised table: every tenant entry in full form, default pools as a list. */
export interface PlacementTable {
  readonly version: 1;
  readonly default_pools: readonly PoolName[];
  readonly pools: Readonly<Record<PoolName, PoolDefinition>>;
  readonly tenants: Readonly<Record<string, TenantPlacement>>;
}

export class PlacementConfigError extends Error {
  override readonly name = "PlacementConfigError";
}

/**
 * The checks of one tenant entry that need no other entry: an active entry names no source, a
 * moving one names a source other than its target. Returns the problems found.
 */
export function entryProblems(tenant: string, entry: TenantPlacement): string[] {
  const problems: string[] = [];
  if (entry.state === "active" && entry.from !== undefined) {
    problems.push(`tenants.${tenant}: an active entry has no 'from'`);
  }
  if (entry.state !== "active") {
    if (entry.from === undefined)
      problems.push(`tenants.${tenant}: a ${entry.state} entry names the pool it leaves ('from')`);
    else if (entry.from === entry.pool)
      problems.push(`tenants.${tenant}: 'from' and 'pool' are both ${entry.pool}`);
  }
  return problems;
}

/** Validates a parsed table (from KV, JSON or YAML) and normalises it. Throws PlacementConfigError. */
export function parsePlacementTable(input: unknown): PlacementTable {
  const result = v.safeParse(TableShape, input);
  if (!result.success) {
    const problems = result.issues.map((i) => {
      const where = v.getDotPath(i);
      return where ? `${where}: ${i.message}` : i.message;
    });
    throw new PlacementConfigError(`invalid placement table: ${problems.join("; ")}`);
  }
  const raw = result.output;
  const defaults = typeof raw.default_pool === "string" ? [raw.default_pool] : [...new Set(raw.default_pool)];
  const problems: string[] = [];
  for (const pool of defaults) {
    if (!(pool in raw.pools)) problems.push(`default_pool: ${pool} is not a defined pool`);
  }
  const tenants: Record<string, TenantPlacement> = {};
  for (const [tenant, value] of Object.entries(raw.tenants)) {
    const entry: TenantPlacement =
      typeof value === "string" ? { pool: value, state: "active", epoch: 1 } : value;
    if (!(entry.pool in raw.pools)) problems.push(`tenants.${tenant}: pool ${entry.pool} is not defined`);
    problems.push(...entryProblems(tenant, entry));
    if (entry.from !== undefined && entry.from !== entry.pool && !(entry.from in raw.pools))
      problems.push(`tenants.${tenant}: pool ${entry.from} is not defined`);
    tenants[tenant] = Object.freeze(entry);
  }
  if (problems.length > 0) throw new PlacementConfigError(`invalid placement table: ${problems.join("; ")}`);
  return Object.freeze({
    version: 1,
    default_pools: Object.freeze(defaults),
    pools: Object.freeze(raw.pools),
    tenants: Object.freeze(tenants),
  });
}

/** Parses a table from JSON or YAML text (YAML is a superset of JSON, so one parser reads both). */
export function loadPlacementTable(text: string): PlacementTable {
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (err) {
    throw new PlacementConfigError(`placement table is neither JSON nor YAML: ${String(err)}`, {
      cause: err,
    });
  }
  return parsePlacementTable(data);
}

/** Where a tenant goes, and why. */
export interface Resolution {
  readonly pool: PoolName;
  /** `pinned`: an explicit entry; `hashed`: rendezvous over several default pools; `default`: the one default pool. */
  readonly source: "pinned" | "hashed" | "default";
  readonly entry?: TenantPlacement;
}

/** The key of a tenant in the table: its id, or `_` for the default tenant (as in subjects). */
export function tenantKey(tenant: string): string {
  return tenant === "" ? "_" : tenant;
}

/** The pool that serves `tenant` (the target pool while a move is in progress). */
export function resolvePool(table: PlacementTable, tenant: string): Resolution {
  const key = tenantKey(tenant);
  const entry = Object.hasOwn(table.tenants, key) ? table.tenants[key] : undefined;
  if (entry) return { pool: entry.pool, source: "pinned", entry };
  if (table.default_pools.length === 1) return { pool: table.default_pools[0]!, source: "default" };
  const pool = rendezvousOwner(
    key,
    table.default_pools.map((id) => ({ id, weight: table.pools[id]!.weight })),
  )!;
  return { pool, source: "hashed" };
}

/**
 * `npm run placement -- <command>`: reads and writes the tenant placement table in the
 * TENANT_PLACEMENT bucket (compare-and-set on every write) and prints JSON on stdout.
 *
 *   list                               every pool, the defaults, every tenant entry (and ignored keys)
 *   pools                              pool definitions with their Swarm constraints
 *   get <tenant>                       a tenant's entry and the pool that answers it now
 *   set <tenant> <pool>                pin a tenant (active) - an immediate switch, no handover
 *   unset <tenant>                     remove a tenant's entry (it goes to the default pool(s))
 *   move <tenant> <pool>               the move protocol: handover, confirm, active (epoch + 1)
 *   pool-set <pool> [json]             define or change a pool (json: weight, replicas, node_labels, ...)
 *   defaults <pool> [pool...]          the default pool(s) of tenants without an entry
 *   import <file>                      write every pool, the defaults and every tenant of a table file
 *   constraints <pool>                 the Swarm placement constraints of a pool (ConstraintGenerator)
 *
 * Options: `--timeout-ms N` (move: how long to wait for the confirmation, default 30000),
 * `--grace-ms N` (move without AGGREGATE_ADMIN_TOKEN: how long to wait instead, default 15000).
 * The tenant `_` is the default tenant. Connection settings are the service's (AGGREGATE_NATS_URL,
 * AGGREGATE_NATS_USER/PASSWORD/CREDS; use the admin user), and so is AGGREGATE_PLACEMENT_BUCKET.
 *
 * Exit codes: 0 done; 1 the operation failed (a concurrent change, an unconfirmed move, NATS);
 * 2 a bad argument (unknown command, invalid tenant id or pool name, undefined pool).
 */
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect, credsAuthenticator } from "@nats-io/transport-node";
import * as v from "valibot";
import { confirmHandover } from "../admin/index.ts";
import { loadConfig } from "../config/index.ts";
import { parseTenantId } from "../contract/index.ts";
import { PlacementKey, placementPoolKey, placementTenantKey } from "../naming/index.ts";
import {
  answeringPool,
  buildPlacementTable,
  generateConstraints,
  loadPlacementTable,
  PlacementConfigError,
  placementEntriesOf,
  PoolDefinition,
  PoolName,
  resolvePool,
  tenantKey,
  type PlacementEntry,
} from "../placement/index.ts";
import {
  moveTenant,
  openPlacementBucket,
  openPlacementStore,
  PlacementWriteError,
  type PlacementStore,
} from "./index.ts";

/** A bad argument: exit code 2. */
class UsageError extends Error {
  override readonly name = "UsageError";
}

const USAGE =
  "usage: npm run placement -- list | pools | get <tenant> | set <tenant> <pool> | unset <tenant> | " +
  "move <tenant> <pool> [--timeout-ms N] [--grace-ms N] | pool-set <pool> [json] | defaults <pool>... | " +
  "import <file> | constraints <pool>";

function tenantArg(value: string | undefined): string {
  if (value === undefined) throw new UsageError(`a tenant id is required\n${USAGE}`);
  const tenant = value === "_" ? "" : parseTenantId(value);
  if (tenant === undefined || (tenant === "" && value !== "_")) {
    throw new UsageError(
      `invalid tenant id ${JSON.stringify(value)}: must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$ (or _ for the default tenant)`,
    );
  }
  return tenant;
}

function poolArg(value: string | undefined): string {
  if (value === undefined) throw new UsageError(`a pool name is required\n${USAGE}`);
  const r = v.safeParse(PoolName, value);
  if (!r.success) throw new UsageError(`invalid pool name ${JSON.stringify(value)}: ${r.issues[0].message}`);
  return r.output;
}

function numberOption(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const value = Number(args[i + 1]);
  if (!Number.isSafeInteger(value) || value < 0) throw new UsageError(`${name} needs a non-negative integer`);
  args.splice(i, 2);
  return value;
}

async function currentTable(store: PlacementStore) {
  const all = await store.list();
  const built = buildPlacementTable(
    all.map((s) => s.entry).filter((e): e is PlacementEntry => e !== undefined),
  );
  return { all, table: built.table, warnings: built.warnings };
}

/** Refuses a pool the table does not define (a typo would send tenants nowhere). */
async function requireDefinedPool(store: PlacementStore, pool: string): Promise<void> {
  const { table } = await currentTable(store);
  if (table && !Object.hasOwn(table.pools, pool)) {
    throw new UsageError(
      `pool ${pool} is not defined (pools: ${Object.keys(table.pools).join(", ")}); define it first with pool-set`,
    );
  }
}

async function run(
  store: PlacementStore,
  args: string[],
  adminToken: string | undefined,
  nc: NatsConnection,
): Promise<unknown> {
  const timeoutMs = numberOption(args, "--timeout-ms", 30_000);
  const graceMs = numberOption(args, "--grace-ms", 15_000);
  const [command, ...rest] = args;
  switch (command) {
    case "list": {
      const { all, table, warnings } = await currentTable(store);
      return {
        default_pool: table?.default_pools ?? [],
        pools: table?.pools ?? {},
        tenants: Object.fromEntries(
          all
            .filter((s) => s.entry?.kind === "tenant")
            .map((s) => [
              s.key.slice(PlacementKey.TenantPrefix.length),
              { ...(s.value as object), revision: s.revision },
            ]),
        ),
        ignored: Object.fromEntries(all.filter((s) => s.problem).map((s) => [s.key, s.problem])),
        warnings,
      };
    }
    case "pools": {
      const { table } = await currentTable(store);
      return {
        default_pool: table?.default_pools ?? [],
        pools: Object.fromEntries(
          Object.entries(table?.pools ?? {}).map(([name, def]) => [
            name,
            { ...def, constraints: generateConstraints(def) },
          ]),
        ),
      };
    }
    case "constraints": {
      const pool = poolArg(rest[0]);
      const { table } = await currentTable(store);
      const def = table?.pools[pool];
      if (!def) throw new UsageError(`pool ${pool} is not defined`);
      return { pool, constraints: generateConstraints(def) };
    }
    case "get": {
      const tenant = tenantArg(rest[0]);
      const { all, table } = await currentTable(store);
      const stored = all.find((s) => s.key === placementTenantKey(tenantKey(tenant)));
      const resolution = table ? resolvePool(table, tenant) : undefined;
      return {
        tenant_id: tenant,
        entry: stored?.value ?? null,
        revision: stored?.revision ?? 0,
        ...(stored?.problem ? { ignored: stored.problem } : {}),
        pool: resolution?.pool ?? null,
        source: resolution?.source ?? "no table: every pool answers",
        answering_pool: table ? (answeringPool(table, tenant) ?? null) : null,
      };
    }
    case "set": {
      const tenant = tenantArg(rest[0]);
      const pool = poolArg(rest[1]);
      await requireDefinedPool(store, pool);
      const key = placementTenantKey(tenantKey(tenant));
      const current = await store.get(key);
      const previous = current?.entry?.kind === "tenant" ? current.entry.placement : undefined;
      const entry = {
        pool,
        state: "active",
        epoch: previous ? previous.epoch + (previous.pool === pool ? 0 : 1) : 1,
      };
      const revision = await store.put(key, entry, current?.revision ?? 0);
      return { tenant_id: tenant, entry, revision };
    }
    case "unset": {
      const tenant = tenantArg(rest[0]);
      const key = placementTenantKey(tenantKey(tenant));
      const current = await store.get(key);
      if (!current) return { tenant_id: tenant, removed: false };
      await store.delete(key, current.revision);
      return { tenant_id: tenant, removed: true };
    }
    case "move": {
      const tenant = tenantArg(rest[0]);
      const to = poolArg(rest[1]);
      await requireDefinedPool(store, to);
      return moveTenant({
        store,
        tenant,
        to,
        confirm: async (revision, from, target) => {
          if (adminToken !== undefined) {
            return confirmHandover(nc, { token: adminToken, revision, tenant, from, to: target, timeoutMs });
          }
          // Without the admin endpoints nothing can be asked: wait long enough for every replica
          // to apply the revision and for the source pool's commands in flight to finish.
          await sleep(graceMs);
          return undefined;
        },
      });
    }
    case "pool-set": {
      const pool = poolArg(rest[0]);
      let definition: unknown = {};
      if (rest[1] !== undefined) {
        try {
          definition = JSON.parse(rest[1]);
        } catch {
          throw new UsageError("the pool definition must be JSON");
        }
      }
      const r = v.safeParse(PoolDefinition, definition);
      if (!r.success)
        throw new UsageError(`invalid pool definition: ${r.issues.map((i) => i.message).join("; ")}`);
      const key = placementPoolKey(pool);
      const current = await store.get(key);
      return { pool, definition, revision: await store.put(key, definition, current?.revision ?? 0) };
    }
    case "defaults": {
      if (rest.length === 0) throw new UsageError(`at least one pool is required\n${USAGE}`);
      const pools = rest.map(poolArg);
      for (const pool of pools) await requireDefinedPool(store, pool);
      const value = { default_pool: pools.length === 1 ? pools[0] : pools };
      const current = await store.get(PlacementKey.Defaults);
      return { ...value, revision: await store.put(PlacementKey.Defaults, value, current?.revision ?? 0) };
    }
    case "import": {
      if (rest[0] === undefined) throw new UsageError(`a file is required\n${USAGE}`);
      let table;
      try {
        table = loadPlacementTable(await readFile(rest[0], "utf8"));
      } catch (err) {
        if (err instanceof PlacementConfigError) throw new UsageError(err.message);
        throw err;
      }
      const written: Record<string, number> = {};
      for (const { key, value } of placementEntriesOf(table)) {
        const current = await store.get(key);
        written[key] = await store.put(key, value, current?.revision ?? 0);
      }
      return { written };
    }
    default:
      throw new UsageError(
        command === undefined ? USAGE : `unknown command ${JSON.stringify(command)}\n${USAGE}`,
      );
  }
}

async function main(args: string[]): Promise<number> {
  const config = loadConfig();
  if (config.natsUrls === undefined) throw new UsageError("set AGGREGATE_NATS_URL to the NATS server(s)");
  const nc = await connect({
    servers: [...config.natsUrls],
    name: "aggregate-placement-cli",
    ...(config.natsCreds
      ? { authenticator: credsAuthenticator(await readFile(config.natsCreds)) }
      : config.natsUser !== undefined
        ? { user: config.natsUser, pass: config.natsPassword }
        : {}),
  });
  try {
    const store = openPlacementStore(
      await openPlacementBucket(nc, config.placementBucket, { replicas: config.streamReplicas }),
    );
    const result = await run(store, [...args], config.adminToken, nc);
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return 0;
  } finally {
    await nc.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const code =
      err instanceof UsageError ? "UsageError" : err instanceof PlacementWriteError ? err.code : "Error";
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`${JSON.stringify({ error: { code, message } })}\n`);
    process.exitCode =
      err instanceof UsageError || (err instanceof PlacementWriteError && err.code === "invalid") ? 2 : 1;
  },
);

/**
 * Moving a tenant from one pool to another, with two compare-and-set writes:
 *
 * 1. `handover` (pool = target, from = source, epoch e): the target pool answers the tenant from
 *    the moment it applies this revision; the source pool drops the tenant's new requests and
 *    finishes the ones in flight.
 * 2. `confirm`: every replica has applied revision 1 and the source pool has nothing of the
 *    tenant in flight (the CLI asks every replica over the admin endpoints).
 * 3. `active` (pool = target, epoch e + 1): changes nobody's behaviour (see ownership.ts); it
 *    records that the move is complete and the source holds nothing of the tenant any more.
 *
 * Each write names the revision it read, so a concurrent change by someone else fails the move
 * instead of being overwritten. An interrupted move (a `handover` entry left behind) is finished
 * by running the same move again.
 */
import type { PoolName } from "../placement/index.ts";
import { buildPlacementTable, resolvePool, tenantKey, type PlacementEntry } from "../placement/index.ts";
import { placementTenantKey } from "../naming/index.ts";
import { PlacementWriteError, type PlacementStore } from "./store.ts";

export interface MoveOptions {
  readonly store: PlacementStore;
  /** The tenant id (`""` for the default tenant). */
  readonly tenant: string;
  readonly to: PoolName;
  /**
   * Waits until the `handover` revision is applied everywhere and the source pool has finished
   * the tenant's work in flight; resolves to an error message when it gives up.
   */
  readonly confirm: (revision: number, from: PoolName, to: PoolName) => Promise<string | undefined>;
}

export interface MoveResult {
  readonly tenant_id: string;
  readonly from: PoolName;
  readonly to: PoolName;
  /** False when the tenant already was active in `to`. */
  readonly moved: boolean;
  readonly epoch: number;
  /** The revisions written: handover, then active. */
  readonly revisions: readonly number[];
}

export async function moveTenant(options: MoveOptions): Promise<MoveResult> {
  const { store, tenant, to } = options;
  const key = placementTenantKey(tenantKey(tenant));
  const all = await store.list();
  const table = buildPlacementTable(
    all.map((s) => s.entry).filter((e): e is PlacementEntry => e !== undefined),
  ).table;
  if (table && !Object.hasOwn(table.pools, to)) {
    throw new PlacementWriteError(
      `pool ${to} is not defined (placement pools: ${Object.keys(table.pools).join(", ")})`,
      "invalid",
    );
  }
  const current = all.find((s) => s.key === key);
  const entry = current?.entry?.kind === "tenant" ? current.entry.placement : undefined;
  let from: PoolName;
  let epoch: number;
  let revision: number;
  const revisions: number[] = [];
  if (entry && entry.state !== "active") {
    if (entry.pool !== to) {
      throw new PlacementWriteError(
        `tenant ${JSON.stringify(tenant)} is being moved to ${entry.pool} (${entry.state}); finish that move first`,
        "conflict",
      );
    }
    // Resume an interrupted move.
    from = entry.from!;
    epoch = entry.epoch;
    revision = current!.revision;
  } else {
    from = entry?.pool ?? (table ? resolvePool(table, tenant).pool : to);
    epoch = entry?.epoch ?? 1;
    if (from === to) return { tenant_id: tenant, from, to, moved: false, epoch, revisions };
    revision = await store.put(key, { pool: to, state: "handover", from, epoch }, current?.revision ?? 0);
    revisions.push(revision);
  }
  const problem = await options.confirm(revision, from, to);
  if (problem !== undefined) {
    throw new PlacementWriteError(
      `the handover of ${JSON.stringify(tenant)} to ${to} is written (revision ${revision}) but not confirmed: ${problem}; run the move again to finish it`,
      "conflict",
    );
  }
  revisions.push(await store.put(key, { pool: to, state: "active", epoch: epoch + 1 }, revision));
  return { tenant_id: tenant, from, to, moved: true, epoch: epoch + 1, revisions };
}

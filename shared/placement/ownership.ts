/**
 * Which pool answers a tenant's request right now: the rule every worker applies to every
 * request it receives on `aggregate.<type>.submit|get` (each pool has its own queue group, so
 * every pool receives each request once). It is a pure function of the table, so two workers
 * holding the same table revision always agree, and exactly one pool answers.
 *
 * The move protocol (README "Tenant pools"), for a tenant going from pool A to pool B:
 *
 * | entry                                   | A                              | B            |
 * | --------------------------------------- | ------------------------------ | ------------ |
 * | `active`, pool A                        | answers                        | drops        |
 * | `handover`, pool B, from A, epoch e     | drops new, finishes in flight  | answers      |
 * | `active`, pool B, epoch e + 1           | drops                          | answers      |
 * | `draining`, pool B, from A (a pause)    | drops new, finishes in flight  | answers 503  |
 *
 * From `handover` on, A and B act exactly as they will once the entry is `active` in B: the
 * second write changes nobody's behaviour, so it cannot open a gap or an overlap. Only the first
 * write changes two pools at once, and they see it a watch delivery apart.
 *
 * Non-owners drop a request silently, never with an error reply: an error from a pool that did
 * not apply a command, racing the success of the pool that did, would tell the caller "refused"
 * for a command that was applied. The one exception is the pause: no pool applies the tenant's
 * commands then, so its target pool (and only it) answers 503 instead of leaving callers to time out.
 */
import { resolvePool, type PlacementTable, type PoolName } from "./placement-table.ts";

/** Why a worker answers or drops a tenant's request. */
export const OwnershipReason = {
  /** No placement table at all: every pool answers every tenant (a single-pool deployment). */
  Unplaced: "unplaced",
  /** The tenant's pool (pinned, default or hashed) is this one. */
  Owner: "owner",
  /** Another pool owns the tenant. */
  NotOwner: "not-owner",
  /** The tenant is leaving this pool (`handover`/`draining`): in-flight work finishes, new work is dropped. */
  Leaving: "leaving",
  /** The tenant is paused (`draining`) and this pool is its target: nothing is taken until `active`. */
  Paused: "paused",
} as const;
export type OwnershipReason = (typeof OwnershipReason)[keyof typeof OwnershipReason];

export interface OwnershipDecision {
  readonly serve: boolean;
  readonly reason: OwnershipReason;
  /** The pool that answers the tenant now; undefined while it is paused or without a table. */
  readonly owner: PoolName | undefined;
}

/** The pool answering `tenant` now: the entry's target unless it is paused (`draining`). */
export function answeringPool(table: PlacementTable, tenant: string): PoolName | undefined {
  const r = resolvePool(table, tenant);
  return r.entry?.state === "draining" ? undefined : r.pool;
}

/** Whether the workers of `pool` answer `tenant`'s requests under `table` (undefined: no table). */
export function decideOwnership(
  table: PlacementTable | undefined,
  tenant: string,
  pool: string,
): OwnershipDecision {
  if (table === undefined) return { serve: true, reason: OwnershipReason.Unplaced, owner: undefined };
  const r = resolvePool(table, tenant);
  const owner = r.entry?.state === "draining" ? undefined : r.pool;
  if (owner === pool) return { serve: true, reason: OwnershipReason.Owner, owner };
  if (r.entry?.from === pool) return { serve: false, reason: OwnershipReason.Leaving, owner };
  if (r.pool === pool) return { serve: false, reason: OwnershipReason.Paused, owner };
  return { serve: false, reason: OwnershipReason.NotOwner, owner };
}

/**
 * Tenant placement, the pure part: rendezvous hashing, the placement table and its validation
 * (as a file and as KV entries), which pool answers a tenant (ownership, the move protocol), and
 * Swarm placement constraints (generation and syntax check). No NATS, no I/O.
 */
export {
  hash53,
  rendezvousOwner,
  rendezvousRank,
  rendezvousScore,
  type WeightedCandidate,
} from "./rendezvous.ts";
export {
  DefaultPools,
  entryProblems,
  loadPlacementTable,
  parsePlacementTable,
  PlacementConfigError,
  PlacementState,
  PoolDefinition,
  PoolName,
  resolvePool,
  TenantPlacement,
  tenantKey,
  type PlacementTable,
  type Resolution,
} from "./placement-table.ts";
export { answeringPool, decideOwnership, OwnershipReason, type OwnershipDecision } from "./ownership.ts";
export {
  buildPlacementTable,
  parsePlacementEntry,
  PlacementDefaults,
  placementEntriesOf,
  type BuiltTable,
  type ParsedEntry,
  type PlacementEntry,
} from "./kv-table.ts";
export {
  checkConstraint,
  generateConstraints,
  nodeLabelConstraint,
  tenantRangeLabel,
  type ConstraintSource,
  type TenantRange,
} from "./constraints.ts";

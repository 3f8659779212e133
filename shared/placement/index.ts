/**
 * Tenant placement, the pure part: rendezvous hashing, the placement table and its validation,
 * and Swarm placement constraints (generation and syntax check). No NATS, no I/O.
 */
export {
  hash53,
  rendezvousOwner,
  rendezvousRank,
  rendezvousScore,
  type WeightedCandidate,
} from "./rendezvous.ts";
export {
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
export {
  checkConstraint,
  generateConstraints,
  nodeLabelConstraint,
  tenantRangeLabel,
  type ConstraintSource,
  type TenantRange,
} from "./constraints.ts";

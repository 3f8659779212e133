/**
 * Every NATS subject, stream name, KV key and message id the service builds comes from this
 * module, and only from validated ids: the branded types guarantee that no `.`, `*`, `>` or
 * whitespace can reach a subject.
 */
import {
  tenantToken,
  type AggregateId,
  type AggregateType,
  type CommandId,
  type TenantId,
} from "../contract/index.ts";

/** Default stream and bucket names (CONTRACT.md §3, §4). */
export const DEFAULT_STREAM = "AGGREGATE_EVENTS";
export const DEFAULT_BUCKET = "AGGREGATE_SNAPSHOTS";
/** Default KV bucket of the tenant placement table (which worker pool serves which tenant). */
export const DEFAULT_PLACEMENT_BUCKET = "TENANT_PLACEMENT";
/** The worker pool of a worker that names none (`AGGREGATE_POOL`). */
export const DEFAULT_POOL = "default";

/** The subjects the events stream must cover. */
export const STREAM_SUBJECTS = "tenant.*.aggregate.*.*";

/** Headers the service writes on each commit message. */
export const CommitHeader = {
  MsgId: "Nats-Msg-Id",
  ExpectedLastSubjectSeq: "Nats-Expected-Last-Subject-Sequence",
  Version: "Aggregate-Version",
  CommandHash: "Aggregate-Command-Hash",
  Program: "Aggregate-Program",
  /**
   * Stream sequences of the aggregate's commits just before this one, newest first (at most 16): lets a reader fetch an aggregate's recent commits by sequence, in parallel,
   * instead of scanning the stream for its subject.
   */
  PreviousSeqs: "Aggregate-Previous-Seqs",
  CorrelationId: "x-correlation-id",
  TraceParent: "traceparent",
  TraceState: "tracestate",
} as const;

/**
 * Set on a request a worker forwarded to the owning pool, naming the forwarding pool. For logs
 * only: what makes a request "forwarded" is the subject it arrives on (`poolForwardSubject`),
 * which only workers may publish to; a header anyone can set.
 */
export const ForwardedHeader = "Aggregate-Forwarded-By";

/** Request headers read by the endpoints. */
export const RequestHeader = {
  TenantId: "x-tenant-id",
  CorrelationId: "x-correlation-id",
  TraceParent: "traceparent",
  TraceState: "tracestate",
} as const;

/** The subject of one aggregate's commits: `tenant.<token>.aggregate.<type>.<id>`. */
export function aggregateSubject(tenant: TenantId, type: AggregateType, id: AggregateId): string {
  return `tenant.${tenantToken(tenant)}.aggregate.${type}.${id}`;
}

/** All subjects of one tenant, for listing and for per-tenant read permissions. */
export function tenantSubjects(tenant: TenantId): string {
  return `tenant.${tenantToken(tenant)}.>`;
}

/** The `Nats-Msg-Id` of a command's commit: unique per tenant, type, aggregate and command. */
export function commitMsgId(
  tenant: TenantId,
  type: AggregateType,
  id: AggregateId,
  command: CommandId,
): string {
  return `${tenantToken(tenant)}.${type}.${id}.${command}`;
}

/** The KV key of an aggregate's snapshot: `<token>.<type>.<id>`. */
export function snapshotKey(tenant: TenantId, type: AggregateType, id: AggregateId): string {
  return `${tenantToken(tenant)}.${type}.${id}`;
}

/** The NATS micro service name of an aggregate type. */
export function serviceName(type: AggregateType): string {
  return `aggregate-${type}`;
}

/** Endpoint subjects of an aggregate type's service. */
export function endpointSubject(type: AggregateType, verb: "submit" | "get" | "query" | "watch"): string {
  return `aggregate.${type}.${verb}`;
}

/**
 * Where a tenant's watch notifications go: every delivery subject starts with this prefix, which
 * lies inside `tenant.<token>.>` (what a tenant's reader may subscribe to, so NATS enforces the
 * isolation) and outside the events stream's `tenant.*.aggregate.*.*`.
 */
export function watchPrefix(tenant: TenantId): string {
  return `tenant.${tenantToken(tenant)}.watch.`;
}

/** The default delivery subject of a watch: `tenant.<token>.watch.<type>.<subscription id>`. */
export function watchSubject(tenant: TenantId, type: AggregateType, subscriptionId: string): string {
  return `${watchPrefix(tenant)}${type}.${subscriptionId}`;
}

/** Verbs a client sends to one watch it holds. */
export const WatchVerb = { Renew: "renew", Cancel: "cancel" } as const;
export type WatchVerb = (typeof WatchVerb)[keyof typeof WatchVerb];

/**
 * The control subject of one watch, `aggregate.<type>.watch.<subscription id>.<verb>`: only the
 * replica holding the watch subscribes, so a watch that is gone answers "no responders".
 */
export function watchControlSubject(type: AggregateType, subscriptionId: string, verb: WatchVerb): string {
  return `aggregate.${type}.watch.${subscriptionId}.${verb}`;
}

/** Subscription covering every control subject of one watch. */
export function watchControlSubjects(type: AggregateType, subscriptionId: string): string {
  return `aggregate.${type}.watch.${subscriptionId}.*`;
}

/**
 * Where a replica that does not project a type (PostgreSQL: another replica holds the projector
 * lock) forwards a watch request: only the projecting replica subscribes, since only it sees the
 * changes.
 */
export function watchForwardSubject(type: AggregateType): string {
  return `aggregate.${type}.watch.projector`;
}

/**
 * Where a worker forwards a request that came to its pool's own subject for a tenant another pool
 * owns: `aggregate.<type>.<verb>.<pool>.forwarded`. The owning pool serves what arrives here
 * whatever its own table says, so a request is forwarded at most once. Gateways cannot publish
 * here (their permission `aggregate.*.submit.*` covers one token less), so they cannot skip routing.
 */
export function poolForwardSubject(type: AggregateType, verb: "submit" | "get", pool: string): string {
  return `aggregate.${type}.${verb}.${pool}.forwarded`;
}

/**
 * A pool's own subject for an endpoint, `aggregate.<type>.<verb>.<pool>`: what a gateway that
 * reads the placement table may send to directly (one hop, one pool). Pool names are validated
 * (`^[a-z][a-z0-9-]*$`) before they reach here.
 */
export function poolEndpointSubject(type: AggregateType, verb: "submit" | "get", pool: string): string {
  return `aggregate.${type}.${verb}.${pool}`;
}

/**
 * The queue group of a pool's workers on an aggregate type's endpoints, `q-<type>-<pool>`.
 * Every pool subscribes `aggregate.<type>.submit` in its own group, so each pool receives every
 * request once and the placement table decides which one answers. The `default` pool keeps the
 * @nats-io/services default group `q`, which workers without pools used: during a rolling update
 * old and new workers then share one group instead of both answering.
 */
export function poolQueueGroup(type: AggregateType, pool: string): string {
  return pool === DEFAULT_POOL ? "q" : `q-${type}-${pool}`;
}

/** The NATS micro service of the admin endpoints (no queue group: every replica answers). */
export const ADMIN_SERVICE = "aggregate-admin";

/** Admin verbs served over NATS beside the per-replica HTTP routes. */
export const AdminVerb = {
  Status: "status",
  Reload: "reload",
  Drain: "drain",
  Undrain: "undrain",
} as const;
export type AdminVerb = (typeof AdminVerb)[keyof typeof AdminVerb];

/** `aggregate-admin.<target>.<verb>`, where the target is a pool name or `all` (every replica). */
export function adminSubject(target: string, verb: AdminVerb): string {
  return `${ADMIN_SERVICE}.${target}.${verb}`;
}

/** Keys of the placement bucket: `tenant.<tenant key>`, `pool.<pool>` and `defaults`. */
export const PlacementKey = {
  TenantPrefix: "tenant.",
  PoolPrefix: "pool.",
  Defaults: "defaults",
} as const;

/**
 * The placement key of a tenant entry from the tenant's token (its id, `_` for the default
 * tenant, as in subjects; see `tenantToken`), validated by the caller.
 */
export function placementTenantKey(token: string): string {
  return `${PlacementKey.TenantPrefix}${token}`;
}

/** The placement key of a pool definition (the name is validated by the caller). */
export function placementPoolKey(pool: string): string {
  return `${PlacementKey.PoolPrefix}${pool}`;
}

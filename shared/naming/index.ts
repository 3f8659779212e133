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

/** The subjects the events stream must cover. */
export const STREAM_SUBJECTS = "tenant.*.aggregate.*.*";

/** Headers the service writes on each commit message. */
export const CommitHeader = {
  MsgId: "Nats-Msg-Id",
  ExpectedLastSubjectSeq: "Nats-Expected-Last-Subject-Sequence",
  Version: "Aggregate-Version",
  CommandHash: "Aggregate-Command-Hash",
  Program: "Aggregate-Program",
  CorrelationId: "x-correlation-id",
  TraceParent: "traceparent",
  TraceState: "tracestate",
} as const;

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

import * as v from "valibot";

/**
 * Identifier rules of CONTRACT.md §1. Every id is checked here before it can reach a subject,
 * a KV key or a header: `.`, `*`, `>`, whitespace, CR and LF never pass.
 */

const TENANT_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const AGGREGATE_TYPE_RE = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** A tenant id; `""` is the default tenant (non-multi-tenant mode). */
export const TenantId = v.pipe(
  v.string(),
  v.check(
    (s) => s === "" || TENANT_ID_RE.test(s),
    "tenant id must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$ or be empty",
  ),
  v.brand("TenantId"),
);
export type TenantId = v.InferOutput<typeof TenantId>;

/** The default tenant. */
export const DEFAULT_TENANT = "" as TenantId;

/** The token that stands for a tenant in subjects and keys: the id itself, `_` for the empty tenant. */
export function tenantToken(tenant: TenantId): string {
  return tenant === "" ? "_" : tenant;
}

/** An aggregate type name, e.g. `account` or `bank-account`. */
export const AggregateType = v.pipe(
  v.string(),
  v.regex(AGGREGATE_TYPE_RE, "aggregate type must match ^[A-Za-z][A-Za-z0-9_-]{0,63}$"),
  v.brand("AggregateType"),
);
export type AggregateType = v.InferOutput<typeof AggregateType>;

const Uuid = (what: string) =>
  v.pipe(
    v.string(),
    v.regex(UUID_RE, `${what} must be a UUID in canonical 8-4-4-4-12 form`),
    v.toLowerCase(),
  );

/** An aggregate id: a UUID, lower-cased on input. */
export const AggregateId = v.pipe(Uuid("aggregate id"), v.brand("AggregateId"));
export type AggregateId = v.InferOutput<typeof AggregateId>;

/** A command id: a UUID, lower-cased on input; the idempotency key. */
export const CommandId = v.pipe(Uuid("command id"), v.brand("CommandId"));
export type CommandId = v.InferOutput<typeof CommandId>;

/** An aggregate version: the number of events applied; 0 before the first event. */
export const Version = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(Number.MAX_SAFE_INTEGER));
export type Version = v.InferOutput<typeof Version>;

/** Parses a value as `schema` or returns undefined; for trusted internal call sites. */
export function isValid<S extends v.GenericSchema>(schema: S, value: unknown): value is v.InferOutput<S> {
  return v.is(schema, value);
}

export function parseTenantId(value: string): TenantId | undefined {
  const r = v.safeParse(TenantId, value);
  return r.success ? r.output : undefined;
}
export function parseAggregateType(value: string): AggregateType | undefined {
  const r = v.safeParse(AggregateType, value);
  return r.success ? r.output : undefined;
}
export function parseAggregateId(value: string): AggregateId | undefined {
  const r = v.safeParse(AggregateId, value);
  return r.success ? r.output : undefined;
}
export function parseCommandId(value: string): CommandId | undefined {
  const r = v.safeParse(CommandId, value);
  return r.success ? r.output : undefined;
}

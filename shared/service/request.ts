/**
 * The edge: turns a NATS request (headers + body) into a validated Command. Nothing from the
 * request reaches a subject, key or header before it has passed through here.
 */
import { hash } from "node:crypto";
import * as v from "valibot";
import {
  GetRequest,
  InvalidTenantId,
  SubmitRequest,
  TenantAccessDenied,
  ValidationError,
  parseTenantId,
  type AggregateId,
  type AggregateType,
  type Command,
  type CommandId,
  type JsonValue,
  type TenantId,
} from "../contract/index.ts";
import type { AggregateRef } from "../aggregate/index.ts";
import { RequestHeader } from "../naming/index.ts";

/** Header access as the edge needs it: every value of a header, name matched case-insensitively. */
export interface RequestHeaders {
  values(name: string): string[];
}

export interface RequestPolicy {
  readonly multiTenancy: "optional" | "required";
  /** Tenant used when the header is absent or empty (optional multi-tenancy only). */
  readonly defaultTenant: TenantId;
  /** A new UUID v7. */
  readonly newId: () => string;
}

const decoder = new TextDecoder("utf-8", { fatal: true });
const TRACEPARENT_RE = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const HEADER_SAFE_RE = /^[\x21-\x7e]{1,128}$/;
const TRACESTATE_RE = /^[\x20-\x7e]{0,512}$/;

/** The tenant of a request, from `x-tenant-id` (CONTRACT.md §2 "Request headers"). */
export function resolveTenant(headers: RequestHeaders | undefined, policy: RequestPolicy): TenantId {
  const values = headers?.values(RequestHeader.TenantId) ?? [];
  if (values.length > 1) throw new InvalidTenantId("x-tenant-id was sent more than once");
  const raw = values[0] ?? "";
  if (raw === "") {
    if (policy.multiTenancy === "required") {
      throw new InvalidTenantId("x-tenant-id is required (multi-tenancy is required)");
    }
    return policy.defaultTenant;
  }
  const tenant = parseTenantId(raw);
  if (tenant === undefined || tenant === "") {
    throw new InvalidTenantId(
      `invalid x-tenant-id ${quote(raw)}: must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`,
    );
  }
  return tenant;
}

/** Parses and validates the body and headers of `aggregate.<type>.submit`. */
export function parseSubmit(
  type: AggregateType,
  headers: RequestHeaders | undefined,
  body: Uint8Array,
  policy: RequestPolicy,
): Command {
  const tenant = resolveTenant(headers, policy);
  const request = parseBody(SubmitRequest, body);
  checkBodyTenant(request.tenant_id, tenant);
  if (request.aggregate_type !== undefined && request.aggregate_type !== type) {
    throw new ValidationError(
      `aggregate_type ${quote(request.aggregate_type)} does not match the subject's type ${quote(type)}`,
    );
  }
  const commandId = request.command_id ?? (policy.newId() as CommandId);
  const trace = traceContext(headers);
  return {
    tenant_id: tenant,
    aggregate_type: type,
    aggregate_id: request.aggregate_id ?? (commandId as string as AggregateId),
    command_id: commandId,
    expected_version: request.expected_version,
    payload: request.payload as Command["payload"],
    payload_hash: payloadHash(request.payload),
    metadata: request.metadata ?? {},
    correlation_id: correlationId(headers, policy),
    traceparent: trace.traceparent,
    tracestate: trace.tracestate,
  };
}

/** Parses and validates the body and headers of `aggregate.<type>.get`. */
export function parseGet(
  type: AggregateType,
  headers: RequestHeaders | undefined,
  body: Uint8Array,
  policy: RequestPolicy,
): AggregateRef {
  const tenant = resolveTenant(headers, policy);
  const request = parseBody(GetRequest, body);
  checkBodyTenant(request.tenant_id, tenant);
  return { tenant_id: tenant, aggregate_type: type, aggregate_id: request.aggregate_id };
}

/** A digest of the payload that does not depend on key order: tells a retry from a reused id. */
export function payloadHash(payload: JsonValue): string {
  // One-shot `hash` (Node 20.12+): no Hash object per command.
  return hash("sha256", canonicalJson(payload), "base64url");
}

/** JSON with object keys sorted; input depth is bounded by validation. */
export function canonicalJson(value: JsonValue): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k]!)}`).join(",")}}`;
}

function parseBody<S extends v.GenericSchema>(schema: S, body: Uint8Array): v.InferOutput<S> {
  return parseJsonBody(schema, body);
}

/**
 * A request body as `schema` says, or ValidationError naming the first problems by path. An empty
 * body is an error unless `empty` gives what it stands for (e.g. `{}` where every field is optional).
 */
export function parseJsonBody<S extends v.GenericSchema>(
  schema: S,
  body: Uint8Array,
  what = "request",
  empty?: unknown,
): v.InferOutput<S> {
  let json: unknown = empty;
  if (body.length === 0) {
    if (empty === undefined) {
      throw new ValidationError("the request body is empty; a JSON object is required");
    }
  } else {
    json = parseJsonText(body);
  }
  const result = v.safeParse(schema, json);
  if (!result.success) {
    const problems = result.issues.slice(0, 5).map((issue) => {
      const path = v.getDotPath(issue);
      return path ? `${path}: ${issue.message}` : issue.message;
    });
    throw new ValidationError(`invalid ${what}: ${problems.join("; ")}`, { issues: problems });
  }
  return result.output;
}

function parseJsonText(body: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(body));
  } catch (err) {
    throw new ValidationError(`the request body is not valid JSON: ${(err as Error).message}`);
  }
}

function checkBodyTenant(bodyTenant: string | undefined, tenant: TenantId): void {
  if (bodyTenant === undefined || bodyTenant === tenant) return;
  if (parseTenantId(bodyTenant) === undefined) {
    throw new InvalidTenantId(`invalid tenant_id ${quote(bodyTenant)} in the body`);
  }
  throw new TenantAccessDenied("the body's tenant_id differs from the x-tenant-id header", {
    tenant_id: tenant,
  });
}

function correlationId(headers: RequestHeaders | undefined, policy: RequestPolicy): string {
  const values = headers?.values(RequestHeader.CorrelationId) ?? [];
  if (values.length > 1) throw new ValidationError("x-correlation-id was sent more than once");
  const value = values[0];
  if (value === undefined || value === "") return policy.newId();
  if (!HEADER_SAFE_RE.test(value)) {
    throw new ValidationError("x-correlation-id must be 1 to 128 printable ASCII characters without spaces");
  }
  return value;
}

/** W3C trace context; an invalid traceparent is dropped (with its tracestate), as the spec says. */
function traceContext(headers: RequestHeaders | undefined): { traceparent?: string; tracestate?: string } {
  const parent = headers?.values(RequestHeader.TraceParent) ?? [];
  if (parent.length !== 1 || !TRACEPARENT_RE.test(parent[0]!)) return {};
  const traceparent = parent[0]!;
  const state = headers?.values(RequestHeader.TraceState) ?? [];
  const tracestate = state.join(",");
  return tracestate !== "" && TRACESTATE_RE.test(tracestate) ? { traceparent, tracestate } : { traceparent };
}

function quote(value: string): string {
  const shown = value.length > 80 ? `${value.slice(0, 80)}...` : value;
  return JSON.stringify(shown);
}

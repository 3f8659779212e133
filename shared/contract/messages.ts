import * as v from "valibot";
import type { AggregateType, TenantId } from "./ids.ts";
import { AggregateId, CommandId, Version } from "./ids.ts";
import { isPlainObject, jsonDepthExceeds, type JsonObject, type JsonValue } from "./json.ts";

/** Deepest nesting accepted in a command's payload or metadata. */
export const MAX_JSON_DEPTH = 64;

const JsonObjectSchema = (what: string) =>
  v.custom<JsonObject>(
    (input) => isPlainObject(input) && !jsonDepthExceeds(input, MAX_JSON_DEPTH),
    `${what} must be a JSON object nested at most ${MAX_JSON_DEPTH} deep`,
  );

/** A command payload: an object with a non-empty string `type`; everything else is the program's business. */
export const CommandPayload = v.pipe(
  JsonObjectSchema("payload"),
  v.check(
    (p) => typeof p["type"] === "string" && p["type"].length > 0 && p["type"].length <= 256,
    'payload must have a string "type" of 1 to 256 characters',
  ),
);
export type CommandPayload = JsonObject & { type: string };

/**
 * The body of `aggregate.<type>.submit` (CONTRACT.md §2). Unknown keys are refused so that a typo
 * such as `expected_verison` is a 400, not a silently ignored condition.
 */
export const SubmitRequest = v.strictObject({
  command_id: v.optional(CommandId),
  aggregate_id: v.optional(AggregateId),
  tenant_id: v.optional(v.string()),
  aggregate_type: v.optional(v.string()),
  expected_version: v.optional(Version),
  payload: CommandPayload,
  metadata: v.optional(JsonObjectSchema("metadata")),
});
export type SubmitRequest = v.InferOutput<typeof SubmitRequest>;

/** The body of `aggregate.<type>.get`. */
export const GetRequest = v.strictObject({
  aggregate_id: AggregateId,
  tenant_id: v.optional(v.string()),
});
export type GetRequest = v.InferOutput<typeof GetRequest>;

/** A command after validation at the edge: every id resolved and checked. */
export interface Command {
  readonly tenant_id: TenantId;
  readonly aggregate_type: AggregateType;
  readonly aggregate_id: AggregateId;
  readonly command_id: CommandId;
  readonly expected_version?: Version | undefined;
  readonly payload: CommandPayload;
  /** Digest of the payload, to tell a retry from a reused command id. */
  readonly payload_hash: string;
  readonly metadata: JsonObject;
  readonly correlation_id: string;
  readonly traceparent?: string | undefined;
  readonly tracestate?: string | undefined;
}

/** An event envelope as stored and replied (CONTRACT.md §3). */
export const Event = v.object({
  tenant_id: v.string(),
  event_id: v.string(),
  aggregate_id: v.string(),
  aggregate_type: v.string(),
  version: Version,
  event_type: v.string(),
  payload: v.custom<JsonObject>(isPlainObject),
  command_id: v.string(),
  correlation_id: v.string(),
  timestamp: v.string(),
  metadata: v.custom<JsonObject>(isPlainObject),
});
export type Event = v.InferOutput<typeof Event>;

/** The body of one stream message: one command's events, appended together. */
export const Commit = v.object({
  command_id: v.string(),
  events: v.pipe(v.array(Event), v.minLength(1)),
});
export type Commit = v.InferOutput<typeof Commit>;

/** A command id the aggregate has applied, kept for idempotency beyond the stream's duplicate window. */
export const AppliedCommand = v.object({
  command_id: v.string(),
  payload_hash: v.string(),
  /** The aggregate's version after the command. */
  version: Version,
  /** The stream sequence of the command's commit. */
  stream_seq: v.pipe(v.number(), v.integer(), v.minValue(1)),
});
export type AppliedCommand = v.InferOutput<typeof AppliedCommand>;

/** A snapshot as stored in KV (CONTRACT.md §4). */
export const Snapshot = v.object({
  tenant_id: v.string(),
  aggregate_id: v.string(),
  aggregate_type: v.string(),
  version: Version,
  stream_seq: v.pipe(v.number(), v.integer(), v.minValue(0)),
  state: v.custom<JsonValue>(() => true),
  created_at: v.string(),
  /** Recent command ids, newest last, for idempotency after restarts. */
  recent_commands: v.optional(v.array(AppliedCommand), []),
  /** Content hash of the apply program that produced `state`. */
  program: v.optional(v.string()),
});
export type Snapshot = v.InferOutput<typeof Snapshot>;

/** The success reply of `aggregate.<type>.submit`. */
export interface SubmitReply {
  tenant_id: string;
  aggregate_type: string;
  aggregate_id: string;
  command_id: string;
  version: number;
  stream_seq?: number;
  correlation_id: string;
  duplicate: boolean;
  events: Event[];
}

/** The success reply of `aggregate.<type>.get`. */
export interface GetReply {
  tenant_id: string;
  aggregate_type: string;
  aggregate_id: string;
  version: number;
  state: JsonValue;
}

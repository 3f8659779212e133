/**
 * Assertions on the service's replies, written against CONTRACT.md §2 (not against the source):
 * the subjects are the contract's literal subjects, and an error reply must carry both error
 * headers and exactly the `{"error": {"code", "message"}}` body.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { expect } from "vitest";
import type { Reply } from "./service.ts";

export const SUBMIT = "aggregate.bank-account.submit";
export const GET = "aggregate.bank-account.get";
export const STREAM = "AGGREGATE_EVENTS";
export const BUCKET = "AGGREGATE_SNAPSHOTS";

/** A canonical, lower-case UUID (8-4-4-4-12). */
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The event envelope of CONTRACT.md §3 as the tests read it. */
export interface EventEnvelope {
  tenant_id: string;
  event_id: string;
  aggregate_id: string;
  aggregate_type: string;
  version: number;
  event_type: string;
  payload: Record<string, unknown>;
  command_id: string;
  correlation_id: string;
  timestamp: string;
  metadata: Record<string, unknown>;
}

/** The success reply of `submit` (CONTRACT.md §2). */
export interface SubmitBody {
  tenant_id: string;
  aggregate_type: string;
  aggregate_id: string;
  command_id: string;
  version: number;
  stream_seq?: number;
  correlation_id: string;
  duplicate: boolean;
  events: EventEnvelope[];
}

/** The success reply of `get`. */
export interface GetBody {
  tenant_id: string;
  aggregate_type: string;
  aggregate_id: string;
  version: number;
  state: Record<string, unknown>;
}

/** Asserts a success reply (no error headers) and returns its body. */
export function expectOk<T = SubmitBody>(reply: Reply): T {
  if (reply.status !== undefined) {
    expect.fail(`expected a success reply, got ${reply.status} ${brief(reply.body)}`);
  }
  expect(reply.msg.headers?.get("Nats-Service-Error-Code") ?? "").toBe("");
  expect(reply.msg.headers?.get("Nats-Service-Error") ?? "").toBe("");
  return reply.body as T;
}

/**
 * Asserts an error reply: `Nats-Service-Error-Code: <status>`, a one-line `Nats-Service-Error`,
 * and a body that is exactly `{"error": {"code", "message"}}`.
 */
export function expectError(
  reply: Reply,
  status: number,
  code: string,
  message?: string | RegExp,
): { code: string; message: string } {
  expect(reply.status, `reply body: ${brief(reply.body)}`).toBe(status);
  expect(reply.msg.headers?.get("Nats-Service-Error-Code")).toBe(String(status));
  const header = reply.errorHeader ?? "";
  expect(header.length).toBeGreaterThan(0);
  expect(header).not.toMatch(/[\r\n]/);
  expect(Object.keys(reply.body)).toEqual(["error"]);
  const error = reply.body["error"] as { code: string; message: string };
  expect(Object.keys(error).sort()).toEqual(["code", "message"]);
  expect(error.code).toBe(code);
  expect(typeof error.message).toBe("string");
  expect(error.message.length).toBeGreaterThan(0);
  if (typeof message === "string") expect(error.message).toBe(message);
  else if (message) expect(error.message).toMatch(message);
  return error;
}

/** A reply body for a failure message, cut short: some bodies are a megabyte. */
export function brief(value: unknown, max = 400): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > max ? `${text.slice(0, max)}… (${text.length} chars)` : text;
}

/** Every subject the stream holds messages on, with its message count. */
export async function streamSubjects(nc: NatsConnection, stream = STREAM): Promise<Record<string, number>> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream, { subjects_filter: ">" });
  return { ...(info.state.subjects ?? {}) };
}

/** Polls `probe` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 3_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) return expect.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

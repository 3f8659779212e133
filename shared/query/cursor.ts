/**
 * Keyset cursors: opaque, tamper-evident (HMAC-SHA256 over the position and the query it belongs
 * to), so a client can neither forge a position nor reuse a cursor with another filter, sort,
 * tenant or type.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { ValidationError } from "../contract/index.ts";
import type { Keyset } from "./sql.ts";

const MAC_BYTES = 16;

/** What a cursor is bound to: the page after it only makes sense for the same query. */
export interface CursorScope {
  readonly tenant: string;
  readonly type: string;
  readonly filter: string;
  readonly sort: readonly string[];
}

function scopeDigest(scope: CursorScope): string {
  return createHash("sha256")
    .update(JSON.stringify([scope.tenant, scope.type, scope.filter, scope.sort]))
    .digest("base64url")
    .slice(0, 16);
}

function mac(secret: Buffer, body: string): Buffer {
  return createHmac("sha256", secret).update(body).digest().subarray(0, MAC_BYTES);
}

export function encodeCursor(secret: Buffer, scope: CursorScope, position: Keyset): string {
  const body = Buffer.from(
    JSON.stringify({ q: scopeDigest(scope), k: position.values, i: position.id }),
  ).toString("base64url");
  return `${body}.${mac(secret, body).toString("base64url")}`;
}

/** The position a cursor names; ValidationError (400) when it was altered or belongs to another query. */
export function decodeCursor(secret: Buffer, scope: CursorScope, cursor: string, sortKeys: number): Keyset {
  const [body, tag, extra] = cursor.split(".");
  const invalid = () => new ValidationError("invalid cursor: it was altered or belongs to another query");
  if (!body || !tag || extra !== undefined || cursor.length > 4096) throw invalid();
  const given = Buffer.from(tag, "base64url");
  if (given.length !== MAC_BYTES || !timingSafeEqual(given, mac(secret, body))) throw invalid();
  let parsed: { q?: unknown; k?: unknown; i?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as typeof parsed;
  } catch {
    throw invalid();
  }
  const values = parsed.k;
  if (
    parsed.q !== scopeDigest(scope) ||
    typeof parsed.i !== "string" ||
    !Array.isArray(values) ||
    values.length !== sortKeys ||
    !values.every((x) => x === null || typeof x === "string" || typeof x === "number")
  ) {
    throw invalid();
  }
  return { values: values as Array<string | number | null>, id: parsed.i };
}

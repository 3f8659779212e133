/**
 * The JS compilation of a filter: the oracle the SQL compilations are tested against, and what
 * subscriptions evaluate on each changed aggregate. Semantics are documented on `Filter`.
 */
import type { FieldPath, Filter, Literal } from "./filter.ts";

/** A compiled filter: true when the state matches. Never throws for any JSON state. */
export type Predicate = (state: unknown) => boolean;

const MISSING = Symbol("missing");

export function compilePredicate(filter: Filter): Predicate {
  return (state) => evaluate(filter, state);
}

function evaluate(f: Filter, state: unknown): boolean {
  switch (f.kind) {
    case "const":
      return f.value;
    case "and":
      return evaluate(f.left, state) && evaluate(f.right, state);
    case "or":
      return evaluate(f.left, state) || evaluate(f.right, state);
    case "not":
      return !evaluate(f.operand, state);
    case "has":
      return lookup(state, f.path) !== MISSING;
    case "cmp": {
      const v = lookup(state, f.path);
      if (v === MISSING) return false;
      switch (f.op) {
        case "==":
          return jsonEquals(v, f.value);
        case "!=":
          return !jsonEquals(v, f.value);
        default: {
          const c = order(v, f.value);
          if (c === undefined) return false;
          return f.op === "<" ? c < 0 : f.op === "<=" ? c <= 0 : f.op === ">" ? c > 0 : c >= 0;
        }
      }
    }
    case "in": {
      const v = lookup(state, f.path);
      return v !== MISSING && f.values.some((x) => jsonEquals(v, x));
    }
    case "elem": {
      const v = lookup(state, f.path);
      return Array.isArray(v) && v.some((x) => jsonEquals(x, f.value));
    }
    case "str": {
      const v = lookup(state, f.path);
      if (typeof v !== "string") return false;
      return f.fn === "startsWith"
        ? v.startsWith(f.value)
        : f.fn === "endsWith"
          ? v.endsWith(f.value)
          : v.includes(f.value);
    }
  }
}

/** The value at `path`, or MISSING. Only own properties of plain objects count; arrays are not indexed. */
export function lookup(state: unknown, path: FieldPath): unknown {
  let current: unknown = state;
  for (const segment of path) {
    if (current === null || typeof current !== "object" || Array.isArray(current)) return MISSING;
    if (!Object.hasOwn(current, segment)) return MISSING;
    current = (current as Record<string, unknown>)[segment];
  }
  return current === undefined ? MISSING : current;
}

/** Type-strict equality of a JSON value with a scalar literal (numbers by value). */
function jsonEquals(value: unknown, lit: Literal): boolean {
  if (lit === null) return value === null;
  return typeof value === typeof lit && value === lit;
}

/** Ordering of a number with a number or a string with a string (by code point); else undefined. */
function order(value: unknown, lit: Literal): number | undefined {
  if (typeof lit === "number" && typeof value === "number") return value < lit ? -1 : value > lit ? 1 : 0;
  if (typeof lit === "string" && typeof value === "string") return compareCodePoints(value, lit);
  return undefined;
}

/**
 * Compares strings by Unicode code point: the order of UTF-8 bytes, which is what SQLite's BINARY
 * collation and PostgreSQL's `COLLATE "C"` use. (JS `<` compares UTF-16 code units, which differs
 * for characters above U+FFFF against U+E000..U+FFFF.)
 */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(i)!;
    if (x !== y) return x < y ? -1 : 1;
    if (x > 0xffff) i++;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

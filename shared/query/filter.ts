/**
 * The filter language: a small, whitelisted subset of CEL. The text is parsed by
 * `@marcbachmann/cel-js` (AST only, never evaluated there) and walked into our own tree, which is
 * the only thing the three compilers (JS predicate, SQLite SQL, PostgreSQL SQL) ever see.
 * Anything outside the subset is a ValidationError that names its position in the filter.
 */
import { Environment, type ASTNode } from "@marcbachmann/cel-js";
import { ValidationError } from "../contract/index.ts";

/** One segment of a field path: an identifier, never a number, never a prototype key. */
const SEGMENT_RE = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const LONE_SURROGATE_RE = /\p{Cs}/u;
const FORBIDDEN_SEGMENTS = new Set(["__proto__", "constructor", "prototype"]);

/** Filter limits; each keeps one filter's cost bounded on every store. */
export const FilterLimits = {
  /** Characters of filter text. */
  maxLength: 256 * 1024,
  /** Segments of one path (`a.b.c` is 3). */
  maxPathDepth: 8,
  /** Nesting of the expression tree. */
  maxDepth: 48,
  /** Elements of one `in [...]` list. */
  maxListElements: 10_000,
  /** Nodes of the whole expression. */
  maxNodes: 20_000,
} as const;

/** A validated field path into the aggregate state: `["owner", "name"]` for `owner.name`. */
export type FieldPath = readonly string[];

/** A JSON scalar literal of the filter. Integers and doubles are both JSON numbers. */
export type Literal = string | number | boolean | null;

export const CompareOp = {
  Eq: "==",
  Ne: "!=",
  Lt: "<",
  Le: "<=",
  Gt: ">",
  Ge: ">=",
} as const;
export type CompareOp = (typeof CompareOp)[keyof typeof CompareOp];

export const StringFn = {
  StartsWith: "startsWith",
  EndsWith: "endsWith",
  Contains: "contains",
} as const;
export type StringFn = (typeof StringFn)[keyof typeof StringFn];

/**
 * The whitelisted tree. Semantics (identical in every compiler, and type-strict):
 * - `cmp ==`: the field exists, has the literal's JSON type, and equals it.
 * - `cmp !=`: the field exists and `==` does not hold (a field of another type is "not equal").
 * - `cmp < <= > >=`: the field is a number (for a number literal) or a string (for a string
 *   literal, compared by Unicode code point); otherwise false.
 * - `in`: `==` holds for one of the listed literals. `has`: the field exists (also when null).
 * - `elem`: the field is an array with an element `==` the literal.
 * - `str`: the field is a string and the function holds.
 * A missing field makes every leaf false and never raises an error; `!` negates a leaf's truth.
 */
export type Filter =
  | { readonly kind: "const"; readonly value: boolean }
  | { readonly kind: "and" | "or"; readonly left: Filter; readonly right: Filter }
  | { readonly kind: "not"; readonly operand: Filter }
  | { readonly kind: "cmp"; readonly op: CompareOp; readonly path: FieldPath; readonly value: Literal }
  | { readonly kind: "in"; readonly path: FieldPath; readonly values: readonly Literal[] }
  | { readonly kind: "elem"; readonly path: FieldPath; readonly value: Literal }
  | { readonly kind: "has"; readonly path: FieldPath }
  | { readonly kind: "str"; readonly fn: StringFn; readonly path: FieldPath; readonly value: string };

const env = new Environment({
  unlistedVariablesAreDyn: true,
  homogeneousAggregateLiterals: false,
  limits: {
    maxAstNodes: FilterLimits.maxNodes,
    maxDepth: FilterLimits.maxDepth,
    maxListElements: FilterLimits.maxListElements,
    maxMapEntries: 0,
    maxCallArguments: 1,
  },
});

/** A filter error: a ValidationError (400) carrying the 0-based position in the filter text. */
export function filterError(position: number, message: string): ValidationError {
  return new ValidationError(`invalid filter at position ${position}: ${message}`, { position });
}

/** Parses filter text into the whitelisted tree. An empty or blank filter matches everything. */
export function parseFilter(text: string): Filter {
  if (text.length > FilterLimits.maxLength) {
    throw filterError(
      FilterLimits.maxLength,
      `the filter is longer than ${FilterLimits.maxLength} characters`,
    );
  }
  if (text.trim() === "") return { kind: "const", value: true };
  let ast: ASTNode;
  try {
    ast = env.parse(text).ast;
  } catch (err) {
    const e = err as { message?: string; range?: { start?: number }; node?: { pos?: number } };
    const position = e.range?.start ?? e.node?.pos ?? 0;
    const first = String(e.message ?? err).split("\n")[0] ?? "syntax error";
    throw filterError(position, first);
  }
  return condition(ast, 0);
}

function condition(node: ASTNode, depth: number): Filter {
  if (depth > FilterLimits.maxDepth) throw filterError(node.pos, "the filter is nested too deeply");
  switch (node.op) {
    case "&&":
    case "||":
      return {
        kind: node.op === "&&" ? "and" : "or",
        left: condition(node.args[0], depth + 1),
        right: condition(node.args[1], depth + 1),
      };
    case "!_":
      return { kind: "not", operand: condition(node.args, depth + 1) };
    case "value":
      if (typeof node.args === "boolean") return { kind: "const", value: node.args };
      throw filterError(node.pos, "a literal alone is not a condition");
    case "id":
    case ".":
      // A bare path is shorthand for `path == true`.
      return { kind: "cmp", op: "==", path: path(node), value: true };
    case "==":
    case "!=":
    case "<":
    case "<=":
    case ">":
    case ">=":
      return comparison(node.op, node.args[0], node.args[1], node.pos);
    case "in":
      return membership(node.args[0], node.args[1], node.pos);
    case "call":
      if (node.args[0] === "has" && node.args[1].length === 1) {
        return { kind: "has", path: path(node.args[1][0]!) };
      }
      throw filterError(node.pos, `function ${JSON.stringify(node.args[0])} is not supported (only has())`);
    case "rcall": {
      const [fn, target, args] = node.args;
      if ((fn === "startsWith" || fn === "endsWith" || fn === "contains") && args.length === 1) {
        const value = literal(args[0]!);
        if (typeof value !== "string") throw filterError(args[0]!.pos, `${fn}() takes a string literal`);
        return { kind: "str", fn, path: path(target), value };
      }
      throw filterError(
        node.pos,
        `method ${JSON.stringify(fn)} is not supported (only startsWith, endsWith, contains)`,
      );
    }
    default:
      throw filterError(node.pos, `${describe(node)} is not supported in a filter`);
  }
}

function comparison(op: CompareOp, left: ASTNode, right: ASTNode, pos: number): Filter {
  const leftIsPath = isPathNode(left);
  const rightIsPath = isPathNode(right);
  if (leftIsPath === rightIsPath) {
    throw filterError(pos, "a comparison needs one field path and one literal");
  }
  const p = path(leftIsPath ? left : right);
  const value = literal(leftIsPath ? right : left);
  const flipped = leftIsPath ? op : flip(op);
  if (flipped !== "==" && flipped !== "!=" && typeof value !== "number" && typeof value !== "string") {
    throw filterError((leftIsPath ? right : left).pos, `${op} compares numbers or strings only`);
  }
  return { kind: "cmp", op: flipped, path: p, value };
}

function flip(op: CompareOp): CompareOp {
  switch (op) {
    case "<":
      return ">";
    case "<=":
      return ">=";
    case ">":
      return "<";
    case ">=":
      return "<=";
    default:
      return op;
  }
}

function membership(left: ASTNode, right: ASTNode, pos: number): Filter {
  if (isPathNode(left) && right.op === "list") {
    return { kind: "in", path: path(left), values: right.args.map((element) => literal(element)) };
  }
  if (!isPathNode(left) && isPathNode(right)) {
    return { kind: "elem", path: path(right), value: literal(left) };
  }
  throw filterError(pos, "`in` takes `path in [literals]` or `literal in arrayPath`");
}

function isPathNode(node: ASTNode): boolean {
  return node.op === "id" || node.op === ".";
}

function path(node: ASTNode): FieldPath {
  const segments: string[] = [];
  let current: ASTNode = node;
  for (;;) {
    if (current.op === ".") {
      segments.push(current.args[1]);
      current = current.args[0];
    } else if (current.op === "id") {
      segments.push(current.args);
      break;
    } else {
      throw filterError(current.pos, `expected a field path, found ${describe(current)}`);
    }
  }
  segments.reverse();
  if (segments.length > FilterLimits.maxPathDepth) {
    throw filterError(node.pos, `a field path has at most ${FilterLimits.maxPathDepth} segments`);
  }
  for (const segment of segments) {
    if (!SEGMENT_RE.test(segment) || FORBIDDEN_SEGMENTS.has(segment)) {
      throw filterError(node.pos, `${JSON.stringify(segment)} is not an allowed field name`);
    }
  }
  return segments;
}

function literal(node: ASTNode): Literal {
  if (node.op === "-_") {
    const inner = node.args;
    if (inner.op === "value" && (typeof inner.args === "bigint" || typeof inner.args === "number")) {
      const n = literal(inner) as number;
      return n === 0 ? 0 : -n;
    }
    throw filterError(node.pos, "unary minus applies to number literals only");
  }
  if (node.op !== "value") throw filterError(node.pos, `expected a literal, found ${describe(node)}`);
  const value = node.args;
  if (typeof value === "bigint") {
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw filterError(node.pos, "integer literal out of range (at most 2^53 - 1)");
    }
    return Number(value);
  }
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw filterError(node.pos, "number literal must be finite");
    return value;
  }
  if (typeof value === "string") {
    // NUL cannot be stored in PostgreSQL text and a lone surrogate has no UTF-8 form: either
    // would make the stores disagree with each other, so neither is a valid literal.
    if (value.includes("\u0000") || LONE_SURROGATE_RE.test(value)) {
      throw filterError(node.pos, "string literals must not contain NUL or unpaired surrogates");
    }
    return value;
  }
  if (typeof value === "boolean" || value === null) return value;
  throw filterError(node.pos, "only string, int, double, bool and null literals are supported");
}

function describe(node: ASTNode): string {
  switch (node.op) {
    case "value":
      return "this literal";
    case "list":
      return "a list";
    case "map":
      return "a map";
    case "[]":
    case "[?]":
      return "indexing";
    case ".?":
      return "optional access";
    case "?:":
      return "the ternary operator";
    case "call":
    case "rcall":
      return `function ${JSON.stringify(node.args[0])}`;
    default:
      return `operator ${JSON.stringify(node.op)}`;
  }
}

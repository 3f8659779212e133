/**
 * The SQL compilations of a filter, for SQLite (JSON text) and PostgreSQL (JSONB). Literal values
 * are always bound parameters; field paths are inlined, but only after `parseFilter` has checked
 * every segment against an identifier pattern (SQLite uses an expression index only when the
 * JSON path is a literal in the statement). Every leaf compiles to an expression that is never
 * NULL, so `NOT` and `OR` behave exactly as in the JS predicate (two-valued logic).
 */
import type { FieldPath, Filter, Literal } from "./filter.ts";

export const Dialect = { Sqlite: "sqlite", Postgres: "postgres" } as const;
export type Dialect = (typeof Dialect)[keyof typeof Dialect];

/** The JSON type a declared query field is indexed as. */
export const FieldType = { Number: "number", String: "string" } as const;
export type FieldType = (typeof FieldType)[keyof typeof FieldType];

/** Declared query fields of one aggregate type: dotted path → type. */
export type QueryFields = ReadonlyMap<string, FieldType>;

/** Collects bound parameters and hands out placeholders in the dialect's style. */
export class Params {
  readonly values: unknown[] = [];
  readonly dialect: Dialect;
  constructor(dialect: Dialect) {
    this.dialect = dialect;
  }
  add(value: unknown): string {
    this.values.push(value);
    return this.dialect === "sqlite" ? "?" : `$${this.values.length}`;
  }
}

const SEGMENT_RE = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/** Re-checks a path before it is inlined; the parser already did, this keeps the promise local. */
function checked(path: FieldPath): FieldPath {
  if (path.length === 0 || path.length > 8 || !path.every((s) => SEGMENT_RE.test(s))) {
    throw new Error(`refusing to inline an unchecked path ${JSON.stringify(path)}`);
  }
  return path;
}

/** SQLite JSON path literal: `'$.a.b'`. */
function sqlitePath(path: FieldPath): string {
  return `'$.${checked(path).join(".")}'`;
}

/** PostgreSQL text-array path literal: `'{a,b}'`. */
function pgPath(path: FieldPath): string {
  return `'{${checked(path).join(",")}}'`;
}

/**
 * The typed expression of a declared field: the value when it has the declared JSON type, else
 * NULL. Indexes are built on exactly this text, and queries use exactly this text.
 */
export function fieldExpression(dialect: Dialect, path: FieldPath, type: FieldType): string {
  if (dialect === "sqlite") {
    const p = sqlitePath(path);
    const types = type === "number" ? "IN ('integer', 'real')" : "= 'text'";
    return `(CASE WHEN json_type(state, ${p}) ${types} THEN json_extract(state, ${p}) END)`;
  }
  const p = pgPath(path);
  return type === "number"
    ? `(CASE WHEN jsonb_typeof(state #> ${p}) = 'number' THEN (state #>> ${p})::float8 END)`
    : `((CASE WHEN jsonb_typeof(state #> ${p}) = 'string' THEN state #>> ${p} END) COLLATE "C")`;
}

/** Compiles a filter into a WHERE fragment; parameters are appended to `params`. */
export function compileSql(filter: Filter, params: Params, fields: QueryFields = new Map()): string {
  const c = new Compiler(params, fields);
  return c.compile(filter);
}

class Compiler {
  private readonly params: Params;
  private readonly fields: QueryFields;
  private readonly sqlite: boolean;
  constructor(params: Params, fields: QueryFields) {
    this.params = params;
    this.fields = fields;
    this.sqlite = params.dialect === "sqlite";
  }

  compile(f: Filter): string {
    switch (f.kind) {
      case "const":
        return this.sqlite ? (f.value ? "1" : "0") : f.value ? "TRUE" : "FALSE";
      case "and":
        return `(${this.compile(f.left)} AND ${this.compile(f.right)})`;
      case "or":
        return `(${this.compile(f.left)} OR ${this.compile(f.right)})`;
      case "not":
        return `(NOT ${this.compile(f.operand)})`;
      case "has":
        return this.sqlite
          ? `(json_type(state, ${sqlitePath(f.path)}) IS NOT NULL)`
          : `(state #> ${pgPath(f.path)} IS NOT NULL)`;
      case "cmp":
        return this.comparison(f.op, f.path, f.value);
      case "in":
        return this.membership(f.path, f.values);
      case "elem":
        return this.element(f.path, f.value);
      case "str":
        return this.stringFn(f.fn, f.path, f.value);
    }
  }

  /** A declared field usable for this literal: its typed expression, else undefined. */
  private declared(path: FieldPath, value: Literal): string | undefined {
    const type = this.fields.get(path.join("."));
    if (type === undefined) return undefined;
    if (
      (type === "number" && typeof value === "number") ||
      (type === "string" && typeof value === "string")
    ) {
      return fieldExpression(this.params.dialect, path, type);
    }
    return undefined;
  }

  /** Never-NULL wrapper. */
  private tv(expr: string): string {
    return this.sqlite ? `coalesce(${expr}, 0)` : `coalesce(${expr}, FALSE)`;
  }

  private equals(path: FieldPath, value: Literal): string {
    const declared = this.declared(path, value);
    if (declared) return `(${declared} IS NOT NULL AND ${declared} = ${this.bindScalar(value)})`;
    if (this.sqlite) {
      const p = sqlitePath(path);
      if (value === null) return this.tv(`json_type(state, ${p}) = 'null'`);
      if (typeof value === "boolean")
        return this.tv(`json_type(state, ${p}) = '${value ? "true" : "false"}'`);
      const types = typeof value === "number" ? "IN ('integer', 'real')" : "= 'text'";
      return this.tv(
        `(json_type(state, ${p}) ${types} AND json_extract(state, ${p}) = ${this.params.add(value)})`,
      );
    }
    return this.tv(`state #> ${pgPath(path)} = ${this.params.add(JSON.stringify(value))}::jsonb`);
  }

  private comparison(op: string, path: FieldPath, value: Literal): string {
    if (op === "==") return this.equals(path, value);
    if (op === "!=") {
      const present = this.sqlite
        ? `json_type(state, ${sqlitePath(path)}) IS NOT NULL`
        : `state #> ${pgPath(path)} IS NOT NULL`;
      return `(${present} AND NOT ${this.equals(path, value)})`;
    }
    const declared = this.declared(path, value);
    if (declared) return `(${declared} IS NOT NULL AND ${declared} ${op} ${this.bindScalar(value)})`;
    if (this.sqlite) {
      const p = sqlitePath(path);
      const types = typeof value === "number" ? "IN ('integer', 'real')" : "= 'text'";
      return this.tv(
        `(json_type(state, ${p}) ${types} AND json_extract(state, ${p}) ${op} ${this.params.add(value)})`,
      );
    }
    const p = pgPath(path);
    if (typeof value === "number") {
      return this.tv(
        `(jsonb_typeof(state #> ${p}) = 'number' AND state #> ${p} ${op} ${this.params.add(JSON.stringify(value))}::jsonb)`,
      );
    }
    return this.tv(
      `(jsonb_typeof(state #> ${p}) = 'string' AND (state #>> ${p}) COLLATE "C" ${op} ${this.params.add(value)}::text)`,
    );
  }

  /** A bound scalar for a declared field's typed expression. */
  private bindScalar(value: Literal): string {
    const placeholder = this.params.add(value);
    if (this.sqlite) return placeholder;
    return typeof value === "number" ? `${placeholder}::float8` : `${placeholder}::text`;
  }

  private membership(path: FieldPath, values: readonly Literal[]): string {
    if (values.length === 0) return this.compile({ kind: "const", value: false });
    if (!this.sqlite) {
      const p = pgPath(path);
      return this.tv(
        `(jsonb_typeof(state #> ${p}) IN ('string', 'number', 'boolean', 'null') AND ${this.params.add(JSON.stringify(values))}::jsonb @> jsonb_build_array(state #> ${p}))`,
      );
    }
    const p = sqlitePath(path);
    const numbers = values.filter((x) => typeof x === "number");
    const strings = values.filter((x) => typeof x === "string");
    const parts: string[] = [];
    if (numbers.length > 0) {
      parts.push(
        `(json_type(state, ${p}) IN ('integer', 'real') AND json_extract(state, ${p}) IN (SELECT value FROM json_each(${this.params.add(JSON.stringify(numbers))})))`,
      );
    }
    if (strings.length > 0) {
      parts.push(
        `(json_type(state, ${p}) = 'text' AND json_extract(state, ${p}) IN (SELECT value FROM json_each(${this.params.add(JSON.stringify(strings))})))`,
      );
    }
    if (values.includes(true)) parts.push(`json_type(state, ${p}) = 'true'`);
    if (values.includes(false)) parts.push(`json_type(state, ${p}) = 'false'`);
    if (values.includes(null)) parts.push(`json_type(state, ${p}) = 'null'`);
    return this.tv(`(${parts.join(" OR ")})`);
  }

  private element(path: FieldPath, value: Literal): string {
    if (!this.sqlite) {
      const p = pgPath(path);
      return this.tv(
        `(jsonb_typeof(state #> ${p}) = 'array' AND state #> ${p} @> jsonb_build_array(${this.params.add(JSON.stringify(value))}::jsonb))`,
      );
    }
    const p = sqlitePath(path);
    let match: string;
    if (value === null) match = "j.type = 'null'";
    else if (typeof value === "boolean") match = `j.type = '${value ? "true" : "false"}'`;
    else if (typeof value === "number")
      match = `j.type IN ('integer', 'real') AND j.value = ${this.params.add(value)}`;
    else match = `j.type = 'text' AND j.value = ${this.params.add(value)}`;
    return this.tv(
      `(json_type(state, ${p}) = 'array' AND EXISTS (SELECT 1 FROM json_each(state, ${p}) AS j WHERE ${match}))`,
    );
  }

  private stringFn(fn: string, path: FieldPath, value: string): string {
    if (this.sqlite) {
      const p = sqlitePath(path);
      const isText = `json_type(state, ${p}) = 'text'`;
      if (value === "") return this.tv(isText);
      const x = `json_extract(state, ${p})`;
      const test =
        fn === "startsWith"
          ? `substr(${x}, 1, length(${this.params.add(value)})) = ${this.params.add(value)}`
          : fn === "endsWith"
            ? `substr(${x}, -length(${this.params.add(value)})) = ${this.params.add(value)}`
            : `instr(${x}, ${this.params.add(value)}) > 0`;
      return this.tv(`(${isText} AND ${test})`);
    }
    const p = pgPath(path);
    const isText = `jsonb_typeof(state #> ${p}) = 'string'`;
    const x = `(state #>> ${p})`;
    const v = `${this.params.add(value)}::text`;
    const test =
      fn === "startsWith"
        ? `starts_with(${x}, ${v})`
        : fn === "endsWith"
          ? `right(${x}, length(${v})) = ${v}`
          : `strpos(${x}, ${v}) > 0`;
    return this.tv(`(${isText} AND ${test})`);
  }
}

/** One sort key: a declared field, ascending or descending. NULL (missing or mistyped) sorts lowest. */
export interface SortKey {
  readonly path: FieldPath;
  readonly type: FieldType;
  readonly descending: boolean;
}

/** The position after which a page starts: the last row's sort values, then its id. */
export interface Keyset {
  readonly values: ReadonlyArray<number | string | null>;
  readonly id: string;
}

/** Everything a store needs to run one page of a query. */
export interface QueryPlan {
  readonly tenant: string;
  readonly type: string;
  readonly filter: Filter;
  readonly sort: readonly SortKey[];
  readonly after?: Keyset | undefined;
  readonly limit: number;
}

/**
 * The page statement: tenant and type first (every index leads with them), the filter, the
 * keyset condition, ORDER BY the sort keys then the id (in the last key's direction, so that a
 * one-key sort is a plain index scan), LIMIT. Selects `s0..sN` (the sort values) for the cursor.
 */
export function buildSelect(
  dialect: Dialect,
  plan: QueryPlan,
  fields: QueryFields,
): { sql: string; params: unknown[] } {
  const params = new Params(dialect);
  const where = [`tenant = ${params.add(plan.tenant)}`, `type = ${params.add(plan.type)}`];
  const filter = compileSql(plan.filter, params, fields);
  if (filter !== "1" && filter !== "TRUE") where.push(filter);
  const exprs = plan.sort.map((k) => fieldExpression(dialect, k.path, k.type));
  const idDescending = plan.sort.at(-1)?.descending ?? false;
  if (plan.after) where.push(keysetCondition(dialect, params, plan.sort, exprs, plan.after, idDescending));
  const order = plan.sort.map((k, i) => `${exprs[i]!} ${direction(dialect, k.descending)}`);
  order.push(`id ${idDescending ? "DESC" : "ASC"}`);
  const columns = ["id", "version", "state", ...exprs.map((e, i) => `${e} AS s${i}`)];
  const sql = `SELECT ${columns.join(", ")} FROM aggregates WHERE ${where.join(" AND ")} ORDER BY ${order.join(", ")} LIMIT ${params.add(plan.limit)}`;
  return { sql, params: params.values };
}

/** The exact number of a filter's matches (tenant and type first, like every statement). */
export function buildCount(
  dialect: Dialect,
  plan: Pick<QueryPlan, "tenant" | "type" | "filter">,
  fields: QueryFields,
): { sql: string; params: unknown[] } {
  const params = new Params(dialect);
  const where = [`tenant = ${params.add(plan.tenant)}`, `type = ${params.add(plan.type)}`];
  const filter = compileSql(plan.filter, params, fields);
  if (filter !== "1" && filter !== "TRUE") where.push(filter);
  return { sql: `SELECT count(*) AS n FROM aggregates WHERE ${where.join(" AND ")}`, params: params.values };
}

/** NULL sorts lowest in both stores (SQLite's default; spelled out for PostgreSQL). */
function direction(dialect: Dialect, descending: boolean): string {
  if (dialect === "sqlite") return descending ? "DESC" : "ASC";
  return descending ? "DESC NULLS LAST" : "ASC NULLS FIRST";
}

function keysetCondition(
  dialect: Dialect,
  params: Params,
  sort: readonly SortKey[],
  exprs: readonly string[],
  after: Keyset,
  idDescending: boolean,
): string {
  const no = dialect === "sqlite" ? "0" : "FALSE";
  const bind = (key: SortKey, value: number | string): string => {
    const p = params.add(value);
    if (dialect === "sqlite") return p;
    return key.type === "number" ? `${p}::float8` : `${p}::text`;
  };
  const build = (i: number): string => {
    if (i === sort.length) return `id ${idDescending ? "<" : ">"} ${params.add(after.id)}`;
    const key = sort[i]!;
    const e = exprs[i]!;
    const v = after.values[i] ?? null;
    let beyond: string;
    let same: string;
    if (v === null) {
      beyond = key.descending ? no : `${e} IS NOT NULL`;
      same = `${e} IS NULL`;
    } else {
      beyond = key.descending ? `(${e} < ${bind(key, v)} OR ${e} IS NULL)` : `${e} > ${bind(key, v)}`;
      same = `${e} = ${bind(key, v)}`;
    }
    return `(${beyond} OR (${same} AND ${build(i + 1)}))`;
  };
  return build(0);
}

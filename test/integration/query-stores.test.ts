import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  compilePredicate,
  openPgStore,
  openSqliteStore,
  parseFilter,
  type Filter,
  type QueryFields,
  type ReadModelStore,
} from "../../shared/query/index.ts";
import { createTestDatabase, type TestDatabase } from "../unit/query/pg-database.ts";

const TYPE = "thing";
const FIELDS: QueryFields = new Map([
  ["n", "number"],
  ["s", "string"],
]);

const strings = fc.constantFrom("", "a", "ab", "b", "B", "é", "😀", "\uffff", "a'b", "x;--", "open");
const numbers = fc.oneof(fc.integer({ min: -3, max: 3 }), fc.constantFrom(0.5, -1.5, 2.25, 1e21, 50, 9));
const scalar = fc.oneof(strings, numbers, fc.boolean(), fc.constant(null));
const value = fc.oneof(
  { weight: 4, arbitrary: scalar },
  { weight: 1, arbitrary: fc.array(scalar, { maxLength: 3 }) },
  { weight: 1, arbitrary: fc.dictionary(fc.constantFrom("x", "y"), scalar, { maxKeys: 2 }) },
);
const state = fc.dictionary(fc.constantFrom("n", "s", "a", "b", "o"), value, { maxKeys: 4 });

const pathText = fc.constantFrom("n", "s", "a", "b", "o", "o.x", "o.y", "a.x", "zz");
const literalText = fc.oneof(
  strings.map((s) => JSON.stringify(s)),
  numbers.map((n) => (Number.isInteger(n) && Math.abs(n) < 1e15 ? String(n) : n.toExponential())),
  fc.constantFrom("true", "false", "null", "2.0", "-0.5"),
);
const filterText: fc.Arbitrary<string> = fc.letrec<{ f: string }>((tie) => ({
  f: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc
      .tuple(pathText, fc.constantFrom("==", "!=", "<", "<=", ">", ">="), literalText)
      .map(([p, op, l]) => `${p} ${op} ${l}`),
    fc
      .tuple(pathText, fc.array(literalText, { maxLength: 4 }))
      .map(([p, ls]) => `${p} in [${ls.join(", ")}]`),
    fc.tuple(literalText, pathText).map(([l, p]) => `${l} in ${p}`),
    pathText.map((p) => `has(${p})`),
    fc
      .tuple(pathText, fc.constantFrom("startsWith", "endsWith", "contains"), strings)
      .map(([p, fn, s]) => `${p}.${fn}(${JSON.stringify(s)})`),
    fc.tuple(tie("f"), tie("f")).map(([a, b]) => `(${a} && ${b})`),
    fc.tuple(tie("f"), tie("f")).map(([a, b]) => `(${a} || ${b})`),
    tie("f").map((a) => `!(${a})`),
  ),
})).f;

/** Parses what the generator made; comparisons of bool/null with < are 400s and are skipped. */
function tryParse(text: string): Filter | undefined {
  try {
    return parseFilter(text);
  } catch {
    return undefined;
  }
}

describe("filter compilations agree", () => {
  let dir: string;
  let database: TestDatabase;
  let sqlite: ReadModelStore;
  let postgres: ReadModelStore;
  const states: unknown[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "query-stores-"));
    database = await createTestDatabase();
    sqlite = openSqliteStore({ file: path.join(dir, "read-model.sqlite") });
    postgres = await openPgStore({ url: database.url });
    for (const store of [sqlite, postgres]) await store.prepareType(TYPE, FIELDS);
    states.push(...fc.sample(state, { numRuns: 300, seed: 7 }));
    const rows = states.map((s, i) => ({
      tenant: "t1",
      id: `id-${String(i).padStart(4, "0")}`,
      version: 1,
      stream_seq: i + 1,
      state: JSON.stringify(s),
    }));
    // The other tenant holds the same ids with states that match everything a filter could.
    const other = rows.map((r) => ({ ...r, tenant: "t2" }));
    for (const store of [sqlite, postgres]) await store.commit(TYPE, [...rows, ...other], rows.length);
  });

  afterAll(async () => {
    await sqlite?.close();
    await postgres?.close();
    await database?.[Symbol.asyncDispose]();
    await rm(dir, { recursive: true, force: true });
  });

  const run = async (store: ReadModelStore, filter: Filter, fields: QueryFields) => {
    const page = await store.query({ tenant: "t1", type: TYPE, filter, sort: [], limit: 1000 }, fields);
    return page.map((r) => r.id);
  };

  it("SQLite, PostgreSQL and the JS predicate return the same aggregates for random filters", async () => {
    let informative = 0;
    await fc.assert(
      fc.asyncProperty(filterText, async (text) => {
        const filter = tryParse(text);
        if (!filter) return;
        const predicate = compilePredicate(filter);
        const expected = states.flatMap((s, i) => (predicate(s) ? [`id-${String(i).padStart(4, "0")}`] : []));
        if (expected.length > 0 && expected.length < states.length) informative++;
        for (const fields of [FIELDS, new Map()] as QueryFields[]) {
          expect(await run(sqlite, filter, fields), `sqlite: ${text}`).toEqual(expected);
          expect(await run(postgres, filter, fields), `postgres: ${text}`).toEqual(expected);
        }
      }),
      { numRuns: 300, seed: 42 },
    );
    // Most generated filters must split the states, or the property proves little.
    expect(informative).toBeGreaterThan(100);
  });

  it("compares numbers as numbers and strings by code point on both stores", async () => {
    const rows = [
      { id: "nine", state: { n: 9, s: "9" } },
      { id: "hundred", state: { n: 100, s: "100" } },
      { id: "text", state: { n: "100", s: "😀" } },
      { id: "private", state: { n: 51, s: "\uffff" } },
    ].map((r, i) => ({
      tenant: "t3",
      id: r.id,
      version: 1,
      stream_seq: i + 1,
      state: JSON.stringify(r.state),
    }));
    for (const store of [sqlite, postgres]) await store.commit(TYPE, rows, 1);
    for (const store of [sqlite, postgres]) {
      for (const fields of [FIELDS, new Map()] as QueryFields[]) {
        const ids = async (text: string) =>
          (
            await store.query(
              { tenant: "t3", type: TYPE, filter: parseFilter(text), sort: [], limit: 10 },
              fields,
            )
          )
            .map((r) => r.id)
            .sort();
        expect(await ids("n > 50")).toEqual(["hundred", "private"]);
        expect(await ids('s > "\uffff"')).toEqual(["text"]);
        expect(await ids('n == "100"')).toEqual(["text"]);
      }
    }
  });
});

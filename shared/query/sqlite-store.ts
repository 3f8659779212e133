/** The embedded read model: one SQLite file (WAL mode) per process, written by its projector. */
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { buildCount, buildSelect, fieldExpression, type QueryPlan } from "./sql.ts";
import { rowKey, type CurrentRow, type PageRow, type ReadModelRow, type ReadModelStore } from "./store.ts";
import { indexName } from "./index-name.ts";

export interface SqliteStoreOptions {
  /** The database file; its directory is created. */
  readonly file: string;
}

export function openSqliteStore({ file }: SqliteStoreOptions): ReadModelStore {
  mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.exec(`
    CREATE TABLE IF NOT EXISTS aggregates (
      tenant TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
      version INTEGER NOT NULL, stream_seq INTEGER NOT NULL, state TEXT NOT NULL,
      PRIMARY KEY (tenant, type, id));
    CREATE TABLE IF NOT EXISTS checkpoints (type TEXT PRIMARY KEY, stream_seq INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  `);
  const upsert = db.prepare(`
    INSERT INTO aggregates (tenant, type, id, version, stream_seq, state) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (tenant, type, id) DO UPDATE SET
      version = excluded.version, stream_seq = excluded.stream_seq, state = excluded.state
    WHERE excluded.version > aggregates.version`);
  const setCheckpoint = db.prepare(`
    INSERT INTO checkpoints (type, stream_seq) VALUES (?, ?)
    ON CONFLICT (type) DO UPDATE SET stream_seq = max(stream_seq, excluded.stream_seq)`);
  const getCheckpoint = db.prepare<[string], { stream_seq: number }>(
    "SELECT stream_seq FROM checkpoints WHERE type = ?",
  );
  const getRow = db.prepare<[string, string, string], CurrentRow>(
    "SELECT version, state FROM aggregates WHERE tenant = ? AND type = ? AND id = ?",
  );
  const commit = db.transaction((type: string, rows: readonly ReadModelRow[], checkpoint: number) => {
    for (const r of rows) upsert.run(r.tenant, type, r.id, r.version, r.stream_seq, r.state);
    setCheckpoint.run(type, checkpoint);
  });
  const statements = new Map<string, Database.Statement<unknown[], Record<string, unknown>>>();
  const prepared = (sql: string) => {
    let stmt = statements.get(sql);
    if (!stmt) {
      stmt = db.prepare(sql);
      // Statements differ only by the shape of the filter; keep the cache bounded.
      if (statements.size > 500) statements.clear();
      statements.set(sql, stmt);
    }
    return stmt;
  };
  const page = (plan: QueryPlan, fields: Parameters<ReadModelStore["query"]>[1]): PageRow[] => {
    const { sql, params } = buildSelect("sqlite", plan, fields);
    return prepared(sql)
      .all(...params)
      .map((r) => toPageRow(r, plan.sort.length));
  };
  const identityKey = (type: string) => `stream_identity:${type}`;
  // A read transaction: the projector writes through this same connection, but only between
  // awaits, so the page and the checkpoint are read at one point of the projection.
  const snapshot = db.transaction((plan: QueryPlan, fields: Parameters<ReadModelStore["query"]>[1]) => ({
    rows: page(plan, fields),
    checkpoint: getCheckpoint.get(plan.type)?.stream_seq ?? 0,
  }));

  return {
    dialect: "sqlite",
    prepareType(type, fields) {
      for (const [dotted, fieldType] of fields) {
        const expr = fieldExpression("sqlite", dotted.split("."), fieldType);
        db.exec(
          `CREATE INDEX IF NOT EXISTS "${indexName(type, dotted)}" ON aggregates (tenant, type, ${expr}, id)`,
        );
      }
      return Promise.resolve();
    },
    checkpoint(type) {
      return Promise.resolve(getCheckpoint.get(type)?.stream_seq ?? 0);
    },
    load(type, keys) {
      const found = new Map<string, CurrentRow>();
      for (const k of keys) {
        const row = getRow.get(k.tenant, type, k.id);
        if (row) found.set(rowKey(k.tenant, k.id), row);
      }
      return Promise.resolve(found);
    },
    commit(type, rows, checkpoint) {
      commit(type, rows, checkpoint);
      return Promise.resolve();
    },
    query(plan, fields) {
      return Promise.resolve(page(plan, fields));
    },
    snapshot(plan, fields) {
      return Promise.resolve(snapshot(plan, fields));
    },
    count(plan, fields) {
      const { sql, params } = buildCount("sqlite", plan, fields);
      const row = prepared(sql).get(...params);
      return Promise.resolve(Number(row?.["n"] ?? 0));
    },
    streamIdentity(type) {
      const row = db
        .prepare<[string], { value: string }>("SELECT value FROM meta WHERE key = ?")
        .get(identityKey(type));
      return Promise.resolve(row?.value);
    },
    setStreamIdentity(type, identity) {
      db.prepare(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      ).run(identityKey(type), identity);
      return Promise.resolve();
    },
    reset(type) {
      db.transaction(() => {
        db.prepare("DELETE FROM aggregates WHERE type = ?").run(type);
        db.prepare("DELETE FROM checkpoints WHERE type = ?").run(type);
        db.prepare("DELETE FROM meta WHERE key = ?").run(identityKey(type));
      })();
      return Promise.resolve();
    },
    tryLockProjector() {
      return Promise.resolve(() => Promise.resolve());
    },
    secret() {
      const row = db
        .prepare<[], { value: string }>("SELECT value FROM meta WHERE key = 'cursor_secret'")
        .get();
      if (row) return Promise.resolve(Buffer.from(row.value, "base64"));
      const value = randomBytes(32);
      db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('cursor_secret', ?)").run(
        value.toString("base64"),
      );
      return this.secret();
    },
    close() {
      db.close();
      return Promise.resolve();
    },
  };
}

function toPageRow(r: Record<string, unknown>, sortKeys: number): PageRow {
  const keys: Array<number | string | null> = [];
  for (let i = 0; i < sortKeys; i++) keys.push((r[`s${i}`] as number | string | null | undefined) ?? null);
  return {
    id: r["id"] as string,
    version: r["version"] as number,
    state: JSON.parse(r["state"] as string) as unknown,
    keys,
  };
}

/**
 * The embedded read model: one SQLite file (WAL mode) per process, written by its projector.
 *
 * Writes run on a thread of their own (sqlite-writer.ts), one connection that makes every change
 * in order; reads (pages, counts, rows the projector has not cached) run on a connection in this
 * thread. WAL lets a reader and the writer work side by side, and a write's promise settles
 * after its transaction committed, so the next read here sees it. Why: the projector's upserts
 * (one transaction per fold, expression indexes included) were about 9 % of a busy worker's
 * main thread, the thread every command goes through; a fold that landed between two commands of
 * a one-at-a-time client delayed the second.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import path from "node:path";
import type { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import { siblingModule, startThread } from "../threads/index.ts";
import { buildCount, buildSelect, fieldExpression, type QueryFields, type QueryPlan } from "./sql.ts";
import { rowKey, type CurrentRow, type PageRow, type ReadModelRow, type ReadModelStore } from "./store.ts";
import { indexName } from "./index-name.ts";

export interface SqliteStoreOptions {
  /** The database file; its directory is created. */
  readonly file: string;
}

/** Opens `file` with the read model's settings, creating its tables (both connections do). */
export function openDatabase(file: string): Database.Database {
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
  return db;
}

const identityKey = (type: string) => `stream_identity:${type}`;

/** Every change the read model makes, as one request to the writer thread. */
export type WriteRequest =
  | {
      readonly op: "commit";
      readonly type: string;
      readonly rows: readonly ReadModelRow[];
      readonly checkpoint: number;
    }
  | { readonly op: "prepareType"; readonly type: string; readonly fields: QueryFields }
  | { readonly op: "setStreamIdentity"; readonly type: string; readonly identity: string }
  | { readonly op: "reset"; readonly type: string }
  | { readonly op: "putSecret"; readonly value: string }
  | { readonly op: "close" };

/** The writes on one connection (the writer thread's). */
export function sqliteWrites(db: Database.Database): (request: WriteRequest) => void {
  const upsert = db.prepare(`
    INSERT INTO aggregates (tenant, type, id, version, stream_seq, state) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (tenant, type, id) DO UPDATE SET
      version = excluded.version, stream_seq = excluded.stream_seq, state = excluded.state
    WHERE excluded.version > aggregates.version`);
  const setCheckpoint = db.prepare(`
    INSERT INTO checkpoints (type, stream_seq) VALUES (?, ?)
    ON CONFLICT (type) DO UPDATE SET stream_seq = max(stream_seq, excluded.stream_seq)`);
  const commit = db.transaction((type: string, rows: readonly ReadModelRow[], checkpoint: number) => {
    for (const r of rows) upsert.run(r.tenant, type, r.id, r.version, r.stream_seq, r.state);
    setCheckpoint.run(type, checkpoint);
  });
  const reset = db.transaction((type: string) => {
    db.prepare("DELETE FROM aggregates WHERE type = ?").run(type);
    db.prepare("DELETE FROM checkpoints WHERE type = ?").run(type);
    db.prepare("DELETE FROM meta WHERE key = ?").run(identityKey(type));
  });
  return (request) => {
    switch (request.op) {
      case "commit":
        commit(request.type, request.rows, request.checkpoint);
        return;
      case "prepareType":
        for (const [dotted, fieldType] of request.fields) {
          const expr = fieldExpression("sqlite", dotted.split("."), fieldType);
          db.exec(
            `CREATE INDEX IF NOT EXISTS "${indexName(request.type, dotted)}" ON aggregates (tenant, type, ${expr}, id)`,
          );
        }
        return;
      case "setStreamIdentity":
        db.prepare(
          "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        ).run(identityKey(request.type), request.identity);
        return;
      case "reset":
        reset(request.type);
        return;
      case "putSecret":
        db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('cursor_secret', ?)").run(request.value);
        return;
      case "close":
        db.close();
        return;
    }
  };
}

/** The writer thread's answer to request `id`: nothing, or why it failed. */
export interface WriteReply {
  readonly id: number;
  readonly error?: { readonly name: string; readonly message: string; readonly code?: string };
}

/** The writer thread as this thread sees it: started on the first write, again after it died. */
class WriterThread {
  readonly #file: string;
  #worker: Worker | undefined;
  readonly #pending = new Map<number, { resolve(): void; reject(err: Error): void }>();
  #next = 1;
  #closed = false;

  constructor(file: string) {
    this.#file = file;
  }

  write(request: WriteRequest): Promise<void> {
    if (this.#closed && request.op !== "close") {
      return Promise.reject(new Error("the read model store is closed"));
    }
    const worker = (this.#worker ??= this.#start());
    const id = this.#next++;
    return new Promise<void>((resolve, reject) => {
      // The thread keeps the process alive only while a write waits for it.
      if (this.#pending.size === 0) worker.ref();
      this.#pending.set(id, { resolve, reject });
      try {
        worker.postMessage({ id, request });
      } catch (err) {
        // Not sendable (nothing the store sends today): this write fails, the rest go on.
        this.#pending.delete(id);
        if (this.#pending.size === 0) worker.unref();
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const worker = this.#worker;
    if (worker === undefined) return;
    // Whatever was sent before runs first (one queue), then the connection closes.
    await this.write({ op: "close" }).catch(() => undefined);
    this.#worker = undefined;
    await worker.terminate();
  }

  #start(): Worker {
    const worker = startThread(siblingModule("./sqlite-writer", import.meta.url), {
      workerData: { file: this.#file },
    });
    worker.on("message", (reply: WriteReply) => {
      const waiter = this.#pending.get(reply.id);
      if (waiter === undefined) return;
      this.#pending.delete(reply.id);
      if (this.#pending.size === 0) worker.unref();
      if (reply.error === undefined) waiter.resolve();
      else waiter.reject(Object.assign(new Error(reply.error.message), reply.error));
    });
    const fail = (err: Error) => {
      if (this.#worker !== worker) return;
      this.#worker = undefined; // the next write starts another
      for (const waiter of this.#pending.values()) waiter.reject(err);
      this.#pending.clear();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`the read model's writer thread exited (code ${code})`)));
    return worker;
  }
}

export function openSqliteStore({ file }: SqliteStoreOptions): ReadModelStore {
  const db = openDatabase(file);
  // This connection only reads: every change goes through the writer thread, in order.
  db.pragma("query_only = true");
  const writer = new WriterThread(file);
  const getCheckpoint = db.prepare<[string], { stream_seq: number }>(
    "SELECT stream_seq FROM checkpoints WHERE type = ?",
  );
  const getRow = db.prepare<[string, string, string], CurrentRow>(
    "SELECT version, state FROM aggregates WHERE tenant = ? AND type = ? AND id = ?",
  );
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
  // A read transaction: the page and the checkpoint come from one committed state of the file
  // (the writer commits a fold's rows and its checkpoint together).
  const snapshot = db.transaction((plan: QueryPlan, fields: Parameters<ReadModelStore["query"]>[1]) => ({
    rows: page(plan, fields),
    checkpoint: getCheckpoint.get(plan.type)?.stream_seq ?? 0,
  }));

  return {
    dialect: "sqlite",
    prepareType(type, fields) {
      return writer.write({ op: "prepareType", type, fields });
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
      return writer.write({ op: "commit", type, rows, checkpoint });
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
      return writer.write({ op: "setStreamIdentity", type, identity });
    },
    reset(type) {
      return writer.write({ op: "reset", type });
    },
    tryLockProjector() {
      return Promise.resolve(() => Promise.resolve());
    },
    async secret() {
      const read = () =>
        db.prepare<[], { value: string }>("SELECT value FROM meta WHERE key = 'cursor_secret'").get();
      let row = read();
      if (!row) {
        await writer.write({ op: "putSecret", value: randomBytes(32).toString("base64") });
        row = read();
      }
      if (!row) throw new Error("the read model's cursor secret could not be stored");
      return Buffer.from(row.value, "base64");
    },
    async close() {
      await writer.close();
      db.close();
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

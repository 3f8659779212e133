/**
 * The PostgreSQL read model (JSONB), for a read model shared by every replica: one projector per
 * aggregate type at a time (a session advisory lock), every replica reading.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import type { Logger } from "../aggregate/index.ts";
import { buildCount, buildSelect, fieldExpression, type QueryPlan } from "./sql.ts";
import { indexName } from "./index-name.ts";
import { rowKey, type CurrentRow, type PageRow, type ReadModelStore } from "./store.ts";

export interface PgStoreOptions {
  /** `postgres://…` connection string. */
  readonly url: string;
  /** Pool size; default 10. */
  readonly poolSize?: number;
  /** Told about states that had to be altered to fit JSONB (U+0000). */
  readonly log?: Logger;
}

/** Serialises schema changes between replicas starting at the same time. */
const SCHEMA_LOCK = "aggregate-query-schema";

/**
 * JSONB cannot hold U+0000 in a string or a key (PostgreSQL refuses the whole row), but JSON and
 * the SQLite store can. Refusing the row would stop the projection for good (the same commit fails
 * on every retry), so the character is replaced by U+FFFD, the Unicode replacement character, and
 * the row is stored; everything else in the state stays exact. Returns the text unchanged (the
 * fast path) when it has no `\u0000` escape.
 */
export function jsonbSafe(state: string): { text: string; replaced: boolean } {
  if (!state.includes("\\u0000")) return { text: state, replaced: false };
  let replaced = false;
  const fix = (text: string): string => {
    if (!text.includes("\u0000")) return text;
    replaced = true;
    return text.replaceAll("\u0000", "\ufffd");
  };
  const clean = (value: unknown): unknown => {
    if (typeof value === "string") return fix(value);
    if (Array.isArray(value)) return value.map(clean);
    if (value !== null && typeof value === "object") {
      return Object.fromEntries(Object.entries(value).map(([k, x]) => [fix(k), clean(x)]));
    }
    return value;
  };
  const cleaned = clean(JSON.parse(state));
  // The escape may also have been an escaped backslash followed by "u0000": nothing to replace.
  return replaced ? { text: JSON.stringify(cleaned), replaced } : { text: state, replaced };
}

export async function openPgStore({ url, poolSize = 10, log }: PgStoreOptions): Promise<ReadModelStore> {
  const pool = new pg.Pool({ connectionString: url, max: poolSize });
  // An idle client's error (server restart) must not crash the process; the next query reports it.
  pool.on("error", () => undefined);
  const inTransaction = async <T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> => {
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      const result = await work(client);
      await client.query("COMMIT");
      return result;
    } catch (err) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  };
  try {
    await inTransaction(async (c) => {
      await c.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [SCHEMA_LOCK]);
      await c.query(`
        CREATE TABLE IF NOT EXISTS aggregates (
          tenant text NOT NULL, type text NOT NULL, id text NOT NULL,
          version integer NOT NULL, stream_seq bigint NOT NULL, state jsonb NOT NULL,
          PRIMARY KEY (tenant, type, id));
        CREATE TABLE IF NOT EXISTS checkpoints (type text PRIMARY KEY, stream_seq bigint NOT NULL);
        CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);`);
    });
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw err;
  }

  return {
    dialect: "postgres",
    async prepareType(type, fields) {
      if (fields.size === 0) return;
      await inTransaction(async (c) => {
        await c.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [SCHEMA_LOCK]);
        for (const [dotted, fieldType] of fields) {
          const expr = fieldExpression("postgres", dotted.split("."), fieldType);
          await c.query(
            `CREATE INDEX IF NOT EXISTS "${indexName(type, dotted)}" ON aggregates (tenant, type, ${expr} ASC NULLS FIRST, id)`,
          );
        }
      });
    },
    async checkpoint(type) {
      const r = await pool.query<{ stream_seq: string }>(
        "SELECT stream_seq FROM checkpoints WHERE type = $1",
        [type],
      );
      return Number(r.rows[0]?.stream_seq ?? 0);
    },
    async load(type, keys) {
      const found = new Map<string, CurrentRow>();
      if (keys.length === 0) return found;
      const r = await pool.query<{ tenant: string; id: string; version: number; state: string }>(
        `SELECT a.tenant, a.id, a.version, a.state::text AS state FROM aggregates a
         JOIN unnest($2::text[], $3::text[]) AS k(tenant, id) ON a.tenant = k.tenant AND a.id = k.id
         WHERE a.type = $1`,
        [type, keys.map((k) => k.tenant), keys.map((k) => k.id)],
      );
      for (const row of r.rows)
        found.set(rowKey(row.tenant, row.id), { version: row.version, state: row.state });
      return found;
    },
    async commit(type, rows, checkpoint) {
      await inTransaction(async (c) => {
        if (rows.length > 0) {
          await c.query(
            `INSERT INTO aggregates (tenant, type, id, version, stream_seq, state)
             SELECT t, $1, i, v, s, st::jsonb FROM unnest($2::text[], $3::text[], $4::int[], $5::bigint[], $6::text[])
               AS u(t, i, v, s, st)
             ON CONFLICT (tenant, type, id) DO UPDATE SET
               version = excluded.version, stream_seq = excluded.stream_seq, state = excluded.state
             WHERE excluded.version > aggregates.version`,
            [
              type,
              rows.map((r) => r.tenant),
              rows.map((r) => r.id),
              rows.map((r) => r.version),
              rows.map((r) => r.stream_seq),
              rows.map((r) => {
                const safe = jsonbSafe(r.state);
                if (safe.replaced) {
                  log?.warn(
                    { aggregate_type: type, tenant_id: r.tenant, aggregate_id: r.id, version: r.version },
                    "state holds U+0000, which JSONB cannot store; stored with U+FFFD in its place",
                  );
                }
                return safe.text;
              }),
            ],
          );
        }
        await c.query(
          `INSERT INTO checkpoints (type, stream_seq) VALUES ($1, $2)
           ON CONFLICT (type) DO UPDATE SET stream_seq = greatest(checkpoints.stream_seq, excluded.stream_seq)`,
          [type, checkpoint],
        );
      });
    },
    async query(plan, fields) {
      return page(pool, plan, fields);
    },
    async snapshot(plan, fields) {
      const client = await pool.connect();
      try {
        // One snapshot for both statements: the page holds exactly the commits up to the checkpoint.
        await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        const r = await client.query<{ stream_seq: string }>(
          "SELECT stream_seq FROM checkpoints WHERE type = $1",
          [plan.type],
        );
        const rows = await page(client, plan, fields);
        await client.query("COMMIT");
        return { rows, checkpoint: Number(r.rows[0]?.stream_seq ?? 0) };
      } catch (err) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    },
    async count(plan, fields) {
      const { sql, params } = buildCount("postgres", plan, fields);
      const r = await pool.query<{ n: string }>(sql, params);
      return Number(r.rows[0]?.n ?? 0);
    },
    async streamIdentity(type) {
      const r = await pool.query<{ value: string }>("SELECT value FROM meta WHERE key = $1", [
        identityKey(type),
      ]);
      return r.rows[0]?.value;
    },
    async setStreamIdentity(type, identity) {
      await pool.query(
        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [identityKey(type), identity],
      );
    },
    async reset(type) {
      await inTransaction(async (c) => {
        await c.query("DELETE FROM aggregates WHERE type = $1", [type]);
        await c.query("DELETE FROM checkpoints WHERE type = $1", [type]);
        await c.query("DELETE FROM meta WHERE key = $1", [identityKey(type)]);
      });
    },
    async tryLockProjector(type) {
      const client = await pool.connect();
      const key = `aggregate-projector:${type}`;
      try {
        const r = await client.query<{ locked: boolean }>(
          "SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS locked",
          [key],
        );
        if (r.rows[0]?.locked !== true) {
          client.release();
          return undefined;
        }
      } catch (err) {
        client.release();
        throw err;
      }
      return async () => {
        try {
          await client.query("SELECT pg_advisory_unlock(hashtextextended($1, 0))", [key]);
        } finally {
          client.release();
        }
      };
    },
    async secret() {
      await pool.query(
        "INSERT INTO meta (key, value) VALUES ('cursor_secret', $1) ON CONFLICT (key) DO NOTHING",
        [randomBytes(32).toString("base64")],
      );
      const r = await pool.query<{ value: string }>("SELECT value FROM meta WHERE key = 'cursor_secret'");
      return Buffer.from(r.rows[0]!.value, "base64");
    },
    async close() {
      await pool.end();
    },
  };
}

const identityKey = (type: string) => `stream_identity:${type}`;

async function page(
  client: pg.Pool | pg.PoolClient,
  plan: QueryPlan,
  fields: Parameters<ReadModelStore["query"]>[1],
): Promise<PageRow[]> {
  const { sql, params } = buildSelect("postgres", plan, fields);
  const r = await client.query<Record<string, unknown>>(sql, params);
  return r.rows.map((row): PageRow => {
    const keys: Array<number | string | null> = [];
    for (let i = 0; i < plan.sort.length; i++) keys.push((row[`s${i}`] as number | string | null) ?? null);
    return { id: row["id"] as string, version: row["version"] as number, state: row["state"], keys };
  });
}

import { randomBytes } from "node:crypto";
import pg from "pg";

/** The PostgreSQL server the tests use; CI starts one on 127.0.0.1:5432 (trust auth). */
export const PG_ADMIN_URL =
  process.env["AGGREGATE_TEST_PG_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres";

export interface TestDatabase extends AsyncDisposable {
  readonly url: string;
}

/** A fresh database for one test file, dropped afterwards. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `aggregate_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async [Symbol.asyncDispose]() {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

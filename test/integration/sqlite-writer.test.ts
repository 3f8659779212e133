import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openSqliteStore, parseFilter, type QueryFields } from "../../shared/query/index.ts";

const TYPE = "thing";
const FIELDS: QueryFields = new Map([["n", "number"]]);
const plan = (filter = "") => ({
  type: TYPE,
  tenant: "t1",
  filter: parseFilter(filter),
  sort: [],
  limit: 100,
});

let dir: string;
let file: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "sqlite-writer-"));
  file = path.join(dir, "read-model.sqlite");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const row = (id: string, version: number, n: number) => ({
  tenant: "t1",
  id,
  version,
  stream_seq: version,
  state: JSON.stringify({ n }),
});

describe("the SQLite read model's writer thread", () => {
  it("makes a write visible to this thread's reads once its promise settles, in the order sent", async () => {
    const store = openSqliteStore({ file });
    try {
      await store.prepareType(TYPE, FIELDS);
      // Not awaited one by one: the writer keeps their order, so the last version wins.
      const writes = [1, 2, 3].map((v) => store.commit(TYPE, [row("a", v, v * 10)], v));
      await Promise.all(writes);
      expect(await store.checkpoint(TYPE)).toBe(3);
      const found = await store.load(TYPE, [{ tenant: "t1", id: "a" }]);
      expect([...found.values()]).toEqual([{ version: 3, state: `{"n":30}` }]);
      await store.reset(TYPE);
      expect(await store.checkpoint(TYPE)).toBe(0);
      expect((await store.load(TYPE, [{ tenant: "t1", id: "a" }])).size).toBe(0);
    } finally {
      await store.close();
    }
  });

  it("loses no write sent before close, and refuses writes after it", async () => {
    const store = openSqliteStore({ file });
    const pending = Array.from({ length: 50 }, (_, i) => store.commit(TYPE, [row(`a${i}`, 1, i)], i + 1));
    await store.close();
    await Promise.all(pending);
    await expect(store.commit(TYPE, [row("late", 1, 0)], 99)).rejects.toThrow(/closed/);
    const db = new Database(file, { readonly: true });
    try {
      expect(db.prepare("SELECT count(*) AS n FROM aggregates").get()).toEqual({ n: 50 });
      expect(db.prepare("SELECT stream_seq FROM checkpoints WHERE type = ?").get(TYPE)).toEqual({
        stream_seq: 50,
      });
    } finally {
      db.close();
    }
  });

  it("rejects a write that fails in the writer with SQLite's error, and keeps working", async () => {
    const store = openSqliteStore({ file });
    try {
      // A NOT NULL column left NULL: the transaction rolls back, checkpoint included.
      const bad = { ...row("b", 1, 1), state: null as unknown as string };
      await expect(store.commit(TYPE, [row("ok", 1, 1), bad], 7)).rejects.toThrow(/NOT NULL/);
      expect(await store.checkpoint(TYPE)).toBe(0);
      expect((await store.load(TYPE, [{ tenant: "t1", id: "ok" }])).size).toBe(0);
      await store.commit(TYPE, [row("ok", 1, 1)], 8);
      expect(await store.checkpoint(TYPE)).toBe(8);
    } finally {
      await store.close();
    }
  });

  it("stores a fresh cursor secret once and serves pages from what the writer committed", async () => {
    const store = openSqliteStore({ file });
    try {
      const first = await store.secret();
      expect(first).toHaveLength(32);
      expect(await store.secret()).toEqual(first);
      await store.commit(TYPE, [row("q", 1, 5)], 1);
      expect((await store.query(plan("n == 5"), FIELDS)).map((r) => r.id)).toEqual(["q"]);
    } finally {
      await store.close();
    }
  });

  it("keeps a script alive while a write is pending, and not once it is idle (no close needed to exit)", async () => {
    const script = path.join(dir, "script.mjs");
    const store = pathToFileURL(path.resolve("shared/query/index.ts")).href;
    await writeFile(
      script,
      `import { openSqliteStore } from ${JSON.stringify(store)};
       const s = openSqliteStore({ file: ${JSON.stringify(file)} });
       await s.commit("thing", [{ tenant: "t1", id: "x", version: 1, stream_seq: 1, state: "{}" }], 1);
       console.log("checkpoint", await s.checkpoint("thing"));`,
    );
    const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", script], {
      timeout: 20_000,
    });
    expect(stdout.trim()).toBe("checkpoint 1");
  });
});

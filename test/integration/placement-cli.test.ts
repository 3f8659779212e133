/**
 * `npm run placement` as an operator runs it: a separate process against a real nats-server,
 * JSON on stdout, a JSON error on stderr, exit codes 0 (done), 1 (failed), 2 (bad argument).
 * The move protocol itself, with workers under load, is in placement-move.test.ts.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { startTestNats } from "../support/nats.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");

let server: NatsServer;
let dir: string;

beforeAll(async () => {
  server = await startTestNats();
  dir = await mkdtemp(path.join(tmpdir(), "placement-cli-"));
});
afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

interface Run {
  readonly code: number;
  readonly out: Record<string, unknown>;
  readonly err: string;
}

function placement(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", "shared/placement-store/main.ts", ...args],
      {
        cwd: ROOT,
        env: { PATH: process.env["PATH"], AGGREGATE_NATS_URL: server.url, AGGREGATE_CONFIG: "" },
        timeout: 30_000,
      },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        resolve({ code, out: stdout ? (JSON.parse(stdout) as Record<string, unknown>) : {}, err: stderr });
      },
    );
  });
}

describe("npm run placement", () => {
  it("imports a table file, then lists pools (with Swarm constraints) and tenants", async () => {
    const file = path.join(dir, "pools.yaml");
    await writeFile(
      file,
      `default_pool: [shared-a, shared-b]
pools:
  shared-a: {node_labels: {pool: shared}}
  shared-b: {node_labels: {pool: shared}}
  big: {node_labels: {pool: big}, constraints: ["node.role==worker"]}
tenants: {acme: big}
`,
    );
    const imported = await placement("import", file);
    expect(imported.code, imported.err).toBe(0);
    expect(Object.keys(imported.out["written"] as object).sort()).toEqual([
      "defaults",
      "pool.big",
      "pool.shared-a",
      "pool.shared-b",
      "tenant.acme",
    ]);
    const pools = await placement("pools");
    expect(pools.out).toMatchObject({
      default_pool: ["shared-a", "shared-b"],
      pools: { big: { constraints: ["node.labels.pool==big", "node.role==worker"] } },
    });
    const list = await placement("list");
    expect(list.out["tenants"]).toMatchObject({ acme: { pool: "big", state: "active", epoch: 1 } });
    const constraints = await placement("constraints", "shared-a");
    expect(constraints.out).toEqual({ pool: "shared-a", constraints: ["node.labels.pool==shared"] });
  }, 60_000);

  it("sets, gets and unsets a pin with compare-and-set; a hashed tenant shows where it goes", async () => {
    const set = await placement("set", "globex", "big");
    expect(set.code, set.err).toBe(0);
    expect(set.out).toMatchObject({ tenant_id: "globex", entry: { pool: "big", state: "active", epoch: 1 } });
    const got = await placement("get", "globex");
    expect(got.out).toMatchObject({ pool: "big", source: "pinned", answering_pool: "big" });
    expect((await placement("unset", "globex")).out).toEqual({ tenant_id: "globex", removed: true });
    const hashed = await placement("get", "globex");
    expect(hashed.out).toMatchObject({ entry: null, source: "hashed" });
    expect(["shared-a", "shared-b"]).toContain(hashed.out["pool"]);
  }, 60_000);

  it("moves a tenant (without workers to ask: after the grace period), epoch + 1", async () => {
    const moved = await placement("move", "acme", "shared-a", "--grace-ms", "0");
    expect(moved.code, moved.err).toBe(0);
    expect(moved.out).toMatchObject({
      tenant_id: "acme",
      from: "big",
      to: "shared-a",
      moved: true,
      epoch: 2,
    });
    expect((await placement("get", "acme")).out).toMatchObject({
      entry: { pool: "shared-a", state: "active", epoch: 2 },
    });
    const again = await placement("move", "acme", "shared-a", "--grace-ms", "0");
    expect(again.out).toMatchObject({ moved: false });
  }, 60_000);

  it.each([
    [["get", "a.b"], /invalid tenant id/],
    [["set", "acme", "Big_Pool"], /invalid pool name/],
    [["set", "acme", "nowhere"], /pool nowhere is not defined/],
    [["move", "acme", "all"], /reserved/],
    [["frobnicate"], /unknown command/],
    [["pool-set", "x", '{"weight": -1}'], /invalid pool definition/],
  ])(
    "refuses %j with exit code 2 and a JSON error",
    async (args, message) => {
      const r = await placement(...args);
      expect(r.code).toBe(2);
      const error = (JSON.parse(r.err) as { error: { code: string; message: string } }).error;
      expect(error.message).toMatch(message);
    },
    60_000,
  );
});

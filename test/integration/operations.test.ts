/**
 * Operations over real HTTP and real NATS (issue "Operations"): health and readiness through a
 * NATS restart, Prometheus metrics that move by exactly the commands sent, admin auth, tenant
 * drain, logs and trace context.
 */
import { randomUUID } from "node:crypto";
import { cp, mkdtemp, rm, writeFile, mkdir } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startNatsServer, type NatsServer } from "../../shared/nats-server/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { FUNCTIONS_DIR, request, startTestApp, type TestApp } from "../support/service.ts";

const TOKEN = "test-admin-token-0123456789";
let server: NatsServer;
let nc: NatsConnection;
let app: TestApp;
let functions: string;
/** Loop iterations that make one `slow` command take a noticeable time. */
let spin = 2_000_000;

async function http(pathname: string, init: { method?: string; token?: string; body?: unknown } = {}) {
  const res = await fetch(`http://127.0.0.1:${app.httpPort}${pathname}`, {
    method: init.method ?? "GET",
    headers: init.token ? { authorization: `Bearer ${init.token}` } : {},
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json: json as Record<string, unknown> };
}

beforeAll(async () => {
  functions = await mkdtemp(path.join(tmpdir(), "ops-functions-"));
  await cp(path.join(FUNCTIONS_DIR, "bank-account"), path.join(functions, "bank-account"), {
    recursive: true,
  });
  await mkdir(path.join(functions, "slow"));
  await writeFile(
    path.join(functions, "slow", "manifest.yaml"),
    "decide: program.js\napply: program.js\nlimits: {timeout_ms: 5000}\n",
  );
  await writeFile(
    path.join(functions, "slow", "program.js"),
    `export function decide(state, command) {
       let x = 0;
       for (let i = 0; i < command.spin; i++) x = (x + i) % 1000003;
       return { type: "spun", x };
     }
     export function apply(state, event) { return { spins: (state.spins || 0) + 1 }; }`,
  );
  server = await startTestNats();
  app = await startTestApp(server.url, { AGGREGATE_FUNCTIONS_DIR: functions, AGGREGATE_ADMIN_TOKEN: TOKEN });
  nc = await connectTest(server);
  // Calibrate: a slow command should take at least ~150 ms on this machine.
  for (;;) {
    const t = performance.now();
    await request(nc, "aggregate.slow.submit", { payload: { type: "spin", spin } });
    if (performance.now() - t >= 150 || spin > 1e9) break;
    spin *= 2;
  }
});

afterAll(async () => {
  await nc?.close();
  await app?.stop();
  await server?.stop();
  await rm(functions, { recursive: true, force: true });
});

function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${JSON.stringify(line)}`);
    out.set(`${m[1]}${m[2] ?? ""}`, Number(m[3]));
  }
  return out;
}

describe("health, readiness and metrics", () => {
  it("is healthy and ready once started", async () => {
    const health = await http("/health");
    expect(health.status).toBe(200);
    expect(health.json).toMatchObject({
      status: "ok",
      nats_connected: true,
      storage_ready: true,
      types: ["bank-account", "slow"],
    });
    expect(typeof health.json["aggregates_cached"]).toBe("number");
    expect((await http("/ready")).status).toBe(200);
    expect((await http("/nope")).status).toBe(404);
  });

  it("moves command counters by exactly the commands sent, by outcome", async () => {
    const before = samples((await http("/metrics")).text);
    const key = (outcome: string) =>
      `aggregate_commands_total{aggregate_type="bank-account",tenant_id="metrics-t",outcome="${outcome}"}`;
    const h = { "x-tenant-id": "metrics-t" };
    const id = randomUUID();
    for (let i = 0; i < 5; i++)
      await request(
        nc,
        "aggregate.bank-account.submit",
        { aggregate_id: id, payload: { type: "deposit", amount: 1 } },
        h,
      );
    for (let i = 0; i < 3; i++)
      await request(
        nc,
        "aggregate.bank-account.submit",
        { aggregate_id: id, payload: { type: "withdraw", amount: 100 } },
        h,
      );
    const res = await http("/metrics");
    expect(res.status).toBe(200);
    const after = samples(res.text);
    expect((after.get(key("ok")) ?? 0) - (before.get(key("ok")) ?? 0)).toBe(5);
    expect((after.get(key("DecideError")) ?? 0) - (before.get(key("DecideError")) ?? 0)).toBe(3);
    for (const name of [
      "aggregate_command_duration_seconds_count",
      "aggregate_version_conflicts_total",
      "aggregate_rehydration_duration_seconds_count",
      "aggregate_tenant_errors_total",
      "process_resident_memory_bytes",
    ]) {
      expect(res.text).toContain(name);
    }
    expect(res.text).not.toContain(id);
  });
});

describe("admin endpoints", () => {
  it("answers 401 without or with a wrong token, and works with the right one", async () => {
    expect((await http("/admin/tenants")).status).toBe(401);
    expect((await http("/admin/tenants", { token: "wrong" })).status).toBe(401);
    expect(
      (await http("/admin/drain", { method: "POST", token: `${TOKEN}x`, body: { tenant_id: "a" } })).status,
    ).toBe(401);
    const ok = await http("/admin/tenants", { token: TOKEN });
    expect(ok.status).toBe(200);
    expect((ok.json["tenants"] as Array<{ tenant_id: string }>).map((t) => t.tenant_id)).toContain(
      "metrics-t",
    );
  });

  it("refuses a malformed drain request", async () => {
    expect(
      (await http("/admin/drain", { method: "POST", token: TOKEN, body: { tenant_id: "a.b" } })).status,
    ).toBe(400);
    expect((await http("/admin/drain", { method: "POST", token: TOKEN, body: "x" })).status).toBe(400);
  });

  it("drains tenant A while B is unaffected: A's in-flight finish, A's new ones get 503, undrain restores A", async () => {
    const a = { "x-tenant-id": "tenant-a" };
    const b = { "x-tenant-id": "tenant-b" };
    const slow = () => ({ payload: { type: "spin", spin } });
    const inflightA = [0, 1, 2].map(() => request(nc, "aggregate.slow.submit", slow(), a));
    await sleep(30);
    const drain = http("/admin/drain", { method: "POST", token: TOKEN, body: { tenant_id: "tenant-a" } });
    await sleep(30);
    const refused = await request(
      nc,
      "aggregate.bank-account.submit",
      { payload: { type: "deposit", amount: 1 } },
      a,
    );
    expect(refused.status).toBe(503);
    expect(refused.body).toMatchObject({ error: { code: "Unavailable" } });
    const okB = await request(
      nc,
      "aggregate.bank-account.submit",
      { payload: { type: "deposit", amount: 1 } },
      b,
    );
    expect(okB.status).toBeUndefined();
    const drained = await drain;
    expect(drained.status).toBe(200);
    expect(drained.json).toMatchObject({ tenant_id: "tenant-a", drained: true, in_flight: 0 });
    for (const r of await Promise.all(inflightA)) expect(r.status).toBeUndefined();
    const tenants = await http("/admin/tenants", { token: TOKEN });
    expect(tenants.json["draining"]).toEqual(["tenant-a"]);
    expect(
      (await http("/admin/undrain", { method: "POST", token: TOKEN, body: { tenant_id: "tenant-a" } })).json,
    ).toMatchObject({
      was_draining: true,
    });
    const again = await request(
      nc,
      "aggregate.bank-account.submit",
      { payload: { type: "deposit", amount: 1 } },
      a,
    );
    expect(again.status).toBeUndefined();
  });

  it("reloads the configuration and reports what changed", async () => {
    const res = await http("/admin/reload", { method: "POST", token: TOKEN });
    expect(res.status).toBe(200);
    expect(res.json).toHaveProperty("changed");
    expect(res.json).toHaveProperty("requires_restart");
  });
});

describe("logs and trace context", () => {
  it("logs one line per command with the ids, and carries traceparent into the commit and the log", async () => {
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const commandId = randomUUID();
    const reply = await request(
      nc,
      "aggregate.bank-account.submit",
      { command_id: commandId, payload: { type: "deposit", amount: 5 } },
      { "x-tenant-id": "trace-t", "x-correlation-id": "corr-trace", traceparent, tracestate: "vendor=1" },
    );
    expect(reply.status).toBeUndefined();
    const jsm = await jetstreamManager(nc);
    const stored = await jsm.streams.getMessage("AGGREGATE_EVENTS", {
      seq: reply.body["stream_seq"] as number,
    });
    expect(stored?.header.get("traceparent")).toBe(traceparent);
    expect(stored?.header.get("tracestate")).toBe("vendor=1");
    expect(stored?.header.get("x-correlation-id")).toBe("corr-trace");
    const line = app.logs.find((l) => l["command_id"] === commandId);
    expect(line).toMatchObject({
      msg: "command handled",
      tenant_id: "trace-t",
      aggregate_type: "bank-account",
      aggregate_id: commandId,
      correlation_id: "corr-trace",
      trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
      version: 1,
      outcome: "ok",
    });
    expect(typeof line?.["duration_ms"]).toBe("number");
  });

  it("logs refused commands with the ids known so far", async () => {
    const commandId = randomUUID();
    await request(
      nc,
      "aggregate.bank-account.submit",
      { command_id: commandId, payload: { type: "withdraw", amount: 5 } },
      { "x-tenant-id": "log-t" },
    );
    expect(app.logs.find((l) => l["command_id"] === commandId)).toMatchObject({
      outcome: "DecideError",
      tenant_id: "log-t",
    });
  });
});

describe("a NATS restart", () => {
  it("keeps /health at 200 while NATS is away, turns /ready to 503, and recovers", async () => {
    // An explicit store dir outlives the server, so the restarted one finds the stream again.
    const store = await mkdtemp(path.join(tmpdir(), "ops-nats-"));
    const own = await startNatsServer({ storeDir: store });
    const port = own.port;
    const ownApp = await startTestApp(own.url);
    const get = (p: string) => fetch(`http://127.0.0.1:${ownApp.httpPort}${p}`);
    try {
      expect((await get("/ready")).status).toBe(200);
      // Stop the server but keep its store, then bring it back on the same port.
      await own.stop().catch(() => undefined);
      await sleep(300);
      const health = await get("/health");
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ nats_connected: false, status: "degraded" });
      expect((await get("/ready")).status).toBe(503);
      const back = await startNatsServer({ port, storeDir: store });
      try {
        const deadline = Date.now() + 15_000;
        while ((await get("/ready")).status !== 200) {
          if (Date.now() > deadline) throw new Error("not ready again after NATS came back");
          await sleep(100);
        }
        const c = await connectTest(back);
        const r = await request(c, "aggregate.bank-account.submit", {
          payload: { type: "deposit", amount: 1 },
        });
        expect(r.status).toBeUndefined();
        await c.close();
      } finally {
        await ownApp.stop();
        await back.stop();
      }
    } finally {
      await ownApp.stop();
      await rm(store, { recursive: true, force: true });
    }
  });
});

describe("readiness through drain and shutdown", () => {
  it("stays ready while one tenant is drained, and turns 503 as soon as shutdown begins", async () => {
    const own = await startTestApp(server.url, { AGGREGATE_ADMIN_TOKEN: TOKEN });
    const base = `http://127.0.0.1:${own.httpPort}`;
    try {
      const drained = await fetch(`${base}/admin/drain`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}` },
        body: JSON.stringify({ tenant_id: "someone" }),
      });
      expect(drained.status).toBe(200);
      expect((await fetch(`${base}/ready`)).status).toBe(200);
      const stopping = own.stop();
      const ready = await fetch(`${base}/ready`).then(
        (r) => r.status,
        () => "closed",
      );
      expect([503, "closed"]).toContain(ready);
      await stopping;
      await expect(fetch(`${base}/health`)).rejects.toThrow();
    } finally {
      await own.stop();
    }
  });
});

describe("a log socket that disappears", () => {
  it("does not stop command handling", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "ops-sock-"));
    const file = path.join(dir, "log.sock");
    const received: string[] = [];
    const sockets: Socket[] = [];
    const listener = createServer((conn) => {
      sockets.push(conn);
      conn.on("data", (d) => received.push(d.toString()));
      conn.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => listener.listen(file, resolve));
    const { createLogger } = await import("../../shared/observability/index.ts");
    const { loadConfig } = await import("../../shared/config/index.ts");
    const { startApp } = await import("../../shared/app/index.ts");
    const { log, socket } = createLogger({
      level: "info",
      socketPath: file,
      destination: { write: () => undefined },
    });
    const config = loadConfig({
      env: {
        AGGREGATE_NATS_URL: server.url,
        AGGREGATE_HTTP_PORT: "0",
        AGGREGATE_FUNCTIONS_DIR: FUNCTIONS_DIR,
        AGGREGATE_STORAGE_PATH: dir,
      },
    });
    const own = await startApp({ config, log, version: "0.0.0-test" });
    try {
      const send = () =>
        request(
          nc,
          "aggregate.bank-account.submit",
          { payload: { type: "deposit", amount: 1 } },
          { "x-tenant-id": "sock-t" },
        );
      // Two services share the queue group here: send until one of ours reached the socket.
      const deadline = Date.now() + 10_000;
      while (!received.join("").includes("command handled")) {
        if (Date.now() > deadline) throw new Error("no line reached the socket");
        expect((await send()).status).toBeUndefined();
        await sleep(10);
      }
      // The reader vanishes: connection and listening socket both gone.
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => listener.close(() => resolve()));
      const before = own.services.stats("bank-account")!.ok;
      for (let i = 0; i < 30; i++) expect((await send()).status).toBeUndefined();
      expect(own.services.stats("bank-account")!.ok).toBeGreaterThan(before);
      expect(socket!.connected).toBe(false);
    } finally {
      await own.stop();
      socket?.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("start-up", () => {
  it("answers /health and a 503 /ready while it waits for NATS, and becomes ready once NATS is up", async () => {
    const freePort = async () => {
      const probe = createServer();
      await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
      const port = (probe.address() as { port: number }).port;
      await new Promise<void>((resolve) => probe.close(() => resolve()));
      return port;
    };
    const [natsPort, httpPort] = [await freePort(), await freePort()];
    const starting = startTestApp(`nats://127.0.0.1:${natsPort}`, { AGGREGATE_HTTP_PORT: String(httpPort) });
    const base = `http://127.0.0.1:${httpPort}`;
    let later: NatsServer | undefined;
    try {
      const deadline = Date.now() + 10_000;
      let health: Response | undefined;
      while (!health) {
        health = await fetch(`${base}/health`).catch(() => undefined);
        if (!health && Date.now() > deadline) throw new Error("the HTTP port never opened");
        if (!health) await sleep(50);
      }
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ status: "starting", nats_connected: false });
      const ready = await fetch(`${base}/ready`);
      expect(ready.status).toBe(503);
      expect(await ready.json()).toMatchObject({ status: "starting" });
      later = await startNatsServer({ port: natsPort });
      const app2 = await starting;
      try {
        expect((await fetch(`${base}/ready`)).status).toBe(200);
      } finally {
        await app2.stop();
      }
    } finally {
      await later?.stop();
    }
  });
});

/**
 * The shipped nats-config (dev.conf + accounts.conf) on a real nats-server: each user can do
 * its job and nothing past it. Tenant "acme" reads its own events; "globex" is the other tenant.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect } from "@nats-io/transport-node";
import type { Msg, NatsConnection } from "@nats-io/nats-core";
import { AckPolicy, jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { adminRequest } from "../../shared/admin/index.ts";
import { startNatsServer, type NatsServer } from "../../shared/nats-server/index.ts";
import { openPlacementBucket, openPlacementStore } from "../../shared/placement-store/index.ts";
import { request, startTestApp, type TestApp } from "../support/service.ts";

const CONFIG = path.resolve(import.meta.dirname, "../../nats-config/dev.conf");
const PASSWORDS = {
  NATS_ADMIN_PASSWORD: "admin-secret",
  NATS_GATEWAY_PASSWORD: "gateway-secret",
  NATS_WORKER_PASSWORD: "worker-secret",
  NATS_READER_ACME_PASSWORD: "acme-secret",
  NATS_READER_GLOBEX_PASSWORD: "globex-secret",
  NATS_SYS_PASSWORD: "sys-secret",
};
const STREAM = "AGGREGATE_EVENTS";

let server: NatsServer;
let app: TestApp;
const connections: NatsConnection[] = [];

async function as(user: string, password: string, inboxPrefix?: string): Promise<NatsConnection> {
  const nc = await connect({
    servers: server.url,
    user,
    pass: password,
    ...(inboxPrefix ? { inboxPrefix } : {}),
  });
  connections.push(nc);
  return nc;
}

/** A JetStream manager that does not probe `$JS.API.INFO` (which most users may not call). */
function manager(nc: NatsConnection): Promise<JetStreamManager> {
  return jetstreamManager(nc, { checkAPI: false, timeout: 2_000 });
}

function isDenied(err: unknown): boolean {
  return /permissions violation/i.test(String(err));
}

beforeAll(async () => {
  // nats-server reads the `$NATS_*_PASSWORD` references in accounts.conf from its environment.
  Object.assign(process.env, PASSWORDS);
  server = await startNatsServer({ args: ["-c", CONFIG] });
  app = await startTestApp(server.url, {
    AGGREGATE_NATS_USER: "worker",
    AGGREGATE_NATS_PASSWORD: PASSWORDS.NATS_WORKER_PASSWORD,
    // The read model too: its projector and its watches must work within the worker's permissions.
    AGGREGATE_QUERY: "true",
  });
});

afterAll(async () => {
  for (const nc of connections) await nc.close().catch(() => undefined);
  await app?.stop();
  await server?.stop();
});

async function submit(gateway: NatsConnection, tenant: string, amount: number) {
  return request(
    gateway,
    "aggregate.bank-account.submit",
    { payload: { type: "deposit", amount } },
    { "x-tenant-id": tenant },
  );
}

describe("the worker user", () => {
  it("runs the real service: a command passes end to end through the gateway user", async () => {
    const gateway = await as("gateway", PASSWORDS.NATS_GATEWAY_PASSWORD, "_INBOX_GATEWAY");
    const first = await submit(gateway, "acme", 10);
    expect(first.status).toBeUndefined();
    expect(first.body).toMatchObject({ tenant_id: "acme", version: 1 });
    const again = await request(
      gateway,
      "aggregate.bank-account.submit",
      { aggregate_id: first.body["aggregate_id"], payload: { type: "deposit", amount: 5 } },
      { "x-tenant-id": "acme" },
    );
    expect(again.body).toMatchObject({ version: 2 });
    const state = await request(
      gateway,
      "aggregate.bank-account.get",
      { aggregate_id: first.body["aggregate_id"] },
      { "x-tenant-id": "acme" },
    );
    expect(state.body).toMatchObject({ version: 2, state: { balance: 15 } });
    expect((await submit(gateway, "globex", 7)).body).toMatchObject({ tenant_id: "globex", version: 1 });
  });

  it("created the stream with deny_delete and deny_purge", async () => {
    const admin = await as("admin", PASSWORDS.NATS_ADMIN_PASSWORD);
    const info = await (await manager(admin)).streams.info(STREAM);
    expect(info.config).toMatchObject({ deny_delete: true, deny_purge: true, allow_direct: true });
    // even the admin cannot remove a message: the stream itself refuses
    await expect((await manager(admin)).streams.deleteMessage(STREAM, 1)).rejects.toThrow();
  });

  it("cannot delete, purge or update the stream, nor delete a message", async () => {
    const jsm = await manager(await as("worker", PASSWORDS.NATS_WORKER_PASSWORD));
    const attempts = [
      jsm.streams.purge(STREAM),
      jsm.streams.delete(STREAM),
      jsm.streams.deleteMessage(STREAM, 1),
      jsm.streams.update(STREAM, { description: "x" }),
    ];
    for (const attempt of attempts) {
      await expect(attempt).rejects.toSatisfy(isDenied);
    }
    const admin = await manager(await as("admin", PASSWORDS.NATS_ADMIN_PASSWORD));
    expect((await admin.streams.info(STREAM)).state.messages).toBeGreaterThanOrEqual(3);
  });
});

describe("the placement table (TENANT_PLACEMENT)", () => {
  it("is read and watched by the worker, which cannot write it; the admin writes it", async () => {
    // the running worker (user worker) created, read and watches the bucket
    expect(app.placement.status()).toMatchObject({ origin: "kv" });
    const worker = await as("worker", PASSWORDS.NATS_WORKER_PASSWORD);
    const asWorker = openPlacementStore(await openPlacementBucket(worker, "TENANT_PLACEMENT"));
    await expect(asWorker.put("tenant.acme", { pool: "default" }, 0)).rejects.toSatisfy(isDenied);

    const admin = openPlacementStore(
      await openPlacementBucket(await as("admin", PASSWORDS.NATS_ADMIN_PASSWORD), "TENANT_PLACEMENT"),
    );
    const revision = await admin.put("pool.default", {}, 0);
    expect(await app.placement.waitForRevision(revision, 5_000)).toBe(true);
    expect(app.placement.table()?.pools).toHaveProperty("default");
  });

  it("is out of the gateway's reach, and so are the admin requests", async () => {
    const gateway = await as("gateway", PASSWORDS.NATS_GATEWAY_PASSWORD, "_INBOX_GATEWAY");
    await expect(
      gateway.request("$JS.API.STREAM.INFO.KV_TENANT_PLACEMENT", "", { timeout: 1_000 }),
    ).rejects.toSatisfy(isDenied);
    await expect(
      adminRequest(gateway, "all", "status", {}, { token: "x".repeat(16), maxWaitMs: 500 }),
    ).rejects.toSatisfy(isDenied);
    // a pool's forwarding subject is the workers' only: a gateway cannot skip routing with it
    await expect(
      request(
        gateway,
        "aggregate.bank-account.submit.default.forwarded",
        { payload: { type: "deposit", amount: 1 } },
        { "x-tenant-id": "acme" },
        1_000,
      ),
    ).rejects.toSatisfy(isDenied);
    // a pool's own subject is the gateway's to use
    const reply = await request(
      gateway,
      "aggregate.bank-account.submit.default",
      { payload: { type: "deposit", amount: 1 } },
      { "x-tenant-id": "acme" },
    );
    expect(reply.status).toBeUndefined();
  });

  it("falls back to AGGREGATE_PLACEMENT_FILE when the bucket cannot be read at start", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "placement-"));
    try {
      const file = path.join(dir, "placement.json");
      await writeFile(
        file,
        JSON.stringify({ pools: { fb: {}, big: {} }, default_pool: "fb", tenants: { acme: "big" } }),
      );
      // The worker user may not read this bucket: "unreachable" as a missing permission makes it.
      const env = {
        AGGREGATE_NATS_USER: "worker",
        AGGREGATE_NATS_PASSWORD: PASSWORDS.NATS_WORKER_PASSWORD,
        AGGREGATE_PLACEMENT_BUCKET: "FORBIDDEN_PLACEMENT",
        AGGREGATE_POOL: "fb",
        AGGREGATE_REQUEST_TIMEOUT_MS: "1000",
      };
      await expect(startTestApp(server.url, env)).rejects.toThrow(/AGGREGATE_PLACEMENT_FILE/);
      const fallback = await startTestApp(server.url, { ...env, AGGREGATE_PLACEMENT_FILE: file });
      try {
        expect(fallback.placement.status()).toMatchObject({ origin: "file", revision: 0 });
        expect(fallback.placement.table()?.tenants).toEqual({
          acme: { pool: "big", state: "active", epoch: 1 },
        });
        const gateway = await as("gateway", PASSWORDS.NATS_GATEWAY_PASSWORD, "_INBOX_GATEWAY");
        const before = fallback.services.stats("bank-account")!.ok;
        const reply = await request(
          gateway,
          "aggregate.bank-account.submit.fb",
          { payload: { type: "deposit", amount: 1 } },
          { "x-tenant-id": "globex" },
        );
        expect(reply.status).toBeUndefined();
        expect(fallback.services.stats("bank-account")!.ok).toBe(before + 1);
        expect(
          fallback.logs.some((l) => l["msg"] === "placement bucket unreachable: using the fallback file"),
        ).toBe(true);
      } finally {
        await fallback.stop();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("the gateway user", () => {
  it("cannot touch the JetStream API, the KV subjects or the event subjects", async () => {
    const gateway = await as("gateway", PASSWORDS.NATS_GATEWAY_PASSWORD, "_INBOX_GATEWAY");
    await expect(gateway.request("$JS.API.INFO", "", { timeout: 1_000 })).rejects.toSatisfy(isDenied);
    await expect(gateway.request(`$JS.API.STREAM.INFO.${STREAM}`, "", { timeout: 1_000 })).rejects.toSatisfy(
      isDenied,
    );
    await expect((await manager(gateway)).streams.info(STREAM)).rejects.toSatisfy(isDenied);
    await expect(gateway.request("$KV.AGGREGATE_SNAPSHOTS.x", "", { timeout: 1_000 })).rejects.toSatisfy(
      isDenied,
    );
  });

  it("reaches service discovery ($SRV)", async () => {
    const gateway = await as("gateway", PASSWORDS.NATS_GATEWAY_PASSWORD, "_INBOX_GATEWAY");
    const reply = await gateway.request("$SRV.INFO.aggregate-bank-account", "", { timeout: 2_000 });
    expect(reply.json<{ name: string }>().name).toBe("aggregate-bank-account");
  });
});

describe("a tenant reader", () => {
  it("receives its own tenant's live events but cannot subscribe to another tenant's", async () => {
    const acme = await as("reader-acme", PASSWORDS.NATS_READER_ACME_PASSWORD, "_INBOX_acme");
    const errors: string[] = [];
    void (async () => {
      for await (const s of acme.status()) if (s.type === "error") errors.push(String(s.error));
    })();
    const own = acme.subscribe("tenant.acme.>");
    const foreign = acme.subscribe("tenant.globex.>");
    const foreignClosed = foreign.closed.then(
      (v) => v,
      (err: unknown) => err,
    );
    await acme.flush();

    const gateway = await as("gateway", PASSWORDS.NATS_GATEWAY_PASSWORD, "_INBOX_GATEWAY");
    await submit(gateway, "globex", 1);
    await submit(gateway, "acme", 2);
    const got = (await own[Symbol.asyncIterator]().next()) as IteratorResult<Msg, undefined>;
    expect(got.value?.subject).toMatch(/^tenant\.acme\.aggregate\.bank-account\./);

    // the server refuses the foreign subscription and closes it with a permissions error
    expect(String(await foreignClosed)).toMatch(/permission/i);
    expect(foreign.getReceived()).toBe(0);
    expect(errors.join("\n")).toMatch(/Permissions Violation for Subscription to "tenant\.globex\.>"/);
  });

  it("reads its own history with its pull consumer, and cannot create one on another tenant", async () => {
    const nc = await as("reader-acme", PASSWORDS.NATS_READER_ACME_PASSWORD, "_INBOX_acme");
    const jsm = await manager(nc);
    const base = { ack_policy: AckPolicy.None, inactive_threshold: 10_000_000_000 };
    // Filters must be subsets of the stream's subjects (tenant.*.aggregate.*.*), so a tenant's
    // whole history is tenant.<id>.aggregate.*.*
    const tries = [
      { name: "reader-acme", filter_subject: "tenant.globex.aggregate.*.*" },
      { name: "reader-acme", filter_subject: "tenant.*.aggregate.*.*" },
      { name: "reader-globex", filter_subject: "tenant.globex.aggregate.*.*" },
      { filter_subject: "tenant.globex.aggregate.*.*" },
      { name: "reader-acme" },
    ];
    for (const t of tries) {
      await expect(jsm.consumers.add(STREAM, { ...base, ...t }), JSON.stringify(t)).rejects.toSatisfy(
        isDenied,
      );
    }
    // and no direct read of another tenant's messages
    await expect(jsm.direct.getMessage(STREAM, { last_by_subj: "tenant.globex.>" })).rejects.toSatisfy(
      isDenied,
    );

    const info = await jsm.consumers.add(STREAM, {
      ...base,
      name: "reader-acme",
      filter_subject: "tenant.acme.aggregate.*.*",
    });
    const consumer = jetstream(nc).consumers.getConsumerFromInfo(info);
    const batch = await consumer.fetch({ max_messages: 100, expires: 1_000 });
    const subjects: string[] = [];
    for await (const m of batch) subjects.push(m.subject);
    expect(subjects.length).toBeGreaterThanOrEqual(3);
    for (const s of subjects) expect(s.startsWith("tenant.acme.")).toBe(true);
    await jsm.consumers.delete(STREAM, "reader-acme");
  });

  it("cannot read from another tenant's consumer even when it knows the name", async () => {
    const globex = await manager(
      await as("reader-globex", PASSWORDS.NATS_READER_GLOBEX_PASSWORD, "_INBOX_globex"),
    );
    await globex.consumers.add(STREAM, {
      name: "reader-globex",
      filter_subject: "tenant.globex.aggregate.*.*",
      ack_policy: AckPolicy.None,
      inactive_threshold: 10_000_000_000,
    });
    const acme = await as("reader-acme", PASSWORDS.NATS_READER_ACME_PASSWORD, "_INBOX_acme");
    await expect(
      acme.request(
        `$JS.API.CONSUMER.MSG.NEXT.${STREAM}.reader-globex`,
        JSON.stringify({ batch: 1, no_wait: true }),
        { timeout: 1_000 },
      ),
    ).rejects.toSatisfy(isDenied);
  });
});

describe("watches", () => {
  it("deliver a tenant's notifications to its reader, started and renewed by the gateway; another reader cannot listen", async () => {
    const reader = await as("reader-acme", PASSWORDS.NATS_READER_ACME_PASSWORD, "_INBOX_acme");
    const notes = reader.subscribe("tenant.acme.watch.>");
    await reader.flush();
    const gateway = await as("gateway", PASSWORDS.NATS_GATEWAY_PASSWORD, "_INBOX_GATEWAY");
    const watch = await request(
      gateway,
      "aggregate.bank-account.watch",
      { filter: "balance >= 1000", deliver_to: "tenant.acme.watch.perm" },
      { "x-tenant-id": "acme" },
    );
    expect(watch.status, JSON.stringify(watch.body)).toBeUndefined();
    const rich = await submit(gateway, "acme", 1000);
    const got = (await notes[Symbol.asyncIterator]().next()) as IteratorResult<Msg, undefined>;
    expect(got.value?.subject).toBe("tenant.acme.watch.perm");
    expect(got.value?.json()).toMatchObject({ type: "enter", aggregate_id: rich.body["aggregate_id"] });
    for (const verb of ["renew", "cancel"]) {
      const r = await request(gateway, watch.body[`${verb}_subject`] as string, "", {
        "x-tenant-id": "acme",
      });
      expect(r.status, verb).toBeUndefined();
    }

    const globex = await as("reader-globex", PASSWORDS.NATS_READER_GLOBEX_PASSWORD, "_INBOX_globex");
    const foreign = globex.subscribe("tenant.acme.watch.>");
    const closed = foreign.closed.then(
      (v) => v,
      (err: unknown) => err,
    );
    await globex.flush();
    expect(String(await closed)).toMatch(/permission/i);
    // and a reader cannot start a watch itself (only the gateway speaks to the service)
    await expect(globex.request("aggregate.bank-account.watch", "{}", { timeout: 1_000 })).rejects.toSatisfy(
      isDenied,
    );
  });
});

import { randomUUID } from "node:crypto";
import { Kvm, type KV } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AggregateId, AggregateType, Snapshot, TenantId } from "../../shared/contract/index.ts";
import type { AggregateRef, SnapshotStore } from "../../shared/aggregate/index.ts";
import { createSnapshotStore, openSnapshotBucket } from "../../shared/snapshot-store/index.ts";
import { memoryLogger } from "../support/memory-ports.ts";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { connectTest, startTestNats, uniqueName } from "../support/nats.ts";

const bucket = uniqueName("SNAPS");
let server: NatsServer;
let nc: Awaited<ReturnType<typeof connectTest>>;
let kv: KV;
let store: SnapshotStore;
const log = memoryLogger();

beforeAll(async () => {
  server = await startTestNats();
  nc = await connectTest(server);
  kv = await openSnapshotBucket(nc, bucket);
  store = createSnapshotStore({ kv, log });
});
afterAll(async () => {
  await new Kvm(nc)
    .open(bucket)
    .then((b) => b.destroy())
    .catch(() => undefined);
  await nc.close();
  await server.stop();
});

function ref(tenant = "tenant-a"): AggregateRef {
  return {
    tenant_id: tenant as TenantId,
    aggregate_type: "account" as AggregateType,
    aggregate_id: randomUUID() as AggregateId,
  };
}

function snapshot(r: AggregateRef, version: number, state: object = { balance: version }): Snapshot {
  return {
    tenant_id: r.tenant_id,
    aggregate_id: r.aggregate_id,
    aggregate_type: r.aggregate_type,
    version,
    stream_seq: version * 10,
    state: state as Snapshot["state"],
    created_at: new Date().toISOString(),
    recent_commands: [{ command_id: randomUUID(), payload_hash: "h", version, stream_seq: version * 10 }],
    program: "p",
  };
}

describe("snapshot store on KV", () => {
  it("stores and retrieves a snapshot under <tenant>.<type>.<id> (T4.1)", async () => {
    const r = ref();
    const s = snapshot(r, 5);
    expect(await store.put(r, s, undefined)).toBe(true);
    const got = await store.get(r);
    expect(got?.snapshot).toEqual(s);
    const raw = await kv.get(`tenant-a.account.${r.aggregate_id}`);
    expect(raw?.json()).toEqual(s);
  });

  it("keys the default tenant as `_`", async () => {
    const r = ref("");
    await store.put(r, snapshot(r, 1), undefined);
    expect(await kv.get(`_.account.${r.aggregate_id}`)).not.toBeNull();
  });

  it("never replaces a snapshot with one of the same or an older version (T4.2)", async () => {
    const r = ref();
    expect(await store.put(r, snapshot(r, 10), undefined)).toBe(true);
    expect(await store.put(r, snapshot(r, 10, { balance: -1 }), undefined)).toBe(false);
    expect(await store.put(r, snapshot(r, 3), undefined)).toBe(false);
    expect((await store.get(r))?.snapshot?.version).toBe(10);
    expect(await store.put(r, snapshot(r, 20), undefined)).toBe(true);
    expect((await store.get(r))?.snapshot?.version).toBe(20);
  });

  it("lets exactly the newest of racing writers win", async () => {
    const r = ref();
    const other = createSnapshotStore({ kv, log });
    await Promise.all(
      [1, 2, 3, 4, 5, 6].map((v) => (v % 2 ? store : other).put(r, snapshot(r, v * 100), undefined)),
    );
    expect((await store.get(r))?.snapshot?.version).toBe(600);
  });

  it("returns nothing for an aggregate without a snapshot (T4.3)", async () => {
    expect(await store.get(ref())).toBeUndefined();
  });

  it("does not show one tenant's snapshot to another (T4.4)", async () => {
    const a = ref("tenant-a");
    await store.put(a, snapshot(a, 1), undefined);
    expect(await store.get({ ...a, tenant_id: "tenant-b" as TenantId })).toBeUndefined();
  });

  it("ignores garbage and foreign data under the key, with a warning, and can overwrite it", async () => {
    const r = ref();
    const key = `tenant-a.account.${r.aggregate_id}`;
    await kv.put(key, new Uint8Array([0xff, 0x00, 0x13]));
    expect((await store.get(r))?.snapshot).toBeUndefined();
    const foreign = snapshot({ ...r, tenant_id: "tenant-b" as TenantId }, 9);
    await kv.put(key, JSON.stringify(foreign));
    expect((await store.get(r))?.snapshot).toBeUndefined();
    expect(log.lines.filter((l) => l.level === "warn").map((l) => l.msg)).toEqual(
      expect.arrayContaining([
        expect.stringContaining("does not parse"),
        expect.stringContaining("another aggregate"),
      ]),
    );
    expect(await store.put(r, snapshot(r, 2), undefined)).toBe(true);
    expect((await store.get(r))?.snapshot?.version).toBe(2);
  });

  it("deletes a snapshot", async () => {
    const r = ref();
    await store.put(r, snapshot(r, 1), undefined);
    await store.delete(r);
    expect((await store.get(r))?.snapshot).toBeUndefined();
    expect(await store.put(r, snapshot(r, 1), undefined)).toBe(true);
  });
});

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/nats-core";
import {
  openPlacementBucket,
  openPlacementStore,
  startPlacementSource,
} from "../../shared/placement-store/index.ts";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";

let server: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  server = await startTestNats();
  nc = await connectTest(server);
});
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

/** What `nats kv compact` runs (the Bucket implementation has it; the KV interface does not). */
async function compact(kv: object): Promise<void> {
  await (kv as { purgeDeletes(olderMillis?: number): Promise<unknown> }).purgeDeletes(0);
}

const log = {
  info() {},
  warn() {},
  error() {},
  debug() {},
  child() {
    return log;
  },
} as never;

describe("the placement table's first load", () => {
  it("completes after `nats kv compact` removed the bucket's newest message", async () => {
    const kv = await openPlacementBucket(nc, "PLACEMENT_COMPACTED");
    const store = openPlacementStore(kv);
    await store.put("pool.a", {}, 0);
    await store.put("defaults", { default_pool: "a" }, 0);
    const rev = await store.put("tenant.acme", { pool: "a" }, 0);
    // `npm run placement -- unset acme`: a delete marker becomes the newest message, and
    // compaction (what `nats kv compact` runs) removes it; the stream's last sequence stays.
    await store.delete("tenant.acme", rev);
    await compact(kv);
    const source = await startPlacementSource({ nc, bucket: "PLACEMENT_COMPACTED", log, timeoutMs: 1_000 });
    try {
      expect(source.table()?.default_pools).toEqual(["a"]);
      expect(source.table()?.tenants).toEqual({});
    } finally {
      await source.stop();
    }
  });

  it("completes on a bucket that compaction emptied", async () => {
    const kv = await openPlacementBucket(nc, "PLACEMENT_EMPTIED");
    const store = openPlacementStore(kv);
    const rev = await store.put("tenant.acme", { pool: "a" }, 0);
    await store.delete("tenant.acme", rev);
    await compact(kv);
    const source = await startPlacementSource({ nc, bucket: "PLACEMENT_EMPTIED", log, timeoutMs: 1_000 });
    try {
      expect(source.table()).toBeUndefined();
    } finally {
      await source.stop();
    }
  });
});

import { randomUUID } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  PayloadTooLarge,
  StreamError,
  VersionConflict,
  type AggregateId,
  type AggregateType,
  type Event,
  type TenantId,
} from "../../shared/contract/index.ts";
import type { AggregateRef, NewCommit } from "../../shared/aggregate/index.ts";
import { covers, createEventLog, ensureEventStream, StreamSetupError } from "../../shared/event-log/index.ts";
import { aggregateSubject } from "../../shared/naming/index.ts";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { connectTest, startTestNats, uniqueName } from "../support/nats.ts";

const stream = uniqueName("EVENTS");
let server: NatsServer;
let nc: Awaited<ReturnType<typeof connectTest>>;
let log: ReturnType<typeof createEventLog>;

beforeAll(async () => {
  server = await startTestNats();
  nc = await connectTest(server);
  // Each file's stream must not overlap another file's subjects: a unique tenant per file does it.
  await ensureEventStream(nc, stream, {});
  log = createEventLog({ nc, stream });
});
afterAll(async () => {
  const jsm = await jetstreamManager(nc);
  await jsm.streams.delete(stream).catch(() => undefined);
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

function commit(r: AggregateRef, fromVersion: number, count = 1, bytes = 0): NewCommit {
  const command_id = randomUUID();
  const events: Event[] = Array.from({ length: count }, (_, i) => ({
    tenant_id: r.tenant_id,
    event_id: randomUUID(),
    aggregate_id: r.aggregate_id,
    aggregate_type: r.aggregate_type,
    version: fromVersion + i + 1,
    event_type: "deposited",
    payload: { type: "deposited", amount: 1, pad: "x".repeat(bytes) },
    command_id,
    correlation_id: "c",
    timestamp: new Date().toISOString(),
    metadata: {},
  }));
  return { command_id, events, version: fromVersion + count, payload_hash: "h", correlation_id: "c" };
}

describe("event log on JetStream", () => {
  it("appends and reads back a commit with its headers (T5.1)", async () => {
    const r = ref();
    const c = commit(r, 0, 2);
    const { seq, duplicate } = await log.append(r, c, 0);
    expect(duplicate).toBe(false);
    expect(await log.lastSeq(r)).toBe(seq);
    const stored = await log.read(seq);
    expect(stored?.commit.events.map((e) => e.version)).toEqual([1, 2]);
    expect(stored?.payload_hash).toBe("h");
    const jsm = await jetstreamManager(nc);
    const raw = await jsm.streams.getMessage(stream, { seq });
    expect(raw?.subject).toBe(`tenant.tenant-a.aggregate.account.${r.aggregate_id}`);
    expect(raw?.header.get("Aggregate-Version")).toBe("2");
    expect(raw?.header.get("Nats-Msg-Id")).toBe(`tenant-a.account.${r.aggregate_id}.${c.command_id}`);
  });

  it("refuses an append whose expected sequence is stale with VersionConflict", async () => {
    const r = ref();
    await log.append(r, commit(r, 0), 0);
    await expect(log.append(r, commit(r, 0), 0)).rejects.toThrow(VersionConflict);
  });

  it("answers a duplicate message id with the original sequence, whatever the expected sequence", async () => {
    const r = ref();
    const c = commit(r, 0);
    const first = await log.append(r, c, 0);
    await log.append(r, commit(r, 1), first.seq);
    const again = await log.append(r, c, 0);
    expect(again).toEqual({ seq: first.seq, duplicate: true });
  });

  it("reads the commits after a sequence, in order, only of that aggregate (T5.2, T5.3)", async () => {
    const r = ref();
    const other = ref();
    let last = 0;
    const seqs: number[] = [];
    for (let v = 0; v < 12; v++) {
      const { seq } = await log.append(r, commit(r, v), last);
      last = seq;
      seqs.push(seq);
      await log.append(other, commit(other, v), await log.lastSeq(other));
    }
    // more than the direct-get budget: exercises the consumer path too
    const all = await log.readAfter(r, 0, last);
    expect(all.map((s) => s.commit.events[0]!.version)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    const tail = await log.readAfter(r, seqs[9]!, last);
    expect(tail.map((s) => s.commit.events[0]!.version)).toEqual([11, 12]);
    expect(await log.readAfter(r, last, last)).toEqual([]);
  });

  describe("commits that name their predecessors (Aggregate-Previous-Seqs)", () => {
    /** Appends `n` commits to `r` (each naming up to 16 predecessors when `linked`), interleaved with another aggregate's. */
    async function history(r: AggregateRef, n: number, linked: (v: number) => boolean) {
      const other = ref();
      const seqs: number[] = [];
      let otherLast = 0;
      for (let v = 0; v < n; v++) {
        const previous = linked(v) ? seqs.slice(-16).reverse() : [];
        const { seq } = await log.append(r, { ...commit(r, v), previous_seqs: previous }, seqs.at(-1) ?? 0);
        seqs.push(seq);
        otherLast = (await log.append(other, commit(other, v), otherLast)).seq;
      }
      return seqs;
    }

    /** Counts consumer creations on the stream while `work` runs: the scanning path creates one. */
    async function consumersCreated(work: () => Promise<unknown>): Promise<number> {
      let n = 0;
      const sub = nc.subscribe(`$JS.API.CONSUMER.CREATE.${stream}.>`, { callback: () => void n++ });
      const sub2 = nc.subscribe(`$JS.API.CONSUMER.CREATE.${stream}`, { callback: () => void n++ });
      await nc.flush();
      try {
        await work();
        await nc.flush();
      } finally {
        sub.unsubscribe();
        sub2.unsubscribe();
      }
      return n;
    }

    const versions = (commits: Array<{ commit: { events: Array<{ version: number }> } }>) =>
      commits.map((c) => c.commit.events[0]!.version);

    it("reads a long tail by sequence, without a consumer, exactly and in order", async () => {
      const r = ref();
      const seqs = await history(r, 40, () => true);
      let tail: Awaited<ReturnType<typeof log.readAfter>> = [];
      expect(await consumersCreated(async () => (tail = await log.readAfter(r, seqs[4]!, seqs[39]!)))).toBe(
        0,
      );
      expect(versions(tail)).toEqual(Array.from({ length: 35 }, (_, i) => i + 6));
      expect(tail.map((c) => c.seq)).toEqual(seqs.slice(5));
      expect(versions(await log.readAfter(r, 0, seqs[39]!))).toEqual(
        Array.from({ length: 40 }, (_, i) => i + 1),
      );
    });

    it("scans for what older commits without the header cannot vouch for", async () => {
      const r = ref();
      // Commits 31-40 name their predecessors back to 15; 1-14 must be scanned for.
      const seqs = await history(r, 40, (v) => v >= 30);
      let all: Awaited<ReturnType<typeof log.readAfter>> = [];
      expect(
        await consumersCreated(async () => (all = await log.readAfter(r, 0, seqs[39]!))),
      ).toBeGreaterThan(0);
      expect(versions(all)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
      expect(all.map((c) => c.seq)).toEqual(seqs);
    });

    it("ignores a list that does not chain (another aggregate's sequences) and still reads exactly", async () => {
      const r = ref();
      const seqs = await history(r, 10, () => true);
      const stranger = ref();
      const foreign = (await log.append(stranger, commit(stranger, 0), 0)).seq;
      const { seq: last } = await log.append(
        r,
        { ...commit(r, 10), previous_seqs: [seqs[9]!, foreign, seqs[8]!] },
        seqs[9]!,
      );
      const all = await log.readAfter(r, 0, last);
      expect(versions(all)).toEqual(Array.from({ length: 11 }, (_, i) => i + 1));
      expect(all.every((c) => c.subject === all[0]!.subject)).toBe(true);
    });
  });

  it("keeps tenants apart: the same aggregate id under another tenant has no events (T5.4)", async () => {
    const a = ref("tenant-a");
    const b: AggregateRef = { ...a, tenant_id: "tenant-b" as TenantId };
    await log.append(a, commit(a, 0), 0);
    expect(await log.lastSeq(b)).toBe(0);
    expect(await log.readAfter(b, 0, 1_000_000)).toEqual([]);
  });

  it("builds subjects that start with the tenant, `_` for the default tenant (T5.5)", () => {
    const id = randomUUID() as AggregateId;
    expect(aggregateSubject("acme-corp" as TenantId, "Account" as AggregateType, id)).toBe(
      `tenant.acme-corp.aggregate.Account.${id}`,
    );
    expect(aggregateSubject("" as TenantId, "Account" as AggregateType, id)).toBe(
      `tenant._.aggregate.Account.${id}`,
    );
  });

  it("refuses a commit larger than the server's max payload before publishing", async () => {
    const r = ref();
    const before = await log.lastSeq(r);
    await expect(log.append(r, commit(r, 0, 1, log.maxPayload), 0)).rejects.toThrow(PayloadTooLarge);
    expect(await log.lastSeq(r)).toBe(before);
  });

  it("fails an append with StreamError, promptly, when no stream captures the subject", async () => {
    const bare = await startTestNats();
    const conn = await connectTest(bare);
    try {
      const orphan = createEventLog({ nc: conn, stream, timeoutMs: 5_000 });
      const started = performance.now();
      const r = ref();
      await expect(orphan.append(r, commit(r, 0), 0)).rejects.toThrow(StreamError);
      await expect(orphan.append(r, commit(r, 0), 0)).rejects.toThrow(/no stream captures/);
      expect(performance.now() - started).toBeLessThan(2_000);
    } finally {
      await conn.close();
      await bare.stop();
    }
  });

  it("fails an append with StreamError after its timeout when nothing acknowledges it", async () => {
    const bare = await startTestNats();
    const conn = await connectTest(bare);
    try {
      // Something takes the message but is no stream: no ack, no "no responders".
      const sink = conn.subscribe("tenant.>", { callback: () => undefined });
      await conn.flush();
      const silent = createEventLog({ nc: conn, stream, timeoutMs: 300 });
      const r = ref();
      const started = performance.now();
      await expect(silent.append(r, commit(r, 0), 0)).rejects.toThrow(/timeout/);
      const elapsed = performance.now() - started;
      expect(elapsed).toBeGreaterThanOrEqual(290);
      expect(elapsed).toBeLessThan(1_500);
      sink.unsubscribe();
      // The waiter still works for the next append (here: another timeout, not a hang).
      await expect(silent.append(r, commit(r, 0), 0)).rejects.toThrow(StreamError);
    } finally {
      await conn.close();
      await bare.stop();
    }
  });

  it("refuses an ack from another stream than its own", async () => {
    const other = uniqueName("OTHER");
    const bare = await startTestNats();
    const conn = await connectTest(bare);
    try {
      await ensureEventStream(conn, other, {});
      const wrong = createEventLog({ nc: conn, stream, timeoutMs: 2_000 });
      const r = ref();
      await expect(wrong.append(r, commit(r, 0), 0)).rejects.toThrow(/acknowledged by stream/);
    } finally {
      await conn.close();
      await bare.stop();
    }
  });

  it("refuses to start on an existing stream whose subjects do not cover ours", async () => {
    const name = uniqueName("OTHER");
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name, subjects: [`unrelated.${name}.>`] });
    try {
      await expect(ensureEventStream(nc, name)).rejects.toThrow(StreamSetupError);
    } finally {
      await jsm.streams.delete(name);
    }
  });

  it("matches subject filters the way NATS does", () => {
    expect(covers("tenant.*.aggregate.*.*", "tenant.*.aggregate.*.*")).toBe(true);
    expect(covers("tenant.>", "tenant.*.aggregate.*.*")).toBe(true);
    expect(covers(">", "tenant.*.aggregate.*.*")).toBe(true);
    expect(covers("tenant.acme.>", "tenant.*.aggregate.*.*")).toBe(false);
    expect(covers("tenant.*.aggregate.*", "tenant.*.aggregate.*.*")).toBe(false);
  });
});

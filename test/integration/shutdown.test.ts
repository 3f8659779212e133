/**
 * SIGTERM during a burst: the real entry point as a child process against a test nats-server.
 * Every command the client saw succeed must be in the stream exactly once, no commit may be
 * half-written, nothing refused may have been applied, and the process must exit 0.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { randomUUID } from "node:crypto";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { request } from "../support/service.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
let server: NatsServer;
let nc: NatsConnection;
let storage: string;

beforeAll(async () => {
  server = await startTestNats();
  nc = await connectTest(server);
  storage = await mkdtemp(path.join(tmpdir(), "shutdown-"));
});
afterAll(async () => {
  await nc?.close();
  await server?.stop();
  await rm(storage, { recursive: true, force: true });
});

describe("graceful shutdown", () => {
  it("keeps every acknowledged command and exits 0 on SIGTERM during a burst of 200", async () => {
    // As `npm start` runs it: tsx as a loader in the service's own process, so signals reach it.
    const child = spawn(process.execPath, ["--import", "tsx", "shared/main.ts"], {
      cwd: ROOT,
      env: {
        ...process.env,
        AGGREGATE_NATS_URL: server.url,
        AGGREGATE_STORAGE_PATH: storage,
        AGGREGATE_HTTP_PORT: "0",
        AGGREGATE_LOG_LEVEL: "info",
        AGGREGATE_SHUTDOWN_TIMEOUT_MS: "5000",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = once(child, "exit") as Promise<[number | null, string | null]>;
    const lines = createInterface({ input: child.stdout });
    const tail: string[] = [];
    lines.on("line", (l) => tail.push(l.slice(0, 300)));
    child.stderr.on("data", (d: Buffer) => tail.push(`stderr: ${d.toString().slice(0, 500)}`));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no ready line")), 30_000);
      lines.on("line", (line) => {
        if (line.includes('"msg":"ready"')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });

    // 200 commands over 20 aggregates, 40 in flight; SIGTERM once 50 have been answered.
    const aggregates = Array.from({ length: 20 }, () => randomUUID());
    const outcomes: Array<{ command_id: string; status: number | undefined | "no reply"; seq?: number }> = [];
    let answered = 0;
    let signalled = false;
    const queue = Array.from({ length: 200 }, (_, i) => ({
      command_id: randomUUID(),
      aggregate_id: aggregates[i % 20]!,
    }));
    const worker = async () => {
      for (let next = queue.shift(); next; next = queue.shift()) {
        try {
          const r = await request(
            nc,
            "aggregate.bank-account.submit",
            { ...next, payload: { type: "deposit", amount: 1 } },
            { "x-tenant-id": "burst" },
            8_000,
          );
          outcomes.push({
            command_id: next.command_id,
            status: r.status,
            seq: r.body["stream_seq"] as number | undefined,
          });
        } catch {
          outcomes.push({ command_id: next.command_id, status: "no reply" });
        }
        if (++answered === 50 && !signalled) {
          signalled = true;
          child.kill("SIGTERM");
        }
      }
    };
    await Promise.all(Array.from({ length: 40 }, worker));
    const [code, sig] = await exited;
    expect({ code, sig, tail: code === 0 ? [] : tail.slice(-5) }).toEqual({ code: 0, sig: null, tail: [] });
    expect(code).toBe(0);

    // Read the whole stream back.
    const js = jetstream(nc);
    const consumer = await js.consumers.get("AGGREGATE_EVENTS", {
      filter_subjects: "tenant.burst.aggregate.*.*",
    });
    const stored = new Map<string, { seq: number; versions: number[] }>();
    const versionsByAggregate = new Map<string, number[]>();
    const info = await consumer.info();
    let remaining = info.num_pending;
    while (remaining > 0) {
      const batch = await consumer.fetch({ max_messages: Math.min(remaining, 500), expires: 2_000 });
      for await (const m of batch) {
        remaining--;
        const commit = m.json<{ command_id: string; events: Array<{ version: number }> }>();
        expect(commit.events.length).toBeGreaterThan(0);
        expect(stored.has(commit.command_id)).toBe(false);
        stored.set(commit.command_id, { seq: m.seq, versions: commit.events.map((e) => e.version) });
        const aggregate = m.subject.split(".").pop()!;
        versionsByAggregate.set(aggregate, [
          ...(versionsByAggregate.get(aggregate) ?? []),
          ...commit.events.map((e) => e.version),
        ]);
      }
    }
    const ok = outcomes.filter((o) => o.status === undefined);
    expect(ok.length).toBeGreaterThanOrEqual(50);
    for (const o of ok) expect(stored.get(o.command_id)?.seq).toBe(o.seq);
    // A command refused with an error reply was not applied.
    for (const o of outcomes.filter((x) => typeof x.status === "number"))
      expect(stored.has(o.command_id)).toBe(false);
    expect(outcomes.filter((o) => typeof o.status === "number").every((o) => o.status === 503)).toBe(true);
    // Versions per aggregate are contiguous, in stream order.
    for (const versions of versionsByAggregate.values()) {
      expect(versions).toEqual(Array.from({ length: versions.length }, (_, i) => i + 1));
    }
  });
});

/**
 * The `query` scenario (issue 7): a filtered page on a declared field over 100k aggregates in
 * SQLite, projection lag under the 64-in-flight command load, and the projector's throughput
 * against the command throughput.
 *
 * The 100k rows are written straight into the read model through the store API (the same
 * `commit` the projector calls): producing them through NATS would take minutes of the bench for
 * nothing the page query measures. The lag and throughput parts go through the real service.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { DEFAULT_STREAM } from "../../../shared/naming/index.ts";
import {
  openSqliteStore,
  parseFilter,
  type QueryFields,
  type ReadModelRow,
} from "../../../shared/query/index.ts";
import { startService } from "./children.ts";
import { sorted, percentile } from "./stats.ts";

export interface QueryBenchOptions {
  readonly natsUrl: string;
  readonly logLevel: string;
  /** Run the service from source under tsx instead of the build (see ServiceOptions.fromSource). */
  readonly fromSource?: boolean;
  readonly rows: number;
  /** Page queries timed, in-process and through NATS each. */
  readonly queries: number;
  /** Command load for the lag part. */
  readonly inFlight: number;
  readonly loadMs: number;
  /** Runs the 64-in-flight command load (the bench's load generators) for `ms` on a tenant. */
  readonly load: (
    tenant: string,
    aggregates: readonly string[],
    ms: number,
  ) => Promise<{ ok: number; ms: number }>;
  readonly log: (line: string) => void;
}

export interface QueryBenchResult {
  readonly rows: number;
  readonly seedMs: number;
  /** One page (limit 50) of `balance > x && status == "open"`, sorted by -balance, store call in-process. */
  readonly pageStoreMs: { p50: number; p99: number };
  /** The same through `aggregate.bank-account.query` (NATS round trip, the service's SQLite). */
  readonly pageEndpointMs: { p50: number; p99: number };
  /** Commit seen on NATS → its watch notification, under the command load. */
  readonly lagMs: { p50: number; p99: number; max: number; samples: number; missing: number };
  readonly commandsPerSec: number;
  /** A fresh projector catching up with the whole stream. */
  readonly projectorCommitsPerSec: number;
  readonly projectorCommits: number;
}

const TYPE = "bank-account";
const FIELDS: QueryFields = new Map([
  ["balance", "number"],
  ["status", "string"],
]);
const TENANT = "bench-100k";

export async function benchQuery(o: QueryBenchOptions): Promise<QueryBenchResult> {
  const nc = await connect({ servers: o.natsUrl, noAsyncTraces: true, name: "bench-query" });
  const dir = await mkdtemp(path.join(tmpdir(), "aggregate-bench-query-"));
  try {
    const jsm = await jetstreamManager(nc);
    const lastSeq = async () => (await jsm.streams.info(DEFAULT_STREAM)).state.last_seq;

    // 1. 100k rows, through the store API, with the checkpoint at the stream's end so that the
    //    service's projector does not replay the earlier scenarios' commits while we measure.
    o.log(`  seeding ${o.rows} ${TYPE} rows into SQLite through the store API`);
    const store = openSqliteStore({ file: path.join(dir, "read-model.sqlite") });
    await store.prepareType(TYPE, FIELDS);
    const seeded = performance.now();
    const checkpoint = await lastSeq();
    for (let at = 0; at < o.rows; at += 10_000) {
      const batch: ReadModelRow[] = [];
      for (let i = at; i < Math.min(o.rows, at + 10_000); i++) {
        const state = { balance: (i * 7919) % 10_000, status: i % 3 === 0 ? "closed" : "open" };
        batch.push({
          tenant: TENANT,
          id: randomUUID(),
          version: 1,
          stream_seq: 1,
          state: JSON.stringify(state),
        });
      }
      await store.commit(TYPE, batch, checkpoint);
    }
    const seedMs = performance.now() - seeded;
    const thresholds = Array.from({ length: o.queries }, (_, i) => (i * 37) % 9_900);
    const text = (x: number) => `balance > ${x} && status == "open"`;
    const storeTimes: number[] = [];
    for (const x of thresholds) {
      const t = performance.now();
      await store.query(
        {
          tenant: TENANT,
          type: TYPE,
          filter: parseFilter(text(x)),
          sort: [{ path: ["balance"], type: "number", descending: true }],
          limit: 51,
        },
        FIELDS,
      );
      storeTimes.push(performance.now() - t);
    }
    await store.close();
    const pageStore = pct(storeTimes);
    o.log(`  page, store call: p50 ${pageStore.p50.toFixed(3)} ms, p99 ${pageStore.p99.toFixed(3)} ms`);

    // 2. The same through the service's endpoint; then the lag under load, with a watch.
    const service = await startService({
      natsUrl: o.natsUrl,
      logLevel: o.logLevel,
      fromSource: o.fromSource ?? false,
      env: { AGGREGATE_STORAGE_PATH: dir, AGGREGATE_QUERY: "true" },
    });
    let lag: QueryBenchResult["lagMs"];
    let commandsPerSec: number;
    const endpointTimes: number[] = [];
    try {
      const h = natsHeaders();
      h.set("x-tenant-id", TENANT);
      for (const x of thresholds) {
        const body = JSON.stringify({ filter: text(x), sort: ["-balance"], limit: 50 });
        const t = performance.now();
        const r = await nc.request(`aggregate.${TYPE}.query`, body, { headers: h, timeout: 5_000 });
        endpointTimes.push(performance.now() - t);
        if (r.headers?.get("Nats-Service-Error-Code")) throw new Error(`query failed: ${r.string()}`);
      }
      o.log(`  page, through NATS: p50 ${pct(endpointTimes).p50.toFixed(3)} ms`);

      const tenant = "bench-lag";
      const committed = new Map<string, number>();
      const lags: number[] = [];
      nc.subscribe(`tenant.${tenant}.aggregate.${TYPE}.*`, {
        callback: (_e, m) => {
          const id = m.subject.slice(m.subject.lastIndexOf(".") + 1);
          committed.set(`${id}:${m.headers?.get("Aggregate-Version") ?? ""}`, performance.now());
        },
      });
      const deliverTo = `tenant.${tenant}.watch.bench`;
      let notified = 0;
      nc.subscribe(deliverTo, {
        callback: (_e, m) => {
          const n = m.json<{ type: string; aggregate_id?: string; version?: number }>();
          if (n.type === "end") return;
          notified++;
          const at = committed.get(`${n.aggregate_id}:${n.version}`);
          if (at !== undefined) lags.push(performance.now() - at);
        },
      });
      await nc.flush();
      const lh = natsHeaders();
      lh.set("x-tenant-id", tenant);
      const w = await nc.request(
        `aggregate.${TYPE}.watch`,
        JSON.stringify({ deliver_to: deliverTo, limit: 1 }),
        {
          headers: lh,
          timeout: 5_000,
        },
      );
      if (w.headers?.get("Nats-Service-Error-Code")) throw new Error(`watch failed: ${w.string()}`);
      const aggregates = Array.from({ length: 1_000 }, () => randomUUID());
      const run = await o.load(tenant, aggregates, o.loadMs);
      commandsPerSec = run.ok / (run.ms / 1000);
      // Let the last notifications arrive.
      const until = Date.now() + 5_000;
      while (notified < committed.size && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      const s = sorted(lags);
      lag = {
        p50: percentile(s, 50),
        p99: percentile(s, 99),
        max: s.at(-1) ?? NaN,
        samples: s.length,
        missing: committed.size - notified,
      };
      o.log(
        `  lag under ${o.inFlight} in flight (${commandsPerSec.toFixed(0)} cmd/s): p50 ${lag.p50.toFixed(1)} ms, ` +
          `p99 ${lag.p99.toFixed(1)} ms over ${lag.samples} commits, ${lag.missing} without a notification`,
      );
    } finally {
      await service.stop();
    }

    // 3. A fresh projector (a new service, empty read model) catching up with the whole stream.
    const target = await lastSeq();
    const fresh = await startService({
      natsUrl: o.natsUrl,
      logLevel: o.logLevel,
      fromSource: o.fromSource ?? false,
      env: { AGGREGATE_QUERY: "true" },
    });
    let projectorCommitsPerSec = NaN;
    let projectorCommits = 0;
    try {
      let first: { t: number; cp: number } | undefined;
      const deadline = Date.now() + 120_000;
      for (;;) {
        const body = (await (await fetch(`http://127.0.0.1:${fresh.httpPort}/ready`)).json()) as {
          projections?: Array<{ checkpoint: number }>;
        };
        const cp = body.projections?.[0]?.checkpoint ?? 0;
        const t = performance.now();
        if (cp > 0 && !first) first = { t, cp };
        if (first && cp >= target) {
          projectorCommits = cp - first.cp;
          projectorCommitsPerSec = projectorCommits / ((t - first.t) / 1000);
          break;
        }
        if (Date.now() > deadline) throw new Error(`the fresh projector did not reach ${target}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      await fresh.stop();
    }
    o.log(
      `  fresh projector: ${projectorCommitsPerSec.toFixed(0)} commits/s over ${projectorCommits} commits`,
    );
    return {
      rows: o.rows,
      seedMs,
      pageStoreMs: pageStore,
      pageEndpointMs: pct(endpointTimes),
      lagMs: lag,
      commandsPerSec,
      projectorCommitsPerSec,
      projectorCommits,
    };
  } finally {
    await nc.close();
    await rm(dir, { recursive: true, force: true });
  }
}

function pct(times: readonly number[]): { p50: number; p99: number } {
  const s = sorted(times);
  return { p50: percentile(s, 50), p99: percentile(s, 99) };
}

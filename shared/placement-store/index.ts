/**
 * The tenant placement table in JetStream KV (`TENANT_PLACEMENT`): the worker's live view of it
 * (`startPlacementSource`: loaded at start, watched for hot reload, a local file only when the
 * bucket cannot be read at start) and the compare-and-set writes of the CLI (`openPlacementStore`).
 */
import { readFile } from "node:fs/promises";
import type { NatsConnection } from "@nats-io/nats-core";
import { Kvm, type KV, type KvWatchEntry } from "@nats-io/kv";
import type { QueuedIterator } from "@nats-io/nats-core";
import type { Logger } from "../aggregate/index.ts";
import {
  buildPlacementTable,
  loadPlacementTable,
  parsePlacementEntry,
  type PlacementEntry,
  type PlacementTable,
} from "../placement/index.ts";

/** Revisions kept per key: the last few moves of a tenant stay readable (`nats kv history`). */
const HISTORY = 10;

export interface PlacementBucketOptions {
  readonly replicas?: number;
}

/** Opens the placement bucket, creating it (empty) when it does not exist yet. */
export function openPlacementBucket(
  nc: NatsConnection,
  bucket: string,
  options: PlacementBucketOptions = {},
): Promise<KV> {
  return new Kvm(nc).create(bucket, { history: HISTORY, replicas: options.replicas ?? 1 });
}

/** Where the table a worker uses came from. */
export const PlacementOrigin = {
  /** The KV bucket, watched. */
  Kv: "kv",
  /** The fallback file: the bucket could not be read at start. KV is retried in the background. */
  File: "file",
} as const;
export type PlacementOrigin = (typeof PlacementOrigin)[keyof typeof PlacementOrigin];

/** What a worker knows about its placement, for `/admin` and the admin micro endpoints. */
export interface PlacementStatus {
  readonly origin: PlacementOrigin;
  /** The last bucket revision applied (0 from a file or an empty bucket). */
  readonly revision: number;
  /** How many times the table changed since start (1 = the initial load). */
  readonly updates: number;
  /** Entries ignored because their value was invalid, with the reason. */
  readonly ignored: Readonly<Record<string, string>>;
  readonly table: PlacementTable | undefined;
}

export interface PlacementSource {
  /** The current table; undefined when there is none (every pool then serves every tenant). */
  table(): PlacementTable | undefined;
  status(): PlacementStatus;
  /** Reads the whole table again (a new watcher); from a file origin it tries the bucket first. */
  reload(): Promise<PlacementStatus>;
  /** Resolves once a table at `revision` or later is in use (tests, the move protocol). */
  waitForRevision(revision: number, timeoutMs: number): Promise<boolean>;
  stop(): Promise<void>;
}

export interface PlacementSourceOptions {
  readonly nc: NatsConnection;
  readonly bucket: string;
  readonly replicas?: number;
  /** The fallback table file (JSON or YAML), read only when the bucket cannot be read at start. */
  readonly file?: string | undefined;
  readonly log: Logger;
  /** How long the first load from the bucket may take before it counts as unreachable. */
  readonly timeoutMs?: number;
  /** Delay between attempts to reach the bucket after a fallback or a lost watcher. */
  readonly retryMs?: number;
  /** Called after every change of the table. */
  readonly onChange?: (status: PlacementStatus) => void;
}

/**
 * Loads the table and keeps it current. At start the bucket is read (created if missing) and
 * watched; every change is applied as it arrives, without a restart. When the bucket cannot be
 * read at start, the fallback file is used and the bucket retried in the background; with no
 * file either, start-up fails, naming both.
 */
export async function startPlacementSource(options: PlacementSourceOptions): Promise<PlacementSource> {
  const { nc, bucket, log } = options;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const retryMs = options.retryMs ?? 5_000;
  let origin: PlacementOrigin = PlacementOrigin.Kv;
  let table: PlacementTable | undefined;
  let revision = 0;
  let updates = 0;
  let ignored: Record<string, string> = {};
  let watcher: QueuedIterator<KvWatchEntry> | undefined;
  let stopped = false;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  const waiters = new Set<() => void>();

  const status = (): PlacementStatus => ({ origin, revision, updates, ignored: { ...ignored }, table });

  const publish = (next: PlacementTable | undefined, warnings: readonly string[]) => {
    table = next;
    updates++;
    for (const w of warnings) log.warn({ bucket, revision }, `placement: ${w}`);
    log.info(
      {
        bucket,
        origin,
        revision,
        pools: next ? Object.keys(next.pools) : [],
        default_pools: next?.default_pools ?? [],
        tenants: next ? Object.keys(next.tenants).length : 0,
      },
      next ? "placement table applied" : "placement table empty: every pool serves every tenant",
    );
    for (const wake of [...waiters]) wake();
    try {
      options.onChange?.(status());
    } catch (err) {
      log.warn({ err }, "placement change hook failed");
    }
  };

  /** Reads the bucket and starts watching it; resolves once the initial values are applied. */
  async function attach(): Promise<void> {
    const kv = await withTimeout(openPlacementBucket(nc, bucket, { replicas: options.replicas }), timeoutMs);
    // The initial values are all in once the watcher has delivered the last of them (nothing
    // pending after it) or an entry at the stream's last sequence. Not the last sequence alone:
    // a compacted bucket (`nats kv compact`, purged deletes) can have lost that message.
    const state = (await withTimeout(kv.status(), timeoutMs)).streamInfo.state;
    const last = state.last_seq;
    const w = await withTimeout(kv.watch(), timeoutMs);
    const entries = new Map<string, PlacementEntry>();
    const problems: Record<string, string> = {};
    let initialized = false;
    let markReady!: () => void;
    const ready = new Promise<void>((resolve) => (markReady = resolve));
    const apply = () => {
      ignored = { ...problems };
      const built = buildPlacementTable(entries.values());
      publish(built.table, built.warnings);
    };
    if (state.messages === 0) {
      initialized = true;
      revision = 0;
      origin = PlacementOrigin.Kv;
      apply();
      markReady();
    }
    void (async () => {
      try {
        for await (const e of w) {
          if (e.operation === "PUT") {
            const parsed = parsePlacementEntry(e.key, e.value);
            if (parsed.ok) {
              entries.set(e.key, parsed.entry);
              delete problems[e.key];
            } else {
              // Ignored as if absent, so every worker derives the same table from the bucket.
              entries.delete(e.key);
              problems[e.key] = parsed.problem;
              log.warn(
                { bucket, key: e.key, revision: e.revision, problem: parsed.problem },
                "placement entry ignored",
              );
            }
          } else {
            entries.delete(e.key);
            delete problems[e.key];
          }
          revision = Math.max(revision, e.revision);
          if (!initialized && (e.delta === 0 || e.revision >= last)) {
            initialized = true;
            origin = PlacementOrigin.Kv;
            apply();
            markReady();
          } else if (initialized) {
            apply();
          }
        }
      } catch (err) {
        log.warn({ err, bucket }, "placement watcher failed");
      }
      if (watcher === w && !stopped) {
        // The watcher ended without stop(): keep the table, find the bucket again.
        log.warn({ bucket }, "placement watcher ended; reattaching");
        watcher = undefined;
        scheduleRetry();
      }
    })();
    try {
      await withTimeout(ready, timeoutMs);
    } catch (err) {
      w.stop();
      throw err;
    }
    const previous = watcher;
    watcher = w;
    previous?.stop();
    // Attached: a retry scheduled after a fallback has nothing left to do.
    clearTimeout(retryTimer);
    retryTimer = undefined;
  }

  function scheduleRetry(): void {
    if (stopped || retryTimer) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      attach().then(
        () => log.info({ bucket, revision }, "placement bucket attached"),
        (err: unknown) => {
          log.warn({ err, bucket }, "placement bucket still unreachable");
          scheduleRetry();
        },
      );
    }, retryMs);
    retryTimer.unref?.();
  }

  async function loadFile(reason: unknown): Promise<void> {
    if (!options.file) {
      throw new Error(
        `the placement bucket ${bucket} cannot be read (${String(reason)}) and no AGGREGATE_PLACEMENT_FILE is set`,
        { cause: reason },
      );
    }
    const next = loadPlacementTable(await readFile(options.file, "utf8"));
    origin = PlacementOrigin.File;
    revision = 0;
    ignored = {};
    log.warn(
      { err: reason, bucket, file: options.file },
      "placement bucket unreachable: using the fallback file",
    );
    publish(next, []);
  }

  try {
    await attach();
  } catch (err) {
    await loadFile(err);
    scheduleRetry();
  }

  return {
    table: () => table,
    status,
    async reload() {
      try {
        await attach();
      } catch (err) {
        if (origin !== PlacementOrigin.File) throw err;
        await loadFile(err);
      }
      return status();
    },
    async waitForRevision(target, ms) {
      if (revision >= target) return true;
      return new Promise<boolean>((resolve) => {
        const done = (ok: boolean) => {
          clearTimeout(timer);
          waiters.delete(check);
          resolve(ok);
        };
        const check = () => {
          if (revision >= target) done(true);
        };
        const timer = setTimeout(() => done(false), ms);
        waiters.add(check);
      });
    },
    async stop() {
      stopped = true;
      clearTimeout(retryTimer);
      const w = watcher;
      watcher = undefined;
      w?.stop();
      await Promise.resolve();
    },
  };
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export { openPlacementStore, PlacementWriteError, type PlacementStore, type StoredValue } from "./store.ts";
export { moveTenant, type MoveOptions, type MoveResult } from "./move.ts";

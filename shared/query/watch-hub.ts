/**
 * Live watches of one aggregate type on this replica: each holds a filter, a delivery subject and
 * an expiry. The projector tells the hub every commit it folds (state before and after); the hub
 * classifies it per watch (enter, update, leave) and publishes a notification. No NATS here: the
 * publisher is handed in.
 *
 * The handshake that loses nothing: a watch is opened (registered, buffering) BEFORE its initial
 * result is read; once the reply is sent, `go` delivers the buffered changes newer than the
 * checkpoint the initial result reflects, in order, and the watch is live. A change is therefore
 * either in the initial result or in a notification, never in neither and never in both.
 */
import { Unavailable } from "../contract/index.ts";
import type { Logger } from "../aggregate/index.ts";
import type { Predicate } from "./predicate.ts";
import type { ProjectedChange, ProjectionBreak, ProjectionListener } from "./projector.ts";

/** What happened to an aggregate, seen through a watch's filter. */
export const ChangeKind = { Enter: "enter", Update: "update", Leave: "leave" } as const;
export type ChangeKind = (typeof ChangeKind)[keyof typeof ChangeKind];

/** Why a watch ended; the last notification a watch sends says which. */
export const EndReason = {
  /** Not renewed within its TTL. */
  Expired: "expired",
  /** The client cancelled it. */
  Cancelled: "cancelled",
  /** The replica holding it stopped. */
  Shutdown: "shutdown",
  /** More changes arrived during the handshake than a watch may buffer. */
  Overflow: "overflow",
  /** The stream was recreated and the read model is rebuilt (ProjectionBreak). */
  Rebuild: "rebuild",
  /** Another replica projects the type now (ProjectionBreak). */
  Moved: "moved",
} as const satisfies Record<string, string> & Record<Capitalize<ProjectionBreak>, ProjectionBreak>;
export type EndReason = (typeof EndReason)[keyof typeof EndReason];

/** One notification on a watch's delivery subject (JSON). */
export type WatchNotification =
  | {
      readonly subscription_id: string;
      /** 1, 2, 3, … per watch: a gap means a notification was lost (NATS core is at most once). */
      readonly watch_seq: number;
      readonly type: ChangeKind;
      readonly aggregate_id: string;
      readonly version: number;
      readonly stream_seq: number;
      /** The state after the change; absent on `leave`. */
      readonly state?: unknown;
    }
  | {
      readonly subscription_id: string;
      readonly watch_seq: number;
      readonly type: "end";
      readonly reason: EndReason;
    };

export interface Watch {
  readonly id: string;
  readonly tenant: string;
  /** Delivery subject of the notifications. */
  readonly subject: string;
  readonly expiresAt: number;
}

export interface WatchHubOptions {
  readonly type: string;
  readonly publish: (subject: string, data: Uint8Array) => void;
  /** How long a watch lives without a renewal. */
  readonly ttlMs: number;
  /** Watches one tenant may hold on this replica. */
  readonly maxPerTenant: number;
  /** Changes one watch may buffer during its handshake; default 10,000. */
  readonly maxBuffered?: number;
  /** How often expired watches are removed; default min(ttl / 4, 1 s). */
  readonly sweepMs?: number;
  readonly now?: () => number;
  readonly log: Logger;
}

export interface WatchHub extends AsyncDisposable {
  /** What the projector tells. */
  readonly listener: ProjectionListener;
  /**
   * Registers a buffering watch (before its initial result is read). Unavailable (503) when the
   * tenant holds `maxPerTenant` watches here: another replica may have room.
   */
  open(w: {
    id: string;
    tenant: string;
    subject: string;
    predicate: Predicate;
    /** Called once when the watch ends, however it ends. */
    onEnd?: () => void;
  }): Watch;
  /**
   * Ends the handshake, right after the reply is sent: delivers the buffered changes newer than
   * `checkpoint`, in order, and makes the watch live; a watch whose buffer overflowed ends
   * (`overflow`) instead.
   */
  go(id: string, checkpoint: number): void;
  /** Moves the expiry; undefined when the watch is not here (or is another tenant's). */
  renew(id: string, tenant: string): Watch | undefined;
  /** Ends a watch: an `end` notification with the reason, unless `silent` (a failed handshake). */
  end(id: string, reason: EndReason, silent?: boolean): boolean;
  get(id: string): Watch | undefined;
  size(): number;
  /** Ends every watch past its expiry (`expired`); a timer calls it, tests may too. */
  sweep(): void;
  /** Ends every watch (`shutdown`) and stops the sweeper. */
  stop(): void;
}

interface Entry {
  readonly id: string;
  readonly tenant: string;
  readonly subject: string;
  readonly predicate: Predicate;
  readonly onEnd: (() => void) | undefined;
  expiresAt: number;
  seq: number;
  /** Set while the handshake runs; undefined once live. */
  buffer: Array<{ stream_seq: number; body: PendingBody }> | undefined;
  /**
   * The checkpoint of the initial result (set by `go`): a change at or below it is in that result.
   * One can still arrive after the handshake: the read model's writes commit on their own thread,
   * so a page may already hold a fold whose changes are announced a moment later.
   */
  after: number;
  overflow: boolean;
}

type PendingBody = {
  type: ChangeKind;
  aggregate_id: string;
  version: number;
  stream_seq: number;
  state?: unknown;
};

const encoder = new TextEncoder();

export function createWatchHub(options: WatchHubOptions): WatchHub {
  const { log, ttlMs } = options;
  const now = options.now ?? Date.now;
  const maxBuffered = options.maxBuffered ?? 10_000;
  const watches = new Map<string, Entry>();
  const byTenant = new Map<string, Set<Entry>>();

  const send = (e: Entry, body: PendingBody | { type: "end"; reason: EndReason }) => {
    e.seq++;
    try {
      options.publish(
        e.subject,
        encoder.encode(JSON.stringify({ subscription_id: e.id, watch_seq: e.seq, ...body })),
      );
    } catch (err) {
      log.warn({ err, subscription_id: e.id }, "watch notification not sent");
    }
  };

  const end = (id: string, reason: EndReason, silent = false): boolean => {
    const e = watches.get(id);
    if (!e) return false;
    watches.delete(id);
    const set = byTenant.get(e.tenant);
    set?.delete(e);
    if (set?.size === 0) byTenant.delete(e.tenant);
    if (!silent) send(e, { type: "end", reason });
    try {
      e.onEnd?.();
    } catch (err) {
      log.warn({ err, subscription_id: id }, "watch clean-up failed");
    }
    log.debug(
      { aggregate_type: options.type, subscription_id: id, tenant_id: e.tenant, reason },
      "watch ended",
    );
    return true;
  };

  const changes = (list: readonly ProjectedChange[]) => {
    if (watches.size === 0) return;
    for (const c of list) {
      const set = byTenant.get(c.tenant);
      if (!set) continue;
      // Parsed at most once per change, however many watches look at it.
      let before: unknown;
      let after: unknown;
      let parsed = false;
      for (const e of set) {
        if (!parsed) {
          before = c.before === undefined ? undefined : JSON.parse(c.before);
          after = JSON.parse(c.after);
          parsed = true;
        }
        // An aggregate the read model did not hold was in no result, whatever its initial state.
        const was = c.before !== undefined && e.predicate(before);
        const is = e.predicate(after);
        if (!was && !is) continue;
        const kind = !was ? ChangeKind.Enter : is ? ChangeKind.Update : ChangeKind.Leave;
        const body: PendingBody = {
          type: kind,
          aggregate_id: c.id,
          version: c.version,
          stream_seq: c.stream_seq,
          ...(kind === ChangeKind.Leave ? {} : { state: after }),
        };
        if (e.buffer) {
          if (e.buffer.length >= maxBuffered) e.overflow = true;
          else e.buffer.push({ stream_seq: c.stream_seq, body });
        } else if (c.stream_seq > e.after) {
          send(e, body);
        }
      }
    }
  };

  const sweep = () => {
    const t = now();
    for (const e of [...watches.values()]) if (e.expiresAt <= t) end(e.id, EndReason.Expired);
  };
  const timer = setInterval(sweep, options.sweepMs ?? Math.max(10, Math.min(ttlMs / 4, 1_000)));
  timer.unref();

  const view = (e: Entry): Watch => ({
    id: e.id,
    tenant: e.tenant,
    subject: e.subject,
    expiresAt: e.expiresAt,
  });

  const stop = () => {
    clearInterval(timer);
    for (const id of [...watches.keys()]) end(id, EndReason.Shutdown);
  };

  return {
    listener: {
      changes,
      interrupted(reason) {
        // The changes to come no longer continue what the watches were told: their clients
        // must watch again (and get a fresh initial result).
        for (const id of [...watches.keys()]) end(id, reason);
      },
    },
    open(w) {
      const set = byTenant.get(w.tenant) ?? new Set<Entry>();
      if (set.size >= options.maxPerTenant) {
        throw new Unavailable(
          `the tenant holds ${set.size} watches of ${options.type} on this replica, the most allowed (AGGREGATE_WATCH_MAX_PER_TENANT); cancel one or retry`,
        );
      }
      const e: Entry = {
        id: w.id,
        tenant: w.tenant,
        subject: w.subject,
        predicate: w.predicate,
        onEnd: w.onEnd,
        expiresAt: now() + ttlMs,
        seq: 0,
        buffer: [],
        after: 0,
        overflow: false,
      };
      watches.set(e.id, e);
      set.add(e);
      byTenant.set(w.tenant, set);
      return view(e);
    },
    go(id, checkpoint) {
      const e = watches.get(id);
      if (!e?.buffer) return;
      const buffered = e.buffer;
      e.buffer = undefined;
      e.after = checkpoint;
      if (e.overflow) {
        end(id, EndReason.Overflow);
        return;
      }
      // Changes at or below the checkpoint are in the initial result already.
      for (const b of buffered) if (b.stream_seq > checkpoint) send(e, b.body);
    },
    renew(id, tenant) {
      const e = watches.get(id);
      if (!e || e.tenant !== tenant) return undefined;
      e.expiresAt = now() + ttlMs;
      return view(e);
    },
    end,
    get(id) {
      const e = watches.get(id);
      return e ? view(e) : undefined;
    },
    size: () => watches.size,
    sweep,
    stop,
    [Symbol.asyncDispose]: () => {
      stop();
      return Promise.resolve();
    },
  };
}

/**
 * The projector: folds one aggregate type's commits from the event stream into the read model.
 * An ordered consumer starts right after the store's checkpoint; each batch of commits is folded
 * with the type's apply program (one sandbox call per commit) and written, rows and checkpoint,
 * in one transaction. A row is only replaced by a newer version, so redelivery is a no-op, and
 * deleting the read model rebuilds it from the stream.
 *
 * The checkpoint is a position in one stream: the store also records the stream's identity (its
 * creation time), and a stream that was deleted and created again (another identity, or a last
 * sequence below the checkpoint) makes the projector rebuild the type instead of waiting, forever,
 * for sequences the new stream has not reached.
 *
 * After each transaction the projector tells its listener (the watches) every commit it folded,
 * with the state before and after, in stream order.
 */
import type { JetStreamClient, JetStreamManager, JsMsg, MsgRequest } from "@nats-io/jetstream";
import { LruCache, type Logger } from "../aggregate/index.ts";
import { ProgramFailure, type AggregateProgram } from "../sandbox/index.ts";
import { ProgramError, type JsonObject } from "../contract/index.ts";
import { CommitHeader } from "../naming/index.ts";
import { rowKey, type CurrentRow, type ReadModelRow, type ReadModelStore } from "./store.ts";

export interface ProjectorOptions {
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly stream: string;
  readonly type: string;
  readonly program: AggregateProgram;
  /** JSON text of the type's initial state. */
  readonly initialState: string;
  readonly store: ReadModelStore;
  readonly log: Logger;
  /** Commits per transaction at most; default 256. */
  readonly batchSize?: number;
  /** Rows this projector wrote last, kept to fold the next commits without reading them back; default 10,000. */
  readonly rowCacheSize?: number;
  /** How often a replica without the projector lock (PostgreSQL) retries it; default 2000 ms. */
  readonly lockRetryMs?: number;
  /** How often a running projector checks that the stream is still the one it projects; default 5000 ms. */
  readonly identityCheckMs?: number;
  /** Told about every commit folded, and about breaks in the sequence of commits it is told. */
  readonly listener?: ProjectionListener;
  /**
   * The state of an aggregate after `version` where this process already knows it (the command
   * handler's cache, when this worker made the commit): used instead of folding the commit in the
   * sandbox again. The program is the same and deterministic, so the state is the same.
   */
  readonly knownState?: KnownState;
}

export type KnownState = (tenant: string, id: string, version: number, seq: number) => string | undefined;

/** One commit folded into the read model. */
export interface ProjectedChange {
  readonly tenant: string;
  readonly id: string;
  /** The aggregate's version after the commit. */
  readonly version: number;
  readonly stream_seq: number;
  /** JSON text of the state before the commit; undefined when the aggregate was not in the read model. */
  readonly before: string | undefined;
  /** JSON text of the state after the commit. */
  readonly after: string;
}

/** Why the changes a listener was told stop being a complete account of the read model. */
export const ProjectionBreak = {
  /** The stream was recreated: the type is being rebuilt from the beginning. */
  Rebuild: "rebuild",
  /** Another replica projects the type now (PostgreSQL): its commits are not told here. */
  Moved: "moved",
} as const;
export type ProjectionBreak = (typeof ProjectionBreak)[keyof typeof ProjectionBreak];

export interface ProjectionListener {
  /**
   * Commits just written (rows and checkpoint committed), in stream order. Called synchronously
   * after the transaction; it must not throw and must not block.
   */
  changes(changes: readonly ProjectedChange[]): void;
  /** The changes told so far no longer continue into the next ones. */
  interrupted(reason: ProjectionBreak): void;
  /** This process took (true) or lost (false) the right to project the type. */
  holding?(holding: boolean): void;
}

/** How far the projection is behind the stream. */
export interface ProjectorStatus {
  readonly aggregate_type: string;
  /** Whether this process writes the projection (false: another replica holds the lock). */
  readonly projecting: boolean;
  /** Stream sequence of the last commit folded. */
  readonly checkpoint: number;
  /** Commits of this type in the stream not yet folded, as of the last delivery. */
  readonly pending: number;
  /** Milliseconds between a commit's append and its projection, for the last commit folded. */
  readonly lag_ms: number;
}

export interface Projector extends AsyncDisposable {
  readonly type: string;
  status(): ProjectorStatus;
  /**
   * Resolves true once every commit of this type up to `streamSeq` is in the read model, false
   * when `timeoutMs` passes first (read-your-writes).
   */
  waitFor(streamSeq: number, timeoutMs: number): Promise<boolean>;
  stop(): Promise<void>;
}

export async function startProjector(options: ProjectorOptions): Promise<Projector> {
  const { js, jsm, stream, type, program, store, log } = options;
  const batchSize = options.batchSize ?? 256;
  const filter = `tenant.*.aggregate.${type}.*`;
  let checkpoint = await store.checkpoint(type);
  let pending = 0;
  let lagMs = 0;
  let projecting = false;
  let stopped = false;
  let release: (() => Promise<void>) | undefined;
  let messages: { stop(): void } | undefined;
  let holding = false;
  const listener = options.listener;
  /**
   * The rows this projector last wrote. While it holds the right to project, nobody else writes
   * the type, so a row it wrote is the stored row until it writes the next: the store is read only
   * for aggregates not in here (it was half of the projector's time under command load). Emptied
   * whenever projecting (re)starts, since another writer or a rebuild may have come between.
   */
  const written = new LruCache<string, CurrentRow>(options.rowCacheSize ?? 10_000);
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const w of waiters) w();
  };

  async function fold(batch: JsMsg[]): Promise<void> {
    const decoded = batch.flatMap((m): DecodedCommit[] => {
      const tokens = m.subject.split(".");
      const token = tokens[1];
      const id = tokens[4];
      const version = Number(m.headers?.get(CommitHeader.Version));
      if (token === undefined || id === undefined || !Number.isSafeInteger(version)) {
        log.error(
          { stream_seq: m.seq, subject: m.subject },
          "commit without a version or aggregate id; skipped",
        );
        return [];
      }
      const tenant = token === "_" ? "" : token;
      // The state after this very commit, when the command path of this process made it: then
      // the commit's body is not even parsed.
      const known = options.knownState?.(tenant, id, version, m.seq);
      if (known !== undefined) return [{ tenant, id, version, known, events: undefined, seq: m.seq }];
      let events: JsonObject[];
      try {
        events = (m.json<{ events?: Array<{ payload?: JsonObject }> }>().events ?? []).map(
          (e) => e.payload ?? {},
        );
      } catch (err) {
        log.error({ err, stream_seq: m.seq, subject: m.subject }, "commit is not JSON; skipped");
        return [];
      }
      return [{ tenant, id, version, known: undefined, events, seq: m.seq }];
    });
    const current = new Map<string, CurrentRow>();
    const unknown = new Map<string, { tenant: string; id: string }>();
    for (const d of decoded) {
      const key = rowKey(d.tenant, d.id);
      if (current.has(key) || unknown.has(key)) continue;
      const row = written.get(key);
      if (row) current.set(key, row);
      else unknown.set(key, { tenant: d.tenant, id: d.id });
    }
    if (unknown.size > 0) {
      for (const [key, row] of await store.load(type, [...unknown.values()])) current.set(key, row);
    }
    const rows = new Map<string, ReadModelRow>();
    // Different aggregates fold concurrently (commits of one aggregate in order): the sandbox pool
    // then pipelines the calls instead of paying one thread hop after another, which under command
    // load (the same pool runs every decide) let the projection fall seconds behind.
    const byAggregate = new Map<string, typeof decoded>();
    for (const d of decoded) {
      const key = rowKey(d.tenant, d.id);
      const list = byAggregate.get(key);
      if (list) list.push(d);
      else byAggregate.set(key, [d]);
    }
    const changes: ProjectedChange[] = [];
    await Promise.all(
      [...byAggregate].map(async ([key, commits]) => {
        let known: CurrentRow | undefined = current.get(key);
        for (const d of commits) {
          const before: CurrentRow = known ?? { version: 0, state: options.initialState };
          if (before.version >= d.version) continue; // redelivered or already projected
          if (d.events !== undefined && before.version !== d.version - d.events.length) {
            log.warn(
              { tenant_id: d.tenant, aggregate_id: d.id, stored_version: before.version, version: d.version },
              "commit does not follow the projected version",
            );
          }
          try {
            const state =
              d.known ?? (await program.applyAll(before.state, d.events ?? [], { background: true }));
            rows.set(key, { tenant: d.tenant, id: d.id, version: d.version, stream_seq: d.seq, state });
            changes.push({
              tenant: d.tenant,
              id: d.id,
              version: d.version,
              stream_seq: d.seq,
              before: known?.state,
              after: state,
            });
            known = { version: d.version, state };
          } catch (err) {
            // The sandbox could not run the call at all (a thread stopped, none available): the
            // commit is fine, so fail the fold and project it again rather than skip it for good.
            if (sandboxUnavailable(err)) throw err;
            // One broken aggregate must not stop the projection of every other one.
            log.error(
              { err, tenant_id: d.tenant, aggregate_id: d.id, stream_seq: d.seq },
              "apply failed; commit skipped",
            );
          }
        }
      }),
    );
    // Listeners are told in stream order, whatever order the folds finished in.
    changes.sort((a, b) => a.stream_seq - b.stream_seq);
    const last = batch.at(-1)!;
    await store.commit(type, [...rows.values()], last.seq);
    for (const [key, row] of rows) {
      // PostgreSQL stores U+0000 as U+FFFD: such a row is read back rather than remembered as written.
      if (row.state.includes("\\u0000")) written.delete(key);
      else written.set(key, { version: row.version, state: row.state });
    }
    checkpoint = last.seq;
    pending = last.info.pending;
    lagMs = Math.max(0, Date.now() - last.info.timestampNanos / 1_000_000);
    if (changes.length > 0 && listener) {
      try {
        listener.changes(changes);
      } catch (err) {
        log.error({ err, aggregate_type: type }, "projection listener failed");
      }
    }
    wake();
  }

  /**
   * Rebuilds the type when the stream is not the one the checkpoint belongs to: created again
   * (another creation time), or shorter than the checkpoint (which a stream that is only ever
   * appended to cannot be).
   */
  async function checkIdentity(): Promise<void> {
    const info = await jsm.streams.info(stream);
    const identity = info.created;
    const recorded = await store.streamIdentity(type);
    const stored = await store.checkpoint(type);
    if ((recorded !== undefined && recorded !== identity) || stored > info.state.last_seq) {
      log.warn(
        {
          aggregate_type: type,
          checkpoint: stored,
          last_seq: info.state.last_seq,
          recorded_stream: recorded,
          stream_created: identity,
        },
        "the stream is not the one the read model was projected from; rebuilding the type",
      );
      await store.reset(type);
      checkpoint = 0;
      listener?.interrupted(ProjectionBreak.Rebuild);
    }
    if (recorded !== identity || stored > info.state.last_seq) await store.setStreamIdentity(type, identity);
  }

  /** While projecting: stops the consumer when the stream is replaced, so run() rebuilds. */
  function watchIdentity(): () => void {
    const every = options.identityCheckMs ?? 5_000;
    let busy = false;
    const timer = setInterval(() => {
      if (busy) return;
      busy = true;
      void (async () => {
        try {
          const info = await jsm.streams.info(stream);
          const recorded = await store.streamIdentity(type);
          if (recorded !== info.created || info.state.last_seq < checkpoint) messages?.stop();
        } catch (err) {
          // A missing stream (deleted, not yet created again) is checked again next time.
          log.warn({ err, aggregate_type: type }, "stream identity check failed");
          messages?.stop();
        } finally {
          busy = false;
        }
      })();
    }, every);
    timer.unref();
    return () => clearInterval(timer);
  }

  async function project(): Promise<void> {
    const consumer = await js.consumers.get(stream, {
      filter_subjects: filter,
      opt_start_seq: checkpoint + 1,
    });
    const iter = await consumer.consume({ max_messages: batchSize * 2 });
    messages = iter;
    // stop() may have run while the consumer was being set up: it could not stop this one then.
    if (stopped) iter.stop();
    // Receiving and folding run side by side: commits that arrive while a fold runs are folded
    // together in the next one. Folding each commit alone as it arrived (at the stream's tail
    // `info.pending` is 0 for every commit) made every commit wait its own turn in the sandbox
    // queue behind the decides of the command load; under 64 commands in flight the projection
    // fell seconds behind.
    const batch: JsMsg[] = [];
    let folding: Promise<void> | undefined;
    let failure: { err: unknown } | undefined;
    const kick = () => {
      if (folding) return;
      folding = (async () => {
        try {
          // Let the rest of this turn's messages arrive first: a fold whose states come from the
          // command path's cache finishes within microtasks, so without this wait every commit
          // was its own SQLite transaction (measured: the store was 16 % of the worker's time).
          await new Promise((resolve) => setImmediate(resolve));
          while (batch.length > 0 && !failure) await fold(batch.splice(0, batchSize));
        } catch (err) {
          failure = { err };
          iter.stop();
        } finally {
          // Synchronously after the last check of `batch`: a commit received later kicks anew.
          folding = undefined;
        }
      })();
    };
    for await (const m of iter) {
      batch.push(m);
      if (m.info.pending === 0 || batch.length >= batchSize) kick();
      // Bounded memory: wait for the fold when the next batch is full already.
      if (batch.length >= batchSize && folding) await folding;
    }
    if (folding) await folding;
    if (failure) throw failure.err;
  }

  async function run(): Promise<void> {
    while (!stopped) {
      let unwatch: (() => void) | undefined;
      try {
        release = await store.tryLockProjector(type);
        if (!release) {
          if (holding) {
            holding = false;
            listener?.interrupted(ProjectionBreak.Moved);
            listener?.holding?.(false);
          }
          // Another replica projects; follow its checkpoint in the shared store.
          checkpoint = await store.checkpoint(type);
          wake();
          await new Promise((r) => setTimeout(r, options.lockRetryMs ?? 2_000));
          continue;
        }
        projecting = true;
        const stored = await store.checkpoint(type);
        // Someone else wrote since this process last did (PostgreSQL, between two locks): the
        // commits in between were told to that replica's listener, not to ours.
        if (holding && stored !== checkpoint) listener?.interrupted(ProjectionBreak.Moved);
        checkpoint = stored;
        await checkIdentity();
        if (!holding) {
          holding = true;
          listener?.holding?.(true);
        }
        log.info({ aggregate_type: type, checkpoint }, "projector started");
        unwatch = watchIdentity();
        written.clear();
        await project();
      } catch (err) {
        if (!stopped) log.error({ err, aggregate_type: type }, "projector failed; restarting");
        await new Promise((r) => setTimeout(r, 500));
      } finally {
        unwatch?.();
        projecting = false;
        const r = release;
        release = undefined;
        await r?.().catch(() => undefined);
      }
    }
  }
  const running = run();

  /** True when no commit of this type with a sequence in (checkpoint, seq] exists in the stream. */
  async function nothingBetween(seq: number): Promise<boolean> {
    const from = checkpoint + 1;
    try {
      // Read the stream's end first: a commit appended after it cannot be below `seq` anyway.
      const info = await jsm.streams.info(stream);
      if (info.state.last_seq < seq) return false;
      const next = await jsm.streams.getMessage(stream, {
        seq: from,
        next_by_subj: filter,
      } as unknown as MsgRequest);
      return next === null || next.seq > seq;
    } catch {
      return false;
    }
  }

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      stopped = true;
      messages?.stop();
      wake();
      await running;
      if (holding) {
        holding = false;
        listener?.holding?.(false);
      }
    })();
    return stopping;
  };

  return {
    type,
    status: () => ({ aggregate_type: type, projecting, checkpoint, pending, lag_ms: lagMs }),
    async waitFor(seq, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      let probed = false;
      while (checkpoint < seq && !stopped) {
        // The sequence may belong to another type: then nothing of ours lies before it.
        if (!probed) {
          probed = true;
          if (await nothingBetween(seq)) return true;
        }
        const left = deadline - Date.now();
        if (left <= 0) return false;
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            waiters.delete(done);
            resolve();
          };
          const timer = setTimeout(done, Math.min(left, projecting ? 250 : 50));
          waiters.add(done);
        });
        if (!projecting) checkpoint = Math.max(checkpoint, await store.checkpoint(type));
        if (checkpoint < seq && (await nothingBetween(seq))) return true;
      }
      return checkpoint >= seq;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** A commit as a fold uses it. */
interface DecodedCommit {
  readonly tenant: string;
  readonly id: string;
  readonly version: number;
  readonly seq: number;
  /** The state after the commit, when this process's command path already knows it. */
  readonly known: string | undefined;
  /** The events' payloads; parsed only when the state is not known. */
  readonly events: JsonObject[] | undefined;
}

/** A failure of the sandbox itself rather than of the program on this commit. */
function sandboxUnavailable(err: unknown): boolean {
  if (!(err instanceof ProgramError)) return false;
  const reason = err.fields["reason"];
  return reason === ProgramFailure.Terminated || reason === ProgramFailure.Unavailable;
}

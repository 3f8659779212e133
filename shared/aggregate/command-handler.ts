/**
 * The command lifecycle (ARCHITECTURE.md "One command, end to end"): load the aggregate (cache,
 * or snapshot + the commits after it), recognise retries, decide in the sandbox, append the
 * commit with optimistic concurrency, snapshot every N events off the reply path.
 *
 * What must stay true:
 * - A stale cache costs a retry, never a wrong write: every append carries the sequence the state
 *   was built from, and the log refuses it when another writer got there first.
 * - A stale cache never causes a wrong refusal either: a rejection (DecideError, expected_version,
 *   a no-op decide) decided on cached state is re-checked against the log before it is returned.
 * - Commands for one aggregate on this worker run one at a time (KeyedQueue).
 */
import {
  CommandIdReused,
  NotFound,
  ProgramError,
  RehydrationError,
  StreamError,
  TenantAccessDenied,
  ValidationError,
  VersionConflict,
  type Command,
  type Event,
  type GetReply,
  type JsonObject,
  type JsonValue,
  type Snapshot,
  type SubmitReply,
} from "../contract/index.ts";
import { limitFailure } from "../sandbox/program-failure.ts";
import type { AggregateProgram } from "../sandbox/types.ts";
import { conflictBackoffMs } from "./backoff.ts";
import { RecentCommands } from "./idempotency.ts";
import { KeyedQueue } from "./keyed-queue.ts";
import { LruCache } from "./lru-cache.ts";
import type {
  AggregateRef,
  Environment,
  EventLog,
  HandlerObserver,
  Logger,
  SnapshotStore,
  StoredCommit,
} from "./ports.ts";

/** Everything the handler needs to know about one aggregate type. */
export interface AggregateTypeRuntime {
  readonly program: AggregateProgram;
  /** The state before the first event, as JSON text. */
  readonly initialState: string;
  /** Events between snapshots. */
  readonly snapshotThreshold: number;
  /** Hash prefixes of earlier apply programs whose snapshots this one may continue from. */
  readonly compatibleApply?: readonly string[];
}

export interface CommandHandlerOptions {
  readonly eventLog: EventLog;
  readonly snapshots: SnapshotStore;
  /** Aggregate types by name. */
  readonly types: ReadonlyMap<string, AggregateTypeRuntime>;
  readonly env: Environment;
  readonly log: Logger;
  readonly observer?: HandlerObserver;
  /** Retries after a version conflict before giving up with VersionConflict. */
  readonly maxRetries: number;
  /** Aggregates kept in memory. */
  readonly cacheSize: number;
  /** Command ids remembered per aggregate. */
  readonly idempotencyWindow: number;
}

/** An aggregate as this worker knows it. Immutable: a new object per change. */
interface LoadedAggregate {
  readonly version: number;
  /** Stream sequence of the aggregate's last commit; 0 when it has none. */
  readonly seq: number;
  /** State as JSON text: what the sandbox takes and returns. */
  readonly state: string;
  readonly recent: RecentCommands;
}

/**
 * An aggregate just read from the log whose last events are not folded in yet: `state` is the
 * state before `pending` (version and recent commands already count them). The command's decide
 * folds them in the same sandbox call (AggregateProgram.decide's `pending`).
 */
interface PendingAggregate extends LoadedAggregate {
  readonly pending: readonly JsonObject[];
}

/**
 * A commit lists its 16 latest predecessors and every 16th one further back, 5 of them
 * (`Aggregate-Previous-Seqs`, about 150 bytes): a reader loads up to ~100 commits after a snapshot
 * by parallel gets by sequence instead of scanning the stream for them.
 */
const PREVIOUS_SEQS_MAX = 16;
const PREVIOUS_SEQS_FAR = 5;

/** Events per sandbox call during rehydration: bounds one call's time and message size. */
const APPLY_CHUNK = 1000;
/**
 * Most events a cold load leaves for the command's decide call to fold (they share its time
 * limit): a tail of up to ~100 commits after a snapshot goes in one call; a longer one is folded
 * in calls of its own first.
 */
const DEFER_MAX = 256;

export interface CommandHandler {
  submit(command: Command): Promise<SubmitReply>;
  get(ref: AggregateRef): Promise<GetReply>;
  /** Waits for snapshot writes in flight (shutdown, tests). */
  flush(): Promise<void>;
  /** Forgets every cached aggregate. */
  clearCache(): void;
  /**
   * The state text of an aggregate after the commit at stream sequence `seq` (its `version`), if
   * this worker holds exactly that in its cache (without refreshing it there); for the read
   * model, which would otherwise fold again what the command path has just folded. Both must
   * match: a version alone could be another stream's (one deleted and created again).
   */
  knownState(ref: AggregateRef, version: number, seq: number): string | undefined;
  readonly cachedAggregates: number;
}

export function createCommandHandler(options: CommandHandlerOptions): CommandHandler {
  return new Handler(options);
}

class Handler implements CommandHandler {
  readonly #o: CommandHandlerOptions;
  readonly #cache: LruCache<string, LoadedAggregate>;
  readonly #queue = new KeyedQueue();
  readonly #pendingSnapshots = new Set<Promise<void>>();

  constructor(options: CommandHandlerOptions) {
    this.#o = options;
    this.#cache = new LruCache(options.cacheSize);
  }

  get cachedAggregates(): number {
    return this.#cache.size;
  }

  clearCache(): void {
    this.#cache.clear();
  }

  knownState(ref: AggregateRef, version: number, seq: number): string | undefined {
    const cached = this.#cache.peek(cacheKey(ref));
    return cached !== undefined && cached.version === version && cached.seq === seq
      ? cached.state
      : undefined;
  }

  async flush(): Promise<void> {
    while (this.#pendingSnapshots.size > 0) await Promise.all([...this.#pendingSnapshots]);
  }

  submit(command: Command): Promise<SubmitReply> {
    const runtime = this.#runtime(command.aggregate_type);
    const ref: AggregateRef = {
      tenant_id: command.tenant_id,
      aggregate_type: command.aggregate_type,
      aggregate_id: command.aggregate_id,
    };
    return this.#queue.run(cacheKey(ref), () => this.#submit(runtime, ref, command));
  }

  get(ref: AggregateRef): Promise<GetReply> {
    const runtime = this.#runtime(ref.aggregate_type);
    const key = cacheKey(ref);
    return this.#queue.run(key, async () => {
      const cached = this.#cache.get(key);
      const agg = cached ? await this.#refresh(ref, runtime, cached) : await this.#load(ref, runtime);
      if (agg.version === 0) {
        throw new NotFound(`aggregate ${ref.aggregate_id} of type ${ref.aggregate_type} has no events`, {
          aggregate_id: ref.aggregate_id,
        });
      }
      this.#cache.set(key, agg);
      return {
        tenant_id: ref.tenant_id,
        aggregate_type: ref.aggregate_type,
        aggregate_id: ref.aggregate_id,
        version: agg.version,
        state: JSON.parse(agg.state) as JsonValue,
      };
    });
  }

  #runtime(type: string): AggregateTypeRuntime {
    const runtime = this.#o.types.get(type);
    if (!runtime) throw new ValidationError(`unknown aggregate type ${JSON.stringify(type)}`, { type });
    return runtime;
  }

  async #submit(runtime: AggregateTypeRuntime, ref: AggregateRef, command: Command): Promise<SubmitReply> {
    const { env, observer, maxRetries } = this.#o;
    const key = cacheKey(ref);
    let conflicts = 0;
    let agg = this.#cache.get(key);
    // Whether `agg` was read from the log during this command (not just taken from the cache).
    let fresh = false;
    if (agg) observer?.cacheHit?.(ref);
    else observer?.cacheMiss?.(ref);

    for (;;) {
      // Events of a cold load that the decide call below folds in first (one sandbox call).
      let pending: readonly JsonObject[] | undefined;
      if (!agg) {
        const loaded = await this.#load(ref, runtime, true);
        agg = loaded;
        if ("pending" in loaded && loaded.pending.length > 0) pending = loaded.pending;
        fresh = true;
      }

      const applied = agg.recent.find(command.command_id);
      if (applied) return this.#duplicateReply(ref, command, applied.stream_seq, applied.payload_hash);

      if (command.expected_version !== undefined && command.expected_version !== agg.version) {
        if (!fresh) {
          agg = await this.#refreshInto(key, ref, runtime, agg);
          fresh = true;
          continue;
        }
        throw new VersionConflict(
          `expected version ${command.expected_version}, but the aggregate is at version ${agg.version}`,
          { expected: command.expected_version, actual: agg.version },
        );
      }

      let outcome;
      try {
        outcome = await runtime.program.decide(
          agg.state,
          command.payload,
          {
            tenant_id: ref.tenant_id,
            aggregate_id: ref.aggregate_id,
            command_id: command.command_id,
            version: agg.version,
            metadata: command.metadata,
          },
          pending,
        );
        if (pending !== undefined) {
          if (outcome.caughtUp === undefined)
            throw new Error("the sandbox did not return the caught-up state");
          agg = { version: agg.version, seq: agg.seq, state: outcome.caughtUp, recent: agg.recent };
        }
      } catch (err) {
        if (pending !== undefined && limitFailure(err) !== undefined) {
          // Tail and command together ran out of the call's budget: fold the tail in calls of
          // its own (as a load without a command does), then decide alone, which is what counts.
          agg = {
            version: agg.version,
            seq: agg.seq,
            state: await this.#fold(runtime, agg.state, pending),
            recent: agg.recent,
          };
          continue;
        }
        if (!fresh && !(err instanceof ProgramError)) {
          // The refusal may rest on a state another replica has moved on from.
          agg = await this.#refreshInto(key, ref, runtime, agg);
          fresh = true;
          continue;
        }
        throw err;
      }

      if (outcome.events.length === 0) {
        if (!fresh) {
          agg = await this.#refreshInto(key, ref, runtime, agg);
          fresh = true;
          continue;
        }
        return this.#reply(ref, command, agg.version, undefined, [], false);
      }

      const timestamp = new Date(env.now()).toISOString();
      const events: Event[] = outcome.events.map((payload, i) => ({
        tenant_id: ref.tenant_id,
        event_id: env.uuidv7(),
        aggregate_id: ref.aggregate_id,
        aggregate_type: ref.aggregate_type,
        version: agg!.version + i + 1,
        event_type: payload["type"] as string,
        payload,
        command_id: command.command_id,
        correlation_id: command.correlation_id,
        timestamp,
        metadata: command.metadata,
      }));
      const version = agg.version + events.length;

      let result;
      try {
        result = await this.#o.eventLog.append(
          ref,
          {
            command_id: command.command_id,
            events,
            version,
            payload_hash: command.payload_hash,
            correlation_id: command.correlation_id,
            traceparent: command.traceparent,
            tracestate: command.tracestate,
            program: runtime.program.hash,
            previous_seqs: previousSeqs(agg),
          },
          agg.seq,
        );
      } catch (err) {
        if (!(err instanceof VersionConflict)) {
          // The append's outcome is unknown (e.g. a timeout): forget what we think we know.
          this.#cache.delete(key);
          throw err;
        }
        conflicts++;
        observer?.versionConflict?.(ref, conflicts);
        if (conflicts > maxRetries) {
          this.#cache.delete(key);
          throw new VersionConflict(
            `the aggregate kept changing under the command: gave up after ${maxRetries} retries`,
            { retries: maxRetries },
            { cause: err },
          );
        }
        await env.sleep(conflictBackoffMs(conflicts, env.random()));
        agg = await this.#refreshInto(key, ref, runtime, agg);
        fresh = true;
        continue;
      }

      if (result.duplicate) {
        // The log already holds this command (another replica, or our own earlier attempt).
        this.#cache.delete(key);
        return this.#duplicateReply(ref, command, result.seq, undefined);
      }

      // The record moves on with the aggregate: the old entry is never read again.
      agg.recent.add({
        command_id: command.command_id,
        payload_hash: command.payload_hash,
        version,
        stream_seq: result.seq,
      });
      const next: LoadedAggregate = {
        version,
        seq: result.seq,
        state: outcome.state,
        recent: agg.recent,
      };
      this.#cache.set(key, next);
      if (crossesMultiple(agg.version, version, runtime.snapshotThreshold)) {
        this.#snapshotLater(ref, runtime, next);
      }
      return this.#reply(ref, command, version, result.seq, events, false);
    }
  }

  #reply(
    ref: AggregateRef,
    command: Command,
    version: number,
    seq: number | undefined,
    events: Event[],
    duplicate: boolean,
    correlationId = command.correlation_id,
  ): SubmitReply {
    const reply: SubmitReply = {
      tenant_id: ref.tenant_id,
      aggregate_type: ref.aggregate_type,
      aggregate_id: ref.aggregate_id,
      command_id: command.command_id,
      version,
      correlation_id: correlationId,
      duplicate,
      events,
    };
    if (seq !== undefined) reply.stream_seq = seq;
    return reply;
  }

  /** The original reply of an already applied command, read back from the log. */
  async #duplicateReply(
    ref: AggregateRef,
    command: Command,
    seq: number,
    knownHash: string | undefined,
  ): Promise<SubmitReply> {
    const stored = await this.#o.eventLog.read(seq);
    if (!stored) {
      throw new StreamError(`the commit of command ${command.command_id} (stream sequence ${seq}) is gone`, {
        seq,
      });
    }
    this.#checkOwnership(ref, stored);
    const hash = stored.payload_hash ?? knownHash;
    if (stored.commit.command_id !== command.command_id || hash !== command.payload_hash) {
      throw new CommandIdReused(
        `command id ${command.command_id} was already used for a different command on this aggregate`,
        { command_id: command.command_id },
      );
    }
    const events = stored.commit.events;
    const last = events[events.length - 1]!;
    return this.#reply(ref, command, last.version, seq, events, true, last.correlation_id);
  }

  /**
   * Loads an aggregate from its snapshot and the commits after it. With `defer`, the commits'
   * events may come back unfolded (PendingAggregate), for the command's decide to fold.
   */
  async #load(
    ref: AggregateRef,
    runtime: AggregateTypeRuntime,
    defer = false,
  ): Promise<LoadedAggregate | PendingAggregate> {
    const started = this.#o.env.now();
    const [stored, last] = await Promise.all([
      this.#o.snapshots.get(ref).catch((err: unknown) => {
        // A snapshot is a cache: failing to read one costs time, never the command.
        this.#o.log.warn({ err, ...ref }, "snapshot read failed; rebuilding from events");
        return undefined;
      }),
      this.#o.eventLog.lastSeq(ref),
    ]);
    const empty = this.#empty(runtime);
    let base = empty;
    const snap = stored?.snapshot;
    if (snap && this.#usable(snap, ref, runtime, last)) {
      base = {
        version: snap.version,
        seq: snap.stream_seq,
        state: JSON.stringify(snap.state),
        recent: new RecentCommands(this.#o.idempotencyWindow, snap.recent_commands),
      };
    }
    const agg = await this.#catchUp(ref, runtime, base, last, empty, defer);
    // With deferred events the time does not include folding them (the command's decide does).
    this.#o.observer?.rehydrated?.(ref, agg.version - base.version, this.#o.env.now() - started);
    return agg;
  }

  #empty(runtime: AggregateTypeRuntime): LoadedAggregate {
    return {
      version: 0,
      seq: 0,
      state: runtime.initialState,
      recent: new RecentCommands(this.#o.idempotencyWindow),
    };
  }

  #usable(snap: Snapshot, ref: AggregateRef, runtime: AggregateTypeRuntime, last: number): boolean {
    const why =
      snap.tenant_id !== ref.tenant_id ||
      snap.aggregate_type !== ref.aggregate_type ||
      snap.aggregate_id !== ref.aggregate_id
        ? "it belongs to another aggregate"
        : snap.stream_seq === 0 || snap.version === 0
          ? "it is empty"
          : snap.stream_seq > last
            ? "it is newer than the event log"
            : snap.program !== undefined && !sameProgram(snap.program, runtime)
              ? "another apply program made it"
              : undefined;
    if (why === undefined) return true;
    this.#o.log.warn({ ...ref, snapshot_version: snap.version }, `snapshot ignored: ${why}`);
    return false;
  }

  /** Brings a cached aggregate up to the log's last commit. */
  async #refresh(
    ref: AggregateRef,
    runtime: AggregateTypeRuntime,
    agg: LoadedAggregate,
  ): Promise<LoadedAggregate> {
    const last = await this.#o.eventLog.lastSeq(ref);
    return this.#catchUp(ref, runtime, agg, last, this.#empty(runtime));
  }

  async #refreshInto(
    key: string,
    ref: AggregateRef,
    runtime: AggregateTypeRuntime,
    agg: LoadedAggregate,
  ): Promise<LoadedAggregate> {
    try {
      const next = await this.#refresh(ref, runtime, agg);
      if (next.version > 0) this.#cache.set(key, next);
      return next;
    } catch (err) {
      this.#cache.delete(key);
      throw err;
    }
  }

  async #catchUp(
    ref: AggregateRef,
    runtime: AggregateTypeRuntime,
    base: LoadedAggregate,
    last: number,
    empty: LoadedAggregate,
    defer = false,
  ): Promise<LoadedAggregate | PendingAggregate> {
    if (last === base.seq) return base;
    if (last < base.seq) {
      // The log no longer has what the state was built from (purged or recreated stream).
      this.#o.log.warn(
        { ...ref, known_seq: base.seq, last_seq: last },
        "event log is behind the state; rebuilding",
      );
      base = empty;
      if (last === 0) return base;
    }
    const commits = await this.#o.eventLog.readAfter(ref, base.seq, last);
    let version = base.version;
    let seq = base.seq;
    const recent = base.recent.clone();
    const payloads: JsonObject[] = [];
    for (const stored of commits) {
      this.#checkOwnership(ref, stored);
      for (const event of stored.commit.events) {
        if (event.version !== version + 1) {
          throw new RehydrationError(
            `event versions are not contiguous: expected ${version + 1}, found ${event.version} at stream sequence ${stored.seq}`,
            { seq: stored.seq },
          );
        }
        version = event.version;
        payloads.push(event.payload);
      }
      seq = stored.seq;
      recent.add({
        command_id: stored.commit.command_id,
        payload_hash: stored.payload_hash ?? "",
        version,
        stream_seq: stored.seq,
      });
    }
    if (defer && payloads.length <= DEFER_MAX) {
      return { version, seq, state: base.state, recent, pending: payloads };
    }
    return { version, seq, state: await this.#fold(runtime, base.state, payloads), recent };
  }

  /** Folds events into a state in the sandbox, APPLY_CHUNK at a time. */
  async #fold(runtime: AggregateTypeRuntime, state: string, events: readonly JsonObject[]): Promise<string> {
    for (let i = 0; i < events.length; i += APPLY_CHUNK) {
      state = await runtime.program.applyAll(state, events.slice(i, i + APPLY_CHUNK));
    }
    return state;
  }

  /** Stored data must belong to the aggregate it was loaded for: anything else is a breach. */
  #checkOwnership(ref: AggregateRef, stored: StoredCommit): void {
    for (const event of stored.commit.events) {
      if (
        event.tenant_id !== ref.tenant_id ||
        event.aggregate_type !== ref.aggregate_type ||
        event.aggregate_id !== ref.aggregate_id
      ) {
        this.#o.log.error(
          { ...ref, seq: stored.seq, found_tenant: event.tenant_id, found_aggregate: event.aggregate_id },
          "stored commit belongs to another aggregate",
        );
        throw new TenantAccessDenied("stored data of another tenant or aggregate was met while loading", {
          seq: stored.seq,
        });
      }
    }
  }

  #snapshotLater(ref: AggregateRef, runtime: AggregateTypeRuntime, agg: LoadedAggregate): void {
    const snapshot: Snapshot = {
      tenant_id: ref.tenant_id,
      aggregate_id: ref.aggregate_id,
      aggregate_type: ref.aggregate_type,
      version: agg.version,
      stream_seq: agg.seq,
      state: JSON.parse(agg.state) as JsonValue,
      created_at: new Date(this.#o.env.now()).toISOString(),
      recent_commands: agg.recent.toArray(),
      program: runtime.program.applyHash,
    };
    const write = this.#o.snapshots
      .put(ref, snapshot, undefined)
      .then((written) => {
        if (written) this.#o.observer?.snapshotWritten?.(ref, agg.version);
      })
      .catch((err: unknown) => {
        this.#o.observer?.snapshotFailed?.(ref, err);
        this.#o.log.warn({ err, ...ref, version: agg.version }, "snapshot write failed");
      })
      .finally(() => this.#pendingSnapshots.delete(write));
    this.#pendingSnapshots.add(write);
  }
}

/** Whether a snapshot's apply program is this one, or one the manifest declares compatible. */
function sameProgram(hash: string, runtime: AggregateTypeRuntime): boolean {
  return (
    hash === runtime.program.applyHash ||
    (runtime.compatibleApply ?? []).some((prefix) => hash.startsWith(prefix))
  );
}

/**
 * The sequences of the aggregate's latest commits, newest first, for the next commit's
 * `Aggregate-Previous-Seqs`: only when the idempotency record runs up to the aggregate's last
 * commit (it always does once loaded; the check keeps a wrong list out of the log).
 */
function previousSeqs(agg: LoadedAggregate): number[] {
  const seqs = agg.recent.lastSeqs(PREVIOUS_SEQS_MAX + PREVIOUS_SEQS_FAR * PREVIOUS_SEQS_MAX);
  if (seqs[0] !== agg.seq) return [];
  const near = seqs.slice(0, PREVIOUS_SEQS_MAX);
  // Every 16th further back: a reader fetches those as soon as the last commit names them, and
  // their own lists name the rest, so up to ~100 commits load in about three round trips.
  for (let i = 2 * PREVIOUS_SEQS_MAX - 1; i < seqs.length; i += PREVIOUS_SEQS_MAX) near.push(seqs[i]!);
  return near;
}

function cacheKey(ref: AggregateRef): string {
  // Tenant ids and types cannot contain "/", so the key is unambiguous.
  return `${ref.tenant_id}/${ref.aggregate_type}/${ref.aggregate_id}`;
}

/** True when going from version `from` to `to` passes a multiple of `every`. */
export function crossesMultiple(from: number, to: number, every: number): boolean {
  return Math.floor(to / every) > Math.floor(from / every);
}

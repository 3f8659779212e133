/**
 * What the aggregate core needs from the outside world. The NATS adapters implement these;
 * the core itself imports nothing from NATS, node: or pino, so it can be tested alone.
 */
import type {
  AggregateId,
  AggregateType,
  Commit,
  Event,
  JsonObject,
  Snapshot,
  TenantId,
} from "../contract/index.ts";

/** Names one aggregate. */
export interface AggregateRef {
  readonly tenant_id: TenantId;
  readonly aggregate_type: AggregateType;
  readonly aggregate_id: AggregateId;
}

/** One command's commit, about to be appended. */
export interface NewCommit {
  readonly command_id: string;
  readonly events: readonly Event[];
  /** The aggregate's version after this commit. */
  readonly version: number;
  readonly payload_hash: string;
  readonly correlation_id: string;
  readonly traceparent?: string | undefined;
  readonly tracestate?: string | undefined;
  /** Content hash of the program that decided it. */
  readonly program?: string | undefined;
  /** Stream sequences of the aggregate's commits just before this one, newest first (may be empty). */
  readonly previous_seqs?: readonly number[];
}

/** A commit as read back from the log. */
export interface StoredCommit {
  readonly seq: number;
  readonly subject: string;
  readonly commit: Commit;
  /** From the commit's headers; undefined for commits written by other tools. */
  readonly payload_hash: string | undefined;
}

export interface AppendResult {
  /** Stream sequence of the commit; of the original one when `duplicate`. */
  readonly seq: number;
  /** True when the stream already held a commit with this message id. */
  readonly duplicate: boolean;
}

/**
 * The event log. `append` rejects with VersionConflict when `expectedLastSeq` is not the
 * aggregate's last stream sequence, PayloadTooLarge when the commit cannot fit in one message,
 * StreamError otherwise.
 */
export interface EventLog {
  append(ref: AggregateRef, commit: NewCommit, expectedLastSeq: number): Promise<AppendResult>;
  /** The stream sequence of the aggregate's last commit, 0 when it has none. */
  lastSeq(ref: AggregateRef): Promise<number>;
  /** The aggregate's commits with afterSeq < seq <= untilSeq, in order. */
  readAfter(ref: AggregateRef, afterSeq: number, untilSeq: number): Promise<StoredCommit[]>;
  /** The commit at a stream sequence. */
  read(seq: number): Promise<StoredCommit | undefined>;
}

export interface StoredSnapshot {
  /** Undefined when the stored value was damaged or belongs to another aggregate (a warning was logged). */
  readonly snapshot: Snapshot | undefined;
  /** KV revision of the stored value, for compare-and-set. */
  readonly revision: number;
}

/** The snapshot store. Failures of `get` are reported as undefined (a snapshot is only a cache). */
export interface SnapshotStore {
  get(ref: AggregateRef): Promise<StoredSnapshot | undefined>;
  /** Writes unless a snapshot of the same or a newer version is stored; true when written. */
  put(ref: AggregateRef, snapshot: Snapshot, knownRevision: number | undefined): Promise<boolean>;
  delete(ref: AggregateRef): Promise<void>;
}

/** Source of ids and time: injected so tests and the core stay deterministic. */
export interface Environment {
  /** A new UUID v7, lower-case. */
  uuidv7(): string;
  /** Milliseconds since the epoch. */
  now(): number;
  /** Waits; used for the conflict backoff. */
  sleep(ms: number): Promise<void>;
  /** In [0, 1); for backoff jitter only. */
  random(): number;
}

/** Minimal structured logger (pino-compatible), so the core does not import pino. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** Things the handler reports; the service turns them into metrics. All optional. */
export interface HandlerObserver {
  cacheHit?(ref: AggregateRef): void;
  cacheMiss?(ref: AggregateRef): void;
  versionConflict?(ref: AggregateRef, attempt: number): void;
  rehydrated?(ref: AggregateRef, commits: number, ms: number): void;
  snapshotWritten?(ref: AggregateRef, version: number): void;
  snapshotFailed?(ref: AggregateRef, err: unknown): void;
}

export type { JsonObject };

/**
 * The read model's storage port: one row per aggregate, `(tenant, type, id) → (version,
 * stream_seq, state)`, and a checkpoint per aggregate type, written in the same transaction.
 */
import type { Dialect, QueryFields, QueryPlan } from "./sql.ts";

/** One aggregate's projected state. `state` is JSON text. */
export interface ReadModelRow {
  readonly tenant: string;
  readonly id: string;
  readonly version: number;
  readonly stream_seq: number;
  readonly state: string;
}

/** One row of a query page; `keys` are the sort values, for the cursor. */
export interface PageRow {
  readonly id: string;
  readonly version: number;
  readonly state: unknown;
  readonly keys: ReadonlyArray<number | string | null>;
}

/** The current version and state (JSON text) of an aggregate, for folding the next commit. */
export interface CurrentRow {
  readonly version: number;
  readonly state: string;
}

export interface ReadModelStore {
  readonly dialect: Dialect;
  /** Creates the indexes of a type's declared query fields (idempotent). */
  prepareType(type: string, fields: QueryFields): Promise<void>;
  /** The stream sequence up to which `type` is projected (0 when nothing is). */
  checkpoint(type: string): Promise<number>;
  /** Current rows of the given aggregates, keyed by `rowKey(tenant, id)`. */
  load(type: string, keys: ReadonlyArray<{ tenant: string; id: string }>): Promise<Map<string, CurrentRow>>;
  /**
   * Upserts rows whose version is newer than the stored one (an older or equal version is a
   * no-op, so redelivery is harmless) and moves the checkpoint, all in one transaction.
   */
  commit(type: string, rows: readonly ReadModelRow[], checkpoint: number): Promise<void>;
  /** One page of a query. */
  query(plan: QueryPlan, fields: QueryFields): Promise<PageRow[]>;
  /**
   * One page and the checkpoint it reflects, read in one transaction: the page holds exactly the
   * commits of the type up to `checkpoint` (what a watch's handshake needs).
   */
  snapshot(plan: QueryPlan, fields: QueryFields): Promise<{ rows: PageRow[]; checkpoint: number }>;
  /** The exact number of matches of a query's filter (the plan's sort, cursor and limit are ignored). */
  count(plan: QueryPlan, fields: QueryFields): Promise<number>;
  /**
   * The identity of the stream the type was projected from (its creation time), or undefined
   * when none is recorded: a checkpoint is a position in one stream and means nothing in another.
   */
  streamIdentity(type: string): Promise<string | undefined>;
  setStreamIdentity(type: string, identity: string): Promise<void>;
  /** Deletes a type's rows, checkpoint and stream identity (for a rebuild). */
  reset(type: string): Promise<void>;
  /**
   * Takes the right to project `type` (PostgreSQL: a session advisory lock, so one projector
   * writes while every replica reads; SQLite: always granted). Resolves to a release function,
   * or undefined when another process holds it.
   */
  tryLockProjector(type: string): Promise<(() => Promise<void>) | undefined>;
  /** A random secret kept in the store, shared by every replica reading it (cursor MACs). */
  secret(): Promise<Buffer>;
  close(): Promise<void>;
}

export function rowKey(tenant: string, id: string): string {
  return `${tenant}\u0000${id}`;
}

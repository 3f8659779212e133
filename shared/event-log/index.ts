/**
 * The event log on JetStream (CONTRACT.md §3): one message per command on the aggregate's
 * subject, appended with `Nats-Msg-Id` (dedup) and `Nats-Expected-Last-Subject-Sequence`
 * (optimistic concurrency). JetStream error 10071 becomes VersionConflict here and nowhere else.
 */
import {
  createInbox,
  headers as natsHeaders,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from "@nats-io/nats-core";
import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  StorageType,
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
  type StoredMsg,
  type StreamConfig,
} from "@nats-io/jetstream";
import * as v from "valibot";
import {
  Commit,
  PayloadTooLarge,
  RehydrationError,
  StreamError,
  VersionConflict,
} from "../contract/index.ts";
import {
  LruCache,
  type AggregateRef,
  type AppendResult,
  type EventLog,
  type NewCommit,
  type StoredCommit,
} from "../aggregate/index.ts";
import { aggregateSubject, commitMsgId, CommitHeader, STREAM_SUBJECTS } from "../naming/index.ts";

export interface EventLogOptions {
  readonly nc: NatsConnection;
  readonly stream: string;
  /** Timeout of JetStream API calls. */
  readonly timeoutMs?: number;
}

export interface StreamOptions {
  readonly replicas?: number;
  /** The `Nats-Msg-Id` duplicate window. */
  readonly duplicateWindowMs?: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** JetStream API error: a stream with this name but another configuration exists. */
const STREAM_NAME_IN_USE = 10058;

/** Commits read one by one with direct gets before a consumer pays off. */
const DIRECT_READS = 4;

export class StreamSetupError extends Error {
  override readonly name = "StreamSetupError";
}

/**
 * Creates the events stream if it is missing. An existing stream is used as it is, but only if
 * its subjects cover ours: writing into a stream that does not capture our subjects would lose
 * every event.
 */
export async function ensureEventStream(
  nc: NatsConnection,
  name: string,
  options: StreamOptions = {},
): Promise<void> {
  const jsm = await jetstreamManager(nc);
  let existing;
  try {
    existing = await jsm.streams.info(name);
  } catch (err) {
    if (!(err instanceof JetStreamApiError) || err.code !== JetStreamApiCodes.StreamNotFound) throw err;
  }
  if (existing) {
    const subjects = existing.config.subjects ?? [];
    if (!subjects.some((s) => covers(s, STREAM_SUBJECTS))) {
      throw new StreamSetupError(
        `stream ${name} exists but its subjects ${JSON.stringify(subjects)} do not cover ${STREAM_SUBJECTS}; ` +
          `fix the stream or set AGGREGATE_STREAM to another name`,
      );
    }
    return;
  }
  const config: Partial<StreamConfig> & { name: string } = {
    name,
    subjects: [STREAM_SUBJECTS],
    storage: StorageType.File,
    num_replicas: options.replicas ?? 1,
    duplicate_window: (options.duplicateWindowMs ?? 120_000) * 1_000_000,
    allow_direct: true,
    deny_delete: true,
    deny_purge: true,
  };
  try {
    await jsm.streams.add(config);
  } catch (err) {
    // Another replica may have created it between our look-up and our add.
    if (err instanceof JetStreamApiError && err.code === STREAM_NAME_IN_USE) return;
    throw err;
  }
}

/** Whether subject filter `filter` matches every subject `pattern` matches. */
export function covers(filter: string, pattern: string): boolean {
  const f = filter.split(".");
  const p = pattern.split(".");
  for (let i = 0; i < f.length; i++) {
    const ft = f[i]!;
    if (ft === ">") return i < p.length;
    const pt = p[i];
    if (pt === undefined) return false;
    if (ft === "*") {
      if (pt === ">") return false;
      continue;
    }
    if (ft !== pt) return false;
  }
  return f.length === p.length;
}

export function createEventLog(options: EventLogOptions): EventLog & { readonly maxPayload: number } {
  return new JetStreamEventLog(options);
}

class JetStreamEventLog implements EventLog {
  readonly #nc: NatsConnection;
  readonly #js: JetStreamClient;
  readonly #stream: string;
  readonly #timeoutMs: number;
  readonly #acks: AckWaiter;
  /** The last commits lastSeq() read, by subject, until a readAfter() up to them takes them (bounded). */
  readonly #lastRead = new LruCache<string, LinkedMsg>(1_000);
  #jsm: JetStreamManager | undefined;

  constructor(options: EventLogOptions) {
    this.#nc = options.nc;
    this.#stream = options.stream;
    this.#timeoutMs = options.timeoutMs ?? 5_000;
    this.#js = jetstream(options.nc, { timeout: this.#timeoutMs });
    this.#acks = new AckWaiter(options.nc);
  }

  get maxPayload(): number {
    return this.#nc.info?.max_payload ?? 1024 * 1024;
  }

  async append(ref: AggregateRef, commit: NewCommit, expectedLastSeq: number): Promise<AppendResult> {
    const subject = aggregateSubject(ref.tenant_id, ref.aggregate_type, ref.aggregate_id);
    const msgId = commitMsgId(
      ref.tenant_id,
      ref.aggregate_type,
      ref.aggregate_id,
      commit.command_id as never,
    );
    const body = encoder.encode(JSON.stringify({ command_id: commit.command_id, events: commit.events }));
    const h = natsHeaders();
    h.set(CommitHeader.Version, String(commit.version));
    h.set(CommitHeader.CommandHash, commit.payload_hash);
    h.set(CommitHeader.CorrelationId, commit.correlation_id);
    if (commit.traceparent) h.set(CommitHeader.TraceParent, commit.traceparent);
    if (commit.tracestate) h.set(CommitHeader.TraceState, commit.tracestate);
    if (commit.program) h.set(CommitHeader.Program, commit.program);
    if (commit.previous_seqs && commit.previous_seqs.length > 0) {
      h.set(CommitHeader.PreviousSeqs, commit.previous_seqs.join(","));
    }

    // Headers travel in the same message: count them (generously) against the limit.
    const headerBytes =
      256 +
      msgId.length +
      subject.length +
      (commit.traceparent?.length ?? 0) +
      (commit.tracestate?.length ?? 0);
    if (body.length + headerBytes > this.maxPayload) {
      throw new PayloadTooLarge(
        `the command's events take ${body.length} bytes; one message holds at most ${this.maxPayload - headerBytes}`,
        { bytes: body.length, max_payload: this.maxPayload },
      );
    }
    h.set(JsHeader.MsgId, msgId);
    h.set(JsHeader.ExpectedLastSubjectSeq, String(expectedLastSeq));
    let reply: Msg;
    try {
      reply = await this.#acks.publish(subject, body, h, this.#timeoutMs);
    } catch (err) {
      throw new StreamError(`append to ${this.#stream} failed: ${errorText(err)}`, {}, { cause: err });
    }
    if (reply.headers?.code === 503) {
      throw new StreamError(`append to ${this.#stream} failed: no stream captures ${subject}`, {});
    }
    let ack: PubAck;
    try {
      ack = JSON.parse(decoder.decode(reply.data)) as PubAck;
    } catch (err) {
      throw new StreamError(`append to ${this.#stream} failed: the ack is not JSON`, {}, { cause: err });
    }
    if (ack.error) {
      if (ack.error.err_code === JetStreamApiCodes.StreamWrongLastSequence) {
        throw new VersionConflict("another writer appended to the aggregate first", {
          expected_seq: expectedLastSeq,
        });
      }
      throw new StreamError(
        `append to ${this.#stream} failed: ${ack.error.description ?? "JetStream error"} (${ack.error.err_code ?? ack.error.code})`,
        {},
      );
    }
    if (typeof ack.seq !== "number" || ack.stream !== this.#stream) {
      throw new StreamError(
        `append to ${this.#stream} failed: acknowledged by stream ${String(ack.stream)}, not ${this.#stream}`,
        {},
      );
    }
    return { seq: ack.seq, duplicate: ack.duplicate === true };
  }

  async lastSeq(ref: AggregateRef): Promise<number> {
    const subject = aggregateSubject(ref.tenant_id, ref.aggregate_type, ref.aggregate_id);
    try {
      const jsm = await this.#manager();
      const m = await jsm.direct.getMessage(this.#stream, { last_by_subj: subject });
      if (!m) return 0;
      // A load asks for the commits up to this one next: keep it for that read.
      this.#lastRead.set(subject, { seq: m.seq, subject, header: m.header, data: m.data });
      return m.seq;
    } catch (err) {
      throw new StreamError(
        `reading the last commit of ${subject} failed: ${errorText(err)}`,
        {},
        { cause: err },
      );
    }
  }

  async read(seq: number): Promise<StoredCommit | undefined> {
    try {
      const jsm = await this.#manager();
      // A direct get may be served by a replica that has not seen the message yet: ask the leader then.
      const m =
        (await jsm.direct.getMessage(this.#stream, { seq })) ??
        (await jsm.streams.getMessage(this.#stream, { seq }));
      return m ? parseStored(m.seq, m.subject, m.data, m.header.get(CommitHeader.CommandHash)) : undefined;
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.NoMessageFound) return undefined;
      if (err instanceof RehydrationError) throw err;
      throw new StreamError(`reading stream sequence ${seq} failed: ${errorText(err)}`, {}, { cause: err });
    }
  }

  async readAfter(ref: AggregateRef, afterSeq: number, untilSeq: number): Promise<StoredCommit[]> {
    const subject = aggregateSubject(ref.tenant_id, ref.aggregate_type, ref.aggregate_id);
    let linked;
    try {
      // The commits name their predecessors: fetch them by sequence, many at a time. Whatever
      // that cannot vouch for (older commits without the header, a list that does not chain) is
      // scanned for, up to the commit before the oldest one linked.
      linked = await this.#readLinked(subject, afterSeq, untilSeq);
    } catch (err) {
      if (err instanceof RehydrationError) throw err;
      throw new StreamError(
        `reading the commits of ${subject} failed: ${errorText(err)}`,
        {},
        { cause: err },
      );
    }
    if (linked.complete) return linked.commits;
    const until = linked.commits.length > 0 ? linked.before : untilSeq;
    const rest = until > afterSeq ? await this.#scan(subject, afterSeq, until) : [];
    return [...rest, ...linked.commits];
  }

  /** The commits of `subject` in (afterSeq, untilSeq], found by subject (the server scans for them). */
  async #scan(subject: string, afterSeq: number, untilSeq: number): Promise<StoredCommit[]> {
    const out: StoredCommit[] = [];
    let cursor = afterSeq;
    try {
      const jsm = await this.#manager();
      // Most loads find a few commits after the snapshot: a handful of direct gets is cheaper
      // than creating a consumer.
      for (let i = 0; i < DIRECT_READS && cursor < untilSeq; i++) {
        const m: StoredMsg | null = await jsm.direct.getMessage(this.#stream, {
          seq: cursor + 1,
          next_by_subj: subject,
        });
        if (!m || m.seq > untilSeq) return out;
        out.push(parseStored(m.seq, m.subject, m.data, m.header.get(CommitHeader.CommandHash)));
        cursor = m.seq;
      }
      if (cursor >= untilSeq) return out;

      const info = await jsm.consumers.add(this.#stream, {
        filter_subject: subject,
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: cursor + 1,
        ack_policy: AckPolicy.None,
        mem_storage: true,
        num_replicas: 1,
        inactive_threshold: 30_000_000_000,
      });
      const consumer = this.#js.consumers.getConsumerFromInfo(info);
      try {
        while (cursor < untilSeq) {
          const batch = await consumer.fetch({ max_messages: 512, expires: this.#timeoutMs });
          let got = 0;
          for await (const m of batch) {
            got++;
            if (m.seq > untilSeq) {
              cursor = untilSeq;
              break;
            }
            out.push(parseStored(m.seq, m.subject, m.data, m.headers?.get(CommitHeader.CommandHash)));
            cursor = m.seq;
            if (m.info.pending === 0) {
              // Nothing more on the subject: a commit up to untilSeq was removed.
              untilSeq = cursor;
              break;
            }
          }
          if (got === 0) break;
        }
      } finally {
        consumer.delete().catch(() => undefined);
      }
      return out;
    } catch (err) {
      if (err instanceof RehydrationError) throw err;
      throw new StreamError(
        `reading the commits of ${subject} failed: ${errorText(err)}`,
        {},
        { cause: err },
      );
    }
  }

  /**
   * Fetches the commits of `subject` in (afterSeq, untilSeq] by sequence, following
   * `Aggregate-Previous-Seqs` (each commit names its recent predecessors and a few further back),
   * with parallel direct gets (each reply's list asked for on arrival): a direct get by sequence
   * costs the server one lookup, a get or consumer by subject scans every message in between. The result is the chain that
   * links back from `untilSeq` through `Nats-Expected-Last-Subject-Sequence` (each commit's
   * predecessor), so a wrong or foreign list cannot put a commit in it; `complete` when the chain
   * reaches `afterSeq`, else `before` is where the caller must scan up to.
   */
  async #readLinked(
    subject: string,
    afterSeq: number,
    untilSeq: number,
  ): Promise<{ commits: StoredCommit[]; complete: boolean; before: number }> {
    if (untilSeq <= afterSeq) return { commits: [], complete: true, before: afterSeq };
    const bySeq = new Map<number, LinkedMsg>();
    const tried = new Set<number>();
    const parsed = new Map<number, StoredCommit | RehydrationError>();
    // Direct gets on the event log's own inbox (as its appends): nats.js's request path costs
    // about as much client CPU per get as the server's lookup.
    const directGet = `$JS.API.DIRECT.GET.${this.#stream}`;
    const get = async (seq: number): Promise<LinkedMsg | undefined> => {
      try {
        const reply = await this.#acks.publish(
          directGet,
          encoder.encode(`{"seq":${seq}}`),
          undefined,
          this.#timeoutMs,
        );
        const h = reply.headers;
        if (!h || h.hasError || h.get("Nats-Subject") !== subject) return undefined;
        return { seq: Number(h.get("Nats-Sequence")), subject, header: h, data: reply.data };
      } catch {
        return undefined; // gone, or not on this replica yet: the scan decides
      }
    };
    // No rounds: each reply asks for the predecessors it names as soon as it arrives, so the
    // server always has gets queued and a load costs about one round trip plus its gets.
    await new Promise<void>((resolve, reject) => {
      let pending = 0;
      const visit = (m: LinkedMsg | undefined): void => {
        try {
          if (m === undefined) return;
          bySeq.set(m.seq, m);
          for (const seq of previousSeqs(m)) request(seq);
          // Parsed while the server still works on the other gets (an error waits until the
          // chain shows the commit is one of this load's).
          parsed.set(m.seq, tryParse(m));
        } finally {
          if (--pending === 0) resolve();
        }
      };
      const request = (seq: number): void => {
        if (seq <= afterSeq || seq >= untilSeq || tried.has(seq) || tried.size >= LINKED_READ_MAX) return;
        tried.add(seq);
        pending++;
        get(seq).then(visit).catch(reject);
      };
      pending++; // held until the first requests are out
      const last = this.#lastRead.peek(subject);
      this.#lastRead.delete(subject);
      if (last?.seq === untilSeq) {
        // Fetched by lastSeq() just before: start from its list.
        tried.add(last.seq);
        pending++;
        visit(last);
      } else {
        tried.add(untilSeq);
        pending++;
        get(untilSeq).then(visit).catch(reject);
      }
      if (--pending === 0) resolve();
    });
    const kept: LinkedMsg[] = [];
    for (let m = bySeq.get(untilSeq); m !== undefined;) {
      kept.push(m);
      const previous = expectedLast(m);
      if (!(previous > afterSeq) || previous >= m.seq) break;
      m = bySeq.get(previous);
    }
    if (kept.length === 0) return { commits: [], complete: false, before: untilSeq };
    const oldest = kept.at(-1)!;
    const before = expectedLast(oldest);
    const linked = Number.isSafeInteger(before) && before < oldest.seq;
    return {
      commits: kept.reverse().map((m) => {
        const commit = parsed.get(m.seq) ?? tryParse(m);
        if (commit instanceof RehydrationError) throw commit;
        return commit;
      }),
      complete: linked && before <= afterSeq,
      // Without a usable pointer, whatever lies before the oldest linked commit is scanned.
      before: linked ? before : oldest.seq - 1,
    };
  }

  async #manager(): Promise<JetStreamManager> {
    this.#jsm ??= await jetstreamManager(this.#nc, { timeout: this.#timeoutMs, checkAPI: false });
    return this.#jsm;
  }
}

/** JetStream's headers for a publish (nats.js sets the same from `js.publish` options). */
const JsHeader = {
  MsgId: "Nats-Msg-Id",
  ExpectedLastSubjectSeq: "Nats-Expected-Last-Subject-Sequence",
} as const;

/** A JetStream publish acknowledgement, or its error. */
interface PubAck {
  readonly stream?: string;
  readonly seq?: number;
  readonly duplicate?: boolean;
  readonly error?: { readonly code?: number; readonly err_code?: number; readonly description?: string };
}

/**
 * Publishes commits and waits for their JetStream acks on ONE wildcard inbox subscription,
 * with one timer for every wait. `js.publish` is a nats.js request: per publish a request object,
 * a timer, and (nats-core 3.4) a `RequestError` with a captured stack built on every
 * successful reply, about 4 % of a busy worker's main thread. An append is one publish and one
 * ack either way; the ack's body and error codes are read as nats.js reads them.
 */
class AckWaiter {
  readonly #nc: NatsConnection;
  readonly #waiting = new Map<string, { resolve(m: Msg): void; reject(e: Error): void; deadline: number }>();
  #prefix = "";
  #sub: Subscription | undefined;
  #timer: NodeJS.Timeout | undefined;
  #next = 0;

  constructor(nc: NatsConnection) {
    this.#nc = nc;
  }

  publish(subject: string, body: Uint8Array, headers: MsgHdrs | undefined, timeoutMs: number): Promise<Msg> {
    this.#start();
    const token = (this.#next++).toString(36);
    return new Promise<Msg>((resolve, reject) => {
      this.#waiting.set(token, { resolve, reject, deadline: Date.now() + timeoutMs });
      try {
        this.#nc.publish(subject, body, { reply: this.#prefix + token, ...(headers ? { headers } : {}) });
      } catch (err) {
        this.#waiting.delete(token);
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  #start(): void {
    if (this.#sub !== undefined && !this.#sub.isClosed()) return;
    const inbox = createInbox();
    this.#prefix = `${inbox}.`;
    this.#sub = this.#nc.subscribe(`${inbox}.*`, {
      callback: (err, msg) => {
        if (err) {
          this.#failAll(err);
          return;
        }
        const token = msg.subject.slice(this.#prefix.length);
        const waiter = this.#waiting.get(token);
        if (waiter === undefined) return; // timed out already
        this.#waiting.delete(token);
        waiter.resolve(msg);
      },
    });
    void this.#sub.closed.then(() => this.#failAll(new Error("the connection closed")));
    // One sweep for every wait: a late ack finds no waiter and is dropped.
    this.#timer ??= setInterval(() => {
      const now = Date.now();
      for (const [token, waiter] of this.#waiting) {
        if (waiter.deadline > now) continue;
        this.#waiting.delete(token);
        waiter.reject(new Error("no acknowledgement in time (timeout)"));
      }
    }, 100);
    this.#timer.unref();
  }

  #failAll(err: Error): void {
    for (const waiter of this.#waiting.values()) waiter.reject(err);
    this.#waiting.clear();
  }
}

/** A message as a direct get by sequence returns it. */
interface LinkedMsg {
  readonly seq: number;
  readonly subject: string;
  readonly header: MsgHdrs;
  readonly data: Uint8Array;
}

/** Most commits one load fetches by sequence before it scans for the rest. */
const LINKED_READ_MAX = 2_000;

/** The sequences a commit's `Aggregate-Previous-Seqs` names (valid numbers below its own). */
function previousSeqs(m: LinkedMsg): number[] {
  const text = m.header.get(CommitHeader.PreviousSeqs);
  if (text === "") return [];
  return text
    .split(",")
    .map(Number)
    .filter((seq) => Number.isSafeInteger(seq) && seq > 0 && seq < m.seq);
}

/** A commit's `Nats-Expected-Last-Subject-Sequence`: its predecessor's sequence; NaN when absent. */
function expectedLast(m: LinkedMsg): number {
  const text = m.header.get(CommitHeader.ExpectedLastSubjectSeq);
  return text === "" ? Number.NaN : Number(text);
}

/** A fetched commit parsed, or why it cannot be. */
function tryParse(m: LinkedMsg): StoredCommit | RehydrationError {
  try {
    return parseStored(m.seq, m.subject, m.data, m.header.get(CommitHeader.CommandHash));
  } catch (err) {
    if (err instanceof RehydrationError) return err;
    throw err;
  }
}

function parseStored(seq: number, subject: string, data: Uint8Array, hash: string | undefined): StoredCommit {
  let commit;
  try {
    commit = v.parse(Commit, JSON.parse(decoder.decode(data)));
  } catch (err) {
    throw new RehydrationError(
      `stream sequence ${seq} on ${subject} is not a valid commit`,
      { seq },
      { cause: err },
    );
  }
  return { seq, subject, commit, payload_hash: hash || undefined };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Builds the cold-load data set fast, straight into JetStream and KV in the contract's format
 * (CONTRACT.md §3, §4) instead of through the service: one commit message per command (body
 * `{"command_id","events":[envelope]}`, headers Nats-Msg-Id, Aggregate-Version,
 * Aggregate-Command-Hash, x-correlation-id; for the aggregates the bench loads also
 * Nats-Expected-Last-Subject-Sequence and Aggregate-Previous-Seqs, as the service writes them),
 * and for the aggregates the bench loads, a snapshot at
 * version 100 in `AGGREGATE_SNAPSHOTS` under `<tenant>.<type>.<id>`.
 *
 * Each measured aggregate has its whole history in the stream: 100 commits up to the snapshot,
 * then `behind` more (0, 50 or 99). Filler aggregates (a few commits each, no snapshot) make the
 * stream big and its subjects many. Commits are published round by round (the r-th commit of
 * every aggregate, then the r+1-th, ...), so one aggregate's commits are spread over the stream
 * as they would be in a live system, not stored next to each other.
 *
 * The snapshots look like the service's own: `recent_commands` holds the last 100 commands (the
 * default idempotency window), and there is no `program` field, so any apply program accepts them.
 */
import { randomUUID } from "node:crypto";
import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from "@nats-io/nats-core";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";

export const TYPE = "bank-account";
export const SNAPSHOT_VERSION = 100;

export interface SeedPlan {
  readonly tenant: string;
  /** Commits after the snapshot, e.g. [0, 50, 99]. */
  readonly buckets: readonly number[];
  /** Aggregate sets; each holds `perBucket` aggregates of every bucket (e.g. one set per repetition, plus warm-up sets). */
  readonly sets: number;
  readonly perBucket: number;
  readonly fillerAggregates: number;
  readonly fillerCommits: number;
  readonly stream: string;
  readonly bucket: string;
  /** Recent command ids in each snapshot (the service's idempotency window). */
  readonly recentCommands: number;
}

export interface SeededAggregate {
  readonly id: string;
  readonly behind: number;
  /** Version after the last commit. */
  readonly version: number;
  readonly lastSeq: number;
}

export interface SeedResult {
  /** sets[s] = the aggregates of set s, every bucket mixed. */
  readonly sets: SeededAggregate[][];
  readonly messages: number;
  readonly aggregates: number;
  readonly snapshots: number;
  readonly ms: number;
  /** The stream after seeding (it also holds what earlier scenarios wrote). */
  readonly streamMessages: number;
  readonly streamSubjects: number;
}

interface Plan {
  readonly id: string;
  readonly commits: number;
  readonly behind: number | undefined;
  /** Round offset, so filler commits are spread over the rounds. */
  readonly firstRound: number;
  readonly commandIds: string[];
  readonly seqs: number[];
}

/** Publishes awaiting their ack at once. */
const WINDOW = 4_000;

/**
 * JetStream publishes with acks, pipelined: a core publish with a reply subject under one
 * wildcard inbox per seeder, so an ack costs one small message and no per-publish request object
 * (js.publish in nats.js makes one, with an Error, per call: about 3x slower here).
 */
class AckedPublisher {
  readonly #nc: NatsConnection;
  readonly #inbox = `_INBOX.bench-seed.${randomUUID().replaceAll("-", "")}`;
  readonly #pending = new Map<number, (seq: number) => void>();
  #next = 0;
  #failure: Error | undefined;
  #wake: (() => void) | undefined;

  constructor(nc: NatsConnection) {
    this.#nc = nc;
    nc.subscribe(`${this.#inbox}.*`, {
      callback: (err, m) => {
        if (err) {
          this.#failure ??= err;
          return;
        }
        const n = Number(m.subject.slice(this.#inbox.length + 1));
        const ack = m.json<{ seq?: number; duplicate?: boolean; error?: { description?: string } }>();
        const done = this.#pending.get(n);
        this.#pending.delete(n);
        if (ack.error || ack.seq === undefined || ack.duplicate) {
          this.#failure ??= new Error(`seed publish failed: ${JSON.stringify(ack)}`);
        } else done?.(ack.seq);
        if (this.#pending.size <= WINDOW / 2) this.#wake?.();
      },
    });
  }

  async publish(subject: string, body: string, h: MsgHdrs, onAck: (seq: number) => void): Promise<void> {
    if (this.#failure) throw this.#failure;
    const n = this.#next++;
    this.#pending.set(n, onAck);
    this.#nc.publish(subject, body, { reply: `${this.#inbox}.${n}`, headers: h });
    if (this.#pending.size >= WINDOW) await this.#waitBelow(WINDOW / 2);
  }

  async drain(): Promise<void> {
    await this.#waitBelow(0);
    if (this.#failure) throw this.#failure;
  }

  async #waitBelow(limit: number): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (this.#pending.size > limit) {
      if (this.#failure) throw this.#failure;
      if (Date.now() > deadline) throw new Error(`seed: ${this.#pending.size} acks missing after 30 s`);
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, 100);
      });
    }
  }
}

export async function seed(
  nc: NatsConnection,
  plan: SeedPlan,
  log: (line: string) => void,
): Promise<SeedResult> {
  const started = performance.now();
  const maxBehind = Math.max(...plan.buckets);
  const rounds = SNAPSHOT_VERSION + maxBehind;

  const measured: Plan[][] = [];
  for (let s = 0; s < plan.sets; s++) {
    const set: Plan[] = [];
    for (const behind of plan.buckets) {
      for (let i = 0; i < plan.perBucket; i++) {
        set.push({
          id: randomUUID(),
          commits: SNAPSHOT_VERSION + behind,
          behind,
          firstRound: 0,
          commandIds: [],
          seqs: [],
        });
      }
    }
    measured.push(set);
  }
  const filler: Plan[] = Array.from({ length: plan.fillerAggregates }, (_, i) => ({
    id: randomUUID(),
    commits: plan.fillerCommits,
    behind: undefined,
    firstRound: i % Math.max(1, rounds - plan.fillerCommits),
    commandIds: [],
    seqs: [],
  }));
  const all = [...measured.flat(), ...filler];

  const pub = new AckedPublisher(nc);
  let messages = 0;
  const timestamp = new Date().toISOString();
  for (let round = 0; round < rounds; round++) {
    for (const agg of all) {
      const n = round - agg.firstRound; // index of this aggregate's commit in this round
      if (n < 0 || n >= agg.commits) continue;
      const version = n + 1;
      const commandId = randomUUID();
      const subject = `tenant.${plan.tenant}.aggregate.${TYPE}.${agg.id}`;
      const body = {
        command_id: commandId,
        events: [
          {
            tenant_id: plan.tenant,
            event_id: randomUUID(),
            aggregate_id: agg.id,
            aggregate_type: TYPE,
            version,
            event_type: "deposited",
            payload: { type: "deposited", amount: 1 },
            command_id: commandId,
            correlation_id: commandId,
            timestamp,
            metadata: {},
          },
        ],
      };
      const h = natsHeaders();
      h.set("Nats-Msg-Id", `${plan.tenant}.${TYPE}.${agg.id}.${commandId}`);
      h.set("Aggregate-Version", String(version));
      h.set("Aggregate-Command-Hash", "bench-seed");
      h.set("x-correlation-id", commandId);
      if (agg.behind !== undefined) {
        agg.commandIds.push(commandId);
        // As the service writes them: the predecessor's sequence (checked by the server) and the
        // sequences of its 16 latest predecessors and every 16th further back (what lets a load
        // fetch commits by sequence instead of scanning for them).
        h.set("Nats-Expected-Last-Subject-Sequence", String(agg.seqs[n - 1] ?? 0));
        const before = agg.seqs.slice(0, n).reverse();
        const previous = before.slice(0, 16);
        for (let i = 31; i < Math.min(before.length, 96); i += 16) previous.push(before[i]!);
        if (previous.length > 0) h.set("Aggregate-Previous-Seqs", previous.join(","));
      }
      await pub.publish(subject, JSON.stringify(body), h, (seq) => {
        if (agg.behind !== undefined) agg.seqs[n] = seq;
      });
      messages++;
    }
    if (round % 25 === 0) log(`  seeding: round ${round}/${rounds}, ${messages} commits`);
    // The next round's headers name this round's sequences: wait for its acks.
    await pub.drain();
  }
  await pub.drain();

  // Snapshots at version 100 for the measured aggregates.
  const kv = await new Kvm(nc).open(plan.bucket);
  const created = new Date().toISOString();
  let puts: Promise<unknown>[] = [];
  for (const agg of measured.flat()) {
    const recent = [];
    for (let v = Math.max(1, SNAPSHOT_VERSION - plan.recentCommands + 1); v <= SNAPSHOT_VERSION; v++) {
      recent.push({
        command_id: agg.commandIds[v - 1]!,
        payload_hash: "bench-seed",
        version: v,
        stream_seq: agg.seqs[v - 1]!,
      });
    }
    const snapshot = {
      tenant_id: plan.tenant,
      aggregate_id: agg.id,
      aggregate_type: TYPE,
      version: SNAPSHOT_VERSION,
      stream_seq: agg.seqs[SNAPSHOT_VERSION - 1]!,
      state: { balance: SNAPSHOT_VERSION, status: "open" },
      created_at: created,
      recent_commands: recent,
    };
    puts.push(kv.put(`${plan.tenant}.${TYPE}.${agg.id}`, JSON.stringify(snapshot)));
    if (puts.length >= 500) {
      await Promise.all(puts);
      puts = [];
    }
  }
  await Promise.all(puts);

  // Check what the service will see: the last commit of a sample of aggregates.
  const jsm = await jetstreamManager(nc);
  for (const agg of measured.flat().filter((_, i) => i % 37 === 0)) {
    const m = await jsm.direct.getMessage(plan.stream, {
      last_by_subj: `tenant.${plan.tenant}.aggregate.${TYPE}.${agg.id}`,
    });
    const want = agg.seqs[agg.commits - 1];
    if (m?.seq !== want) throw new Error(`seed: last commit of ${agg.id} is at ${m?.seq}, expected ${want}`);
  }
  const info = await jsm.streams.info(plan.stream);
  const sets = measured.map((set) =>
    set.map((a) => ({ id: a.id, behind: a.behind!, version: a.commits, lastSeq: a.seqs[a.commits - 1]! })),
  );
  return {
    sets,
    messages,
    aggregates: all.length,
    snapshots: measured.flat().length,
    ms: performance.now() - started,
    streamMessages: info.state.messages,
    streamSubjects: info.state.num_subjects ?? 0,
  };
}

/** Fisher–Yates, in place. */
export function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

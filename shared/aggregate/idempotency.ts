import type { AppliedCommand } from "../contract/index.ts";

/**
 * The aggregate's memory of recently applied command ids. JetStream's `Nats-Msg-Id` dedup only
 * lasts the stream's duplicate window; this record, kept with the state and in snapshots, lets a
 * retry be recognised after that window and after restarts, for the last `window` commands.
 *
 * It is looked up on every command, so past a few entries it keeps an index beside the ordered
 * list (a Map costs more memory than it saves time below that, and a worker may cache 100k
 * aggregates with one or two commands each). It is mutable:
 * only the command running for its aggregate (one at a time, see KeyedQueue) touches it, and
 * anything that may fail half-way works on a `clone()`.
 */
/** Entries from which a Map index pays for itself. */
const INDEX_FROM = 16;

export class RecentCommands {
  readonly #window: number;
  /**
   * Oldest first. Replaced, never grown in place: `push` would give even a one-entry list room
   * for 17 (about 130 bytes more per cached aggregate; a worker may cache 100k of them), while
   * `concat` allocates exactly what it holds.
   */
  #order: readonly AppliedCommand[];
  /** Built once the list outgrows INDEX_FROM. */
  #byId: Map<string, AppliedCommand> | undefined;

  constructor(window: number, entries: readonly AppliedCommand[] = []) {
    this.#window = Math.max(1, window);
    this.#order = [];
    for (const entry of entries.slice(-this.#window)) this.add(entry);
  }

  get size(): number {
    return this.#order.length;
  }

  find(commandId: string): AppliedCommand | undefined {
    if (this.#byId) return this.#byId.get(commandId);
    for (let i = this.#order.length - 1; i >= 0; i--) {
      if (this.#order[i]!.command_id === commandId) return this.#order[i];
    }
    return undefined;
  }

  /** Remembers a command, forgetting the oldest ones beyond the window. */
  add(applied: AppliedCommand): void {
    if (this.find(applied.command_id)) return;
    const drop = Math.max(0, this.#order.length + 1 - this.#window);
    for (let i = 0; i < drop; i++) this.#byId?.delete(this.#order[i]!.command_id);
    this.#order = (drop > 0 ? this.#order.slice(drop) : this.#order).concat([applied]);
    this.#byId?.set(applied.command_id, applied);
    if (!this.#byId && this.#order.length > INDEX_FROM) {
      this.#byId = new Map(this.#order.map((a) => [a.command_id, a]));
    }
  }

  clone(): RecentCommands {
    return new RecentCommands(this.#window, this.#order);
  }

  /** Stream sequences of the newest `max` commands, newest first. */
  lastSeqs(max: number): number[] {
    const out: number[] = [];
    for (let i = this.#order.length - 1; i >= 0 && out.length < max; i--)
      out.push(this.#order[i]!.stream_seq);
    return out;
  }

  /** Oldest first, as stored in snapshots. */
  toArray(): AppliedCommand[] {
    return [...this.#order];
  }
}

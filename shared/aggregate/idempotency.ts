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
  readonly #order: AppliedCommand[];
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

  /** Remembers a command, forgetting the oldest one beyond the window. */
  add(applied: AppliedCommand): void {
    if (this.find(applied.command_id)) return;
    this.#order.push(applied);
    this.#byId?.set(applied.command_id, applied);
    while (this.#order.length > this.#window) {
      // Not `this.#byId?.delete(this.#order.shift()…)`: optional chaining would skip the shift.
      const oldest = this.#order.shift()!;
      this.#byId?.delete(oldest.command_id);
    }
    if (!this.#byId && this.#order.length > INDEX_FROM) {
      this.#byId = new Map(this.#order.map((a) => [a.command_id, a]));
    }
  }

  clone(): RecentCommands {
    return new RecentCommands(this.#window, this.#order);
  }

  /** Oldest first, as stored in snapshots. */
  toArray(): AppliedCommand[] {
    return [...this.#order];
  }
}

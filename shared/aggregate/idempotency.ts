import type { AppliedCommand } from "../contract/index.ts";

/**
 * The aggregate's memory of recently applied command ids. JetStream's `Nats-Msg-Id` dedup only
 * lasts the stream's duplicate window; this record, kept with the state and in snapshots, lets a
 * retry be recognised after that window and after restarts, for the last `window` commands.
 *
 * It is looked up on every command, so it keeps an index beside the ordered list. It is mutable:
 * only the command running for its aggregate (one at a time, see KeyedQueue) touches it, and
 * anything that may fail half-way works on a `clone()`.
 */
export class RecentCommands {
  readonly #window: number;
  readonly #order: AppliedCommand[];
  readonly #byId: Map<string, AppliedCommand>;

  constructor(window: number, entries: readonly AppliedCommand[] = []) {
    this.#window = Math.max(1, window);
    this.#order = [];
    this.#byId = new Map();
    for (const entry of entries.slice(-this.#window)) this.add(entry);
  }

  get size(): number {
    return this.#order.length;
  }

  find(commandId: string): AppliedCommand | undefined {
    return this.#byId.get(commandId);
  }

  /** Remembers a command, forgetting the oldest one beyond the window. */
  add(applied: AppliedCommand): void {
    if (this.#byId.has(applied.command_id)) return;
    this.#order.push(applied);
    this.#byId.set(applied.command_id, applied);
    while (this.#order.length > this.#window) this.#byId.delete(this.#order.shift()!.command_id);
  }

  clone(): RecentCommands {
    return new RecentCommands(this.#window, this.#order);
  }

  /** Oldest first, as stored in snapshots. */
  toArray(): AppliedCommand[] {
    return [...this.#order];
  }
}

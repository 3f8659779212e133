import type { AppliedCommand } from "../contract/index.ts";

/**
 * The aggregate's memory of recently applied command ids. JetStream's `Nats-Msg-Id` dedup only
 * lasts the stream's duplicate window; this record, kept with the state and in snapshots, lets a
 * retry be recognised after that window and after restarts, for the last `window` commands.
 */
export function findApplied(
  recent: readonly AppliedCommand[],
  commandId: string,
): AppliedCommand | undefined {
  // Newest last: a retry is most likely of a recent command.
  for (let i = recent.length - 1; i >= 0; i--) {
    const applied = recent[i]!;
    if (applied.command_id === commandId) return applied;
  }
  return undefined;
}

/** Returns a new record with `applied` added, keeping at most `window` entries. */
export function remember(
  recent: readonly AppliedCommand[],
  applied: AppliedCommand,
  window: number,
): AppliedCommand[] {
  const start = Math.max(0, recent.length + 1 - window);
  const next = recent.slice(start);
  next.push(applied);
  return next;
}

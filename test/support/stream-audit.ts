/**
 * Reads the events stream back and checks what every fault test promises: per aggregate,
 * versions contiguous and each command exactly once.
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import { expect } from "vitest";

export interface AuditedCommit {
  readonly seq: number;
  readonly version: number;
  readonly command: string;
  readonly events: number;
}

/** Every commit of the stream whose subject starts with `prefix`, by aggregate id, in stream order. */
export async function readCommits(
  jsm: JetStreamManager,
  stream: string,
  prefix = "",
): Promise<Map<string, AuditedCommit[]>> {
  const info = await jsm.streams.info(stream);
  const stored = new Map<string, AuditedCommit[]>();
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq });
    if (!m?.subject.startsWith(prefix)) continue;
    const aggregate = m.subject.split(".")[4]!;
    const body = m.json<{ command_id: string; events: unknown[] }>();
    const list = stored.get(aggregate) ?? [];
    list.push({
      seq,
      version: Number(m.header.get("Aggregate-Version")),
      command: body.command_id,
      events: body.events.length,
    });
    stored.set(aggregate, list);
  }
  return stored;
}

/** Each aggregate's versions follow on from one another, and no command is in it twice. */
export function expectContiguousOnce(
  stored: ReadonlyMap<string, readonly AuditedCommit[]>,
  ids: readonly string[],
): void {
  for (const id of ids) {
    const commits = stored.get(id) ?? [];
    let version = 0;
    for (const c of commits) {
      expect(c.version, `aggregate ${id} at seq ${c.seq}`).toBe(version + c.events);
      version = c.version;
    }
    const commands = commits.map((c) => c.command);
    expect(new Set(commands).size, `aggregate ${id} has a command twice`).toBe(commands.length);
  }
}

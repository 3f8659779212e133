/**
 * Counts the NATS requests a command causes, as the server sees them: a monitor connection
 * subscribes to the stream's subjects, the JetStream API and KV subjects while a batch of
 * commands runs one at a time, and the counts are divided by the number of commands. Anything else
 * that talks to JetStream meanwhile is counted too, so the probe runs while nothing else does.
 */
import { connect } from "@nats-io/transport-node";

/** Subject → what it is, first match wins. */
const KINDS: Array<[RegExp, string]> = [
  [/^tenant\./, "JetStream publish (commit)"],
  [/^\$JS\.API\.DIRECT\.GET\.KV_/, "KV get (direct get)"],
  [/^\$JS\.API\.STREAM\.MSG\.GET\.KV_/, "KV get (stream msg get)"],
  [/^\$KV\./, "KV put (snapshot)"],
  [/^\$JS\.API\.DIRECT\.GET\./, "direct get (event log)"],
  [/^\$JS\.API\.CONSUMER\.CREATE\./, "consumer create"],
  [/^\$JS\.API\.CONSUMER\.MSG\.NEXT\./, "consumer fetch"],
  [/^\$JS\.API\.CONSUMER\.DELETE\./, "consumer delete"],
  [/^\$JS\.API\.STREAM\.MSG\.GET\./, "stream msg get"],
];

function kindOf(subject: string): string {
  for (const [re, kind] of KINDS) if (re.test(subject)) return kind;
  // Other API calls by verb, e.g. "$JS.API.STREAM.INFO".
  const m = /^\$JS\.API\.([A-Z]+(?:\.[A-Z]+)?)/.exec(subject);
  return m ? `JetStream API ${m[1]}` : subject.split(".").slice(0, 2).join(".");
}

export interface RoundTrips {
  readonly commands: number;
  /** Requests per command, by kind. */
  readonly perCommand: Record<string, number>;
  /** All of them per command. */
  readonly total: number;
}

/**
 * Runs `work` (which must return how many commands it sent) with a monitor on `tenant.<tenant>.>`,
 * `$JS.API.>` and `$KV.>`.
 */
export async function countRoundTrips(
  natsUrl: string,
  tenant: string,
  work: () => Promise<number>,
): Promise<RoundTrips> {
  const nc = await connect({ servers: natsUrl, name: "bench-round-trips", noAsyncTraces: true });
  const counts: Record<string, number> = {};
  const count = (subject: string) => {
    const k = kindOf(subject);
    counts[k] = (counts[k] ?? 0) + 1;
  };
  try {
    for (const subject of [`tenant.${tenant}.>`, "$JS.API.>", "$KV.>"]) {
      nc.subscribe(subject, {
        callback: (err, m) => {
          if (!err) count(m.subject);
        },
      });
    }
    await nc.flush();
    const commands = await work();
    // Let in-flight copies arrive (snapshot writes run after the reply).
    await new Promise((resolve) => setTimeout(resolve, 300));
    await nc.flush();
    const perCommand: Record<string, number> = {};
    let total = 0;
    for (const [k, n] of Object.entries(counts)) {
      perCommand[k] = n / commands;
      total += n;
    }
    return { commands, perCommand, total: total / commands };
  } finally {
    await nc.close();
  }
}

/**
 * The baseline: the floor of the architecture. A minimal NATS service (plain queue-group
 * subscription) that per request parses the JSON body, does ONE JetStream publish on the
 * aggregate's subject with `Nats-Msg-Id` and `Nats-Expected-Last-Subject-Sequence`, and replies.
 * No validation, no sandbox, no snapshots, no metrics, no logs.
 *
 * To put the same bytes on the wire as the service, the published commit and the reply carry one
 * event envelope in the contract's format (CONTRACT.md §3): the difference to the service is the
 * work, not the payload size. The last sequence per aggregate is kept in a Map; the load
 * generator never has two requests in flight for one aggregate, so it never conflicts.
 *
 * Usage (by run.ts): fork with argv [natsUrl, subject]; it sends {type:"ready"} over IPC.
 */
import { randomUUID } from "node:crypto";
import { headers as natsHeaders, type Msg } from "@nats-io/nats-core";
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";

const [natsUrl, subject] = process.argv.slice(2);
if (!natsUrl || !subject) throw new Error("usage: baseline.ts <nats-url> <subject>");

/**
 * The baseline's commits go to the same stream as the service's, under a type of their own: the
 * service's read model projects `bank-account` commits, and folding the baseline's would make the
 * service spend CPU during the baseline's windows (slowing the floor it is measured against).
 */
const TYPE = "bank-account-baseline";
const nc = await connect({ servers: natsUrl, noAsyncTraces: true, name: `bench-baseline-${process.pid}` });
const js = jetstream(nc, { timeout: 5_000 });
const encoder = new TextEncoder();

interface Known {
  seq: number;
  version: number;
}
const known = new Map<string, Known>();

interface Request {
  command_id: string;
  aggregate_id: string;
  payload: { type: string; amount: number };
}

function errorReply(msg: Msg, err: unknown): void {
  const h = natsHeaders();
  const text = (err instanceof Error ? err.message : String(err)).replace(/[\r\n]+/g, " ");
  h.set("Nats-Service-Error-Code", "500");
  h.set("Nats-Service-Error", text);
  msg.respond(JSON.stringify({ error: { code: "StreamError", message: text } }), { headers: h });
}

async function handle(msg: Msg): Promise<void> {
  try {
    const req = msg.json<Request>();
    const tenant = msg.headers?.get("x-tenant-id") || "_";
    const subj = `tenant.${tenant}.aggregate.${TYPE}.${req.aggregate_id}`;
    const last = known.get(subj) ?? { seq: 0, version: 0 };
    const version = last.version + 1;
    const event = {
      tenant_id: tenant,
      event_id: randomUUID(),
      aggregate_id: req.aggregate_id,
      aggregate_type: TYPE,
      version,
      event_type: "deposited",
      payload: { type: "deposited", amount: req.payload.amount },
      command_id: req.command_id,
      correlation_id: req.command_id,
      timestamp: new Date().toISOString(),
      metadata: {},
    };
    const ack = await js.publish(
      subj,
      encoder.encode(JSON.stringify({ command_id: req.command_id, events: [event] })),
      {
        msgID: `${tenant}.${TYPE}.${req.aggregate_id}.${req.command_id}`,
        expect: { lastSubjectSequence: last.seq },
      },
    );
    known.set(subj, { seq: ack.seq, version });
    msg.respond(
      JSON.stringify({
        tenant_id: tenant,
        aggregate_type: TYPE,
        aggregate_id: req.aggregate_id,
        command_id: req.command_id,
        version,
        stream_seq: ack.seq,
        correlation_id: req.command_id,
        duplicate: false,
        events: [event],
      }),
    );
  } catch (err) {
    errorReply(msg, err);
  }
}

nc.subscribe(subject, {
  queue: "bench-baseline",
  callback: (err, msg) => {
    if (!err) void handle(msg);
  },
});
await nc.flush();
process.send?.({ type: "ready" });
process.on("disconnect", () => {
  void nc.drain().finally(() => process.exit(0));
});
process.on("SIGTERM", () => {
  void nc.drain().finally(() => process.exit(0));
});

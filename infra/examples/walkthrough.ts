// The README's walkthrough: send commands to the bank-account example through NATS.
// Run it against a running service:  NATS_URL=nats://127.0.0.1:PORT npx tsx infra/examples/walkthrough.ts
import { headers } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";

const nc = await connect({ servers: process.env["NATS_URL"] ?? "nats://127.0.0.1:4222" });
const h = headers();
h.set("x-tenant-id", "acme");

async function send(verb: "submit" | "get", body: object): Promise<Record<string, unknown>> {
  const reply = await nc.request(`aggregate.bank-account.${verb}`, JSON.stringify(body), {
    headers: h,
    timeout: 5000,
  });
  return reply.json();
}

const opened = await send("submit", { payload: { type: "open", initial_balance: 100 } });
const id = opened["aggregate_id"]; // a new aggregate's id is the command id, generated when absent
await send("submit", { aggregate_id: id, payload: { type: "deposit", amount: 50 } });
const refused = await send("submit", { aggregate_id: id, payload: { type: "withdraw", amount: 1000 } });
const state = await send("get", { aggregate_id: id });

console.log(JSON.stringify({ opened: opened["version"], refused, state }));
// {"opened":1,"refused":{"error":{"code":"DecideError","message":"insufficient funds"}},
//  "state":{"tenant_id":"acme","aggregate_type":"bank-account","aggregate_id":"…","version":2,
//           "state":{"balance":150,"status":"open"}}}
await nc.close();

/**
 * A handler that fails asynchronously must still answer. @nats-io/services only catches
 * synchronous throws, so a rejected promise in an endpoint handler would leave the caller waiting
 * for its timeout unless the service's own wrapper turns it into an error reply.
 *
 * The honest trigger: delete the events stream under the running service. Every command then
 * fails deep inside an awaited JetStream call (the direct get of the aggregate's last commit on
 * load, or the publish of the commit for a cached aggregate), long after the handler returned to
 * the services library. Nothing is mocked.
 */
import { randomUUID } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { request, startTestApp, type TestApp } from "../support/service.ts";
import { GET, STREAM, SUBMIT, expectError, expectOk } from "../support/service-replies.ts";

let server: NatsServer;
let nc: NatsConnection;
let app: TestApp;

beforeAll(async () => {
  server = await startTestNats();
  // A 1 s budget per JetStream call: with the stream gone, some calls end only by timing out.
  app = await startTestApp(server.url, { AGGREGATE_REQUEST_TIMEOUT_MS: "1000" });
  nc = await connectTest(server);
});
afterAll(async () => {
  await nc?.close();
  await app?.stop();
  await server?.stop();
});

describe("asynchronous failures in a handler", () => {
  it("answers with a 500 error reply, not a timeout, when the events stream is gone", async () => {
    const cached = randomUUID();
    expectOk(await request(nc, SUBMIT, { aggregate_id: cached, payload: { type: "deposit", amount: 10 } }));

    const jsm = await jetstreamManager(nc);
    expect(await jsm.streams.delete(STREAM)).toBe(true);

    // The client waits 4 s, longer than the service's own 1 s JetStream budget: a reply must come
    // from the service (request() throws on a client timeout).
    const onCached = await request(
      nc,
      SUBMIT,
      { aggregate_id: cached, payload: { type: "deposit", amount: 1 } },
      {},
      4_000,
    );
    expectError(onCached, 500, "StreamError");
    const onNew = await request(nc, SUBMIT, { payload: { type: "deposit", amount: 1 } }, {}, 4_000);
    expectError(onNew, 500, "StreamError");
    const onGet = await request(nc, GET, { aggregate_id: randomUUID() }, {}, 4_000);
    expectError(onGet, 500, "StreamError");

    // The failures are counted as errors of the endpoint, and nothing is left in flight.
    const counters = app.services.stats("bank-account")!;
    expect(counters.errors_by_code["StreamError"]).toBe(3);
    expect(counters.in_flight).toBe(0);
    expect(app.services.inFlight).toBe(0);
  });
});

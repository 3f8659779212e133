/**
 * Start-up readiness: when startApp resolves (the moment the "ready" line is logged and /ready
 * turns 200) the service's endpoints must already be subscribed at the server. A gateway that
 * watches for "ready" and sends at once must not meet "no responders".
 *
 * That is a race between the service's SUB, on its own connection, and a request on another
 * connection. To make it deterministic the service reaches nats-server through a TCP proxy that
 * delays what the service sends by 40 ms (a service one WAN hop away from NATS, the gateway
 * next to it). Anything the service waited for (a flush, a JetStream call) has crossed the
 * proxy before start-up completes; anything it did not wait for is still on its way.
 */
import { createServer, connect as tcpConnect, type Server, type Socket } from "node:net";
import type { AddressInfo } from "node:net";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { request, startTestApp, type TestApp } from "../support/service.ts";
import { SUBMIT, expectOk } from "../support/service-replies.ts";

const DELAY_MS = 40;

let server: NatsServer;
let nc: NatsConnection;
let proxy: Server;
let proxyUrl: string;
const sockets = new Set<Socket>();

/** Forwards TCP to nats-server, delaying client-to-server bytes (order kept: equal timers run FIFO). */
function startDelayProxy(port: number): Promise<Server> {
  const p = createServer((client) => {
    const upstream = tcpConnect(port, "127.0.0.1");
    sockets.add(client).add(upstream);
    client.on("data", (chunk) => {
      setTimeout(() => {
        if (!upstream.destroyed) upstream.write(chunk);
      }, DELAY_MS);
    });
    upstream.on("data", (chunk) => {
      if (!client.destroyed) client.write(chunk);
    });
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("close", close).on("error", close);
    upstream.on("close", close).on("error", close);
  });
  return new Promise((resolve) => p.listen(0, "127.0.0.1", () => resolve(p)));
}

beforeAll(async () => {
  server = await startTestNats();
  nc = await connectTest(server);
  proxy = await startDelayProxy(server.port);
  proxyUrl = `nats://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await nc?.close();
  for (const s of sockets) s.destroy();
  await new Promise((resolve) => proxy?.close(resolve));
  await server?.stop();
});

describe("start-up", () => {
  it("answers a command sent the moment start-up completes (ready means subscribed)", async () => {
    let app: TestApp | undefined;
    try {
      app = await startTestApp(proxyUrl);
      let reply;
      try {
        reply = await request(nc, SUBMIT, { payload: { type: "deposit", amount: 1 } }, {}, 5_000);
      } catch (err) {
        expect.fail(`a request sent right after start-up completed got no answer: ${String(err)}`);
      }
      expectOk(reply);
    } finally {
      await app?.stop();
    }
  });
});

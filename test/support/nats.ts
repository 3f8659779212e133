import { randomBytes } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { inject } from "vitest";

/** Connects to the test run's nats-server. */
export async function connectTest(): Promise<NatsConnection & AsyncDisposable> {
  const nc = await connect({ servers: inject("natsUrl"), noAsyncTraces: true });
  return Object.assign(nc, {
    [Symbol.asyncDispose]: async () => {
      if (!nc.isClosed()) await nc.close();
    },
  });
}

/** A name unique to this test, so files sharing the server never share a stream or bucket. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(5).toString("hex").toUpperCase()}`;
}

import { randomBytes } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { startNatsServer, type NatsServer } from "../../shared/nats-server/index.ts";

/**
 * A real nats-server for one test file: free port, temp store, gone after the file. The contract
 * fixes the stream's subjects and the services' subjects, so files sharing one server would share
 * streams and queue groups; a server per file (about 30 ms to start) keeps them apart.
 */
export async function startTestNats(): Promise<NatsServer> {
  return startNatsServer();
}

/** Connects to a test server. */
export async function connectTest(server: { url: string }): Promise<NatsConnection> {
  return connect({ servers: server.url, noAsyncTraces: true });
}

/** A name unique to this test, for streams and buckets beside the standard ones. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(5).toString("hex").toUpperCase()}`;
}

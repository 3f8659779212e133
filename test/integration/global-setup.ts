import type { TestProject } from "vitest/node";
import { startNatsServer, type NatsServer } from "../../shared/nats-server/index.ts";

declare module "vitest" {
  export interface ProvidedContext {
    /** URL of the nats-server this test run started (never the machine's shared one). */
    natsUrl: string;
  }
}

let server: NatsServer | undefined;

/** One real nats-server with JetStream per test run: free port, temp store dir. */
export async function setup(project: TestProject): Promise<void> {
  server = await startNatsServer();
  project.provide("natsUrl", server.url);
}

export async function teardown(): Promise<void> {
  await server?.stop();
}

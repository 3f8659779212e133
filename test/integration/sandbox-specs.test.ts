/**
 * Start-up runs the decider specs of every type (AGGREGATE_SPECS): `enforce` refuses to start
 * when one fails, naming it; `warn` (the default) starts and logs the failure with its diff.
 */
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { startTestNats } from "../support/nats.ts";
import { FUNCTIONS_DIR, startTestApp } from "../support/service.ts";

const WRONG = `- name: a deliberately wrong expectation
  given: [{ type: opened, initial_balance: 100 }]
  when: { type: withdraw, amount: 1000 }
  then:
    - { type: withdrawn, amount: 1000 }
`;

let server: NatsServer;
let functionsDir: string;

beforeAll(async () => {
  server = await startTestNats();
  functionsDir = await mkdtemp(path.join(tmpdir(), "sandbox-specs-"));
  await cp(path.join(FUNCTIONS_DIR, "bank-account"), path.join(functionsDir, "bank-account"), {
    recursive: true,
  });
  await writeFile(path.join(functionsDir, "bank-account", "specs", "wrong.yaml"), WRONG);
});

afterAll(async () => {
  await server?.stop();
  await rm(functionsDir, { recursive: true, force: true });
});

describe("decider specs at start-up", () => {
  it("starts with AGGREGATE_SPECS=enforce when every spec passes", async () => {
    await using app = await startTestApp(server.url, { AGGREGATE_SPECS: "enforce" });
    expect(app.logs.find((line) => line["msg"] === "decider specs run")).toMatchObject({
      failed: 0,
      mode: "enforce",
    });
  });

  it("refuses to start with AGGREGATE_SPECS=enforce when a spec fails, naming it", async () => {
    await expect(
      startTestApp(server.url, {
        AGGREGATE_FUNCTIONS_DIR: functionsDir,
        AGGREGATE_SPECS: "enforce",
        AGGREGATE_SANDBOX_THREADS: "0",
      }),
    ).rejects.toThrow(
      /decider specs failed \(AGGREGATE_SPECS=enforce\): bank-account: specs\/wrong\.yaml #1 "a deliberately wrong expectation"/,
    );
  });

  it("starts by default (warn) and logs the failing spec with its diff", async () => {
    await using app = await startTestApp(server.url, {
      AGGREGATE_FUNCTIONS_DIR: functionsDir,
      AGGREGATE_SANDBOX_THREADS: "0",
    });
    const warning = app.logs.find((line) => line["msg"] === "decider spec failed");
    expect(warning).toMatchObject({
      level: 40,
      aggregate_type: "bank-account",
      file: "specs/wrong.yaml",
      index: 1,
    });
    expect(warning?.["diff"]).toContain(
      '+ { "error": { "code": "DecideError", "message": "insufficient funds" } }',
    );
  });
});

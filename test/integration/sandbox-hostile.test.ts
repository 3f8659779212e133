/**
 * The hostile-program battery, through the real service on a real nats-server: every program
 * below is an attack on the worker (time, memory, stack, the event loop, the JSON boundary).
 * Each command must get a 500 ProgramError within its deadline + 1 s, the process must stay up,
 * and a normal command on another aggregate must succeed right after. Twice, with the process's
 * memory measured after each round: an incident must not leak.
 */
import { cp, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { randomUUID } from "node:crypto";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { FUNCTIONS_DIR, request, startTestApp, type TestApp } from "../support/service.ts";

const TIMEOUT_MS = 200;

/** Each case: [name, what decide does, the reason the metrics must count]. */
const CASES: ReadonlyArray<readonly [string, string, string]> = [
  ["while(true){}", "while (true) {}", "timeout"],
  ["for(;;){try{while(true){}}catch{}}", "for (;;) { try { while (true) {} } catch {} }", "timeout"],
  [
    "Array.prototype.indexOf.call({length:2**32-1}, 1)",
    "return { type: 'x', i: Array.prototype.indexOf.call({ length: 2 ** 32 - 1 }, 1) };",
    "timeout",
  ],
  [
    "200 x 1 MiB new Uint8Array",
    "const keep = []; for (let i = 0; i < 200; i++) keep.push(new Uint8Array(1 << 20)); return { type: 'x', n: keep.length };",
    "memory",
  ],
  [
    "a 10-million-element array",
    "const a = new Array(1e7).fill(0); return { type: 'x', n: a.length };",
    "memory",
  ],
  ["unbounded recursion", "const f = (n) => f(n + 1) + 1; return { type: 'x', n: f(0) };", "stack"],
  [
    "catching its own out-of-memory",
    "const keep = []; try { for (;;) keep.push(new Uint8Array(1 << 20)); } catch (e) {} return { type: 'survived' };",
    "memory",
  ],
  [
    "Promise.resolve().then(...) left pending",
    "Promise.resolve().then(() => { for (;;) {} }); return { type: 'x' };",
    "pending-job",
  ],
  ["throw 42", "throw 42;", "bad-throw"],
  ["throw undefined", "throw undefined;", "bad-throw"],
  ["returning a BigInt", "return { type: 'x', n: 10n };", "non-json"],
  ["returning a function", "return { type: 'x', f() {} };", "non-json"],
  ["returning a cycle", "const e = { type: 'x' }; e.self = e; return e;", "non-json"],
  ["returning a Symbol", "return { type: 'x', s: Symbol('s') };", "non-json"],
];

const HOSTILE = `export function decide(state, command) {
  switch (command.type) {
    case "ok": return { type: "ok" };
${CASES.map(([, body], i) => `    case "case-${i}": { ${body} }`).join("\n")}
    default: throw new Error("unknown " + command.type);
  }
}
export function apply(state, event) {
  return { ...state, seen: (state.seen ?? 0) + 1 };
}
`;

let functionsDir: string;
let server: NatsServer;
let nc: NatsConnection;
let app: TestApp;

beforeAll(async () => {
  functionsDir = await mkdtemp(path.join(tmpdir(), "sandbox-hostile-"));
  await cp(path.join(FUNCTIONS_DIR, "bank-account"), path.join(functionsDir, "bank-account"), {
    recursive: true,
  });
  await mkdir(path.join(functionsDir, "hostile"));
  await writeFile(
    path.join(functionsDir, "hostile", "manifest.yaml"),
    `decide: program.js\napply: program.js\nlimits: { timeout_ms: ${TIMEOUT_MS}, memory_mb: 32 }\n`,
  );
  await writeFile(path.join(functionsDir, "hostile", "program.js"), HOSTILE);
  await mkdir(path.join(functionsDir, "ts-counter"));
  await writeFile(
    path.join(functionsDir, "ts-counter", "manifest.yaml"),
    "decide: decide.ts\napply: apply.ts\ninitial_state: { count: 0 }\n",
  );
  await writeFile(
    path.join(functionsDir, "ts-counter", "decide.ts"),
    `interface State { count: number }\nexport function decide(state: State, command: { type: "add"; by: number }): { type: "added"; by: number } {\n  return { type: "added", by: command.by };\n}\n`,
  );
  await writeFile(
    path.join(functionsDir, "ts-counter", "apply.ts"),
    `type State = { count: number };\nexport const apply = (state: State, event: { by: number }): State => ({ count: state.count + event.by });\n`,
  );
  server = await startTestNats();
  // The defaults are what is under test: 2 threads, 500 ms grace, poison after 3.
  app = await startTestApp(server.url, { AGGREGATE_FUNCTIONS_DIR: functionsDir });
  nc = await connectTest(server);
});

afterAll(async () => {
  await nc?.close();
  await app?.stop();
  await server?.stop();
  await rm(functionsDir, { recursive: true, force: true });
});

const submit = (type: string, aggregateId: string, payload: Record<string, unknown>) =>
  request(nc, `aggregate.${type}.submit`, { aggregate_id: aggregateId, payload }, {}, 10_000);

/** One round of the battery; returns the elapsed time per case. */
async function battery(): Promise<Record<string, number>> {
  const timings: Record<string, number> = {};
  for (const [i, [name]] of CASES.entries()) {
    const started = performance.now();
    const reply = await submit("hostile", randomUUID(), { type: `case-${i}` });
    const elapsed = performance.now() - started;
    timings[name] = Math.round(elapsed);
    expect([name, reply.status, (reply.body["error"] as { code?: string } | undefined)?.code]).toEqual([
      name,
      500,
      "ProgramError",
    ]);
    expect(elapsed, name).toBeLessThan(TIMEOUT_MS + 1_000);
    const normal = await submit("bank-account", randomUUID(), { type: "deposit", amount: 1 });
    expect([name, normal.status, (normal.body["events"] as unknown[] | undefined)?.length]).toEqual([
      name,
      undefined,
      1,
    ]);
  }
  return timings;
}

/**
 * The process's resident memory once garbage is collected: the main heap's garbage (replies,
 * stopped threads' handles) would otherwise make the number depend on when V8 last collected.
 */
async function settledRss(): Promise<number> {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  for (let i = 0; i < 3; i++) {
    gc();
    await sleep(100);
  }
  return process.memoryUsage().rss;
}

describe("hostile programs", () => {
  it("fail with ProgramError within deadline + 1 s, each followed by a normal command that succeeds; no leak per incident", async () => {
    const first = await battery();
    const afterOnce = await settledRss();
    const second = await battery();
    const afterTwice = await settledRss();
    console.log(
      JSON.stringify({
        first,
        second,
        rss_after_once_mb: afterOnce >> 20,
        rss_after_twice_mb: afterTwice >> 20,
      }),
    );
    expect(afterTwice).toBeLessThan(afterOnce * 1.2);

    // The process is up and healthy, and the metrics counted each failure by its reason.
    const health = await fetch(`http://127.0.0.1:${app.httpPort}/health`);
    expect(health.status).toBe(200);
    const metrics = await app.metrics.text();
    for (const reason of new Set(CASES.map(([, , r]) => r))) {
      expect(metrics).toMatch(
        new RegExp(`aggregate_sandbox_failures_total\\{[^}]*reason="${reason}"[^}]*\\} (\\d+)`),
      );
    }
  });

  it("refuses an aggregate that keeps hitting limits as poisoned, fast, while its neighbours work", async () => {
    const poisoned = randomUUID();
    for (let i = 0; i < 3; i++) {
      const reply = await submit("hostile", poisoned, { type: "case-0" });
      expect(reply.status).toBe(500);
      expect(reply.errorHeader).toMatch(/timed out/);
    }
    const refused = await submit("hostile", poisoned, { type: "case-0" });
    expect(refused.status).toBe(500);
    expect((refused.body["error"] as { message: string }).message).toMatch(
      /poisoned: the last 3 calls for this aggregate hit a limit \(timeout\)/,
    );
    // Refused without running (the unit tests count the calls): the metrics say why.
    expect(await app.metrics.text()).toMatch(
      /aggregate_sandbox_failures_total\{[^}]*reason="poisoned"[^}]*\} 1/,
    );
    // The same type on another aggregate, and another type, are unaffected.
    expect((await submit("hostile", randomUUID(), { type: "ok" })).status).toBeUndefined();
    expect(
      (await submit("bank-account", randomUUID(), { type: "deposit", amount: 1 })).status,
    ).toBeUndefined();
  });

  it("runs a type written in TypeScript (decide.ts / apply.ts in the manifest)", async () => {
    const reply = await submit("ts-counter", randomUUID(), { type: "add", by: 3 });
    expect(reply.status).toBeUndefined();
    expect(reply.body["events"]).toMatchObject([{ event_type: "added", payload: { type: "added", by: 3 } }]);
  });
});

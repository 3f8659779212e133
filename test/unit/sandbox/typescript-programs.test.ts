import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadFunctions } from "../../../shared/functions/index.ts";
import { compileProgramFile, createQuickJsSandbox, type Sandbox } from "../../../shared/sandbox/index.ts";
import { context, programFolder } from "./program-fixture.ts";

const DEFAULTS = { snapshotThreshold: 100, timeoutMs: 1_000, memoryMb: 32 };

let sandbox: Sandbox;
beforeAll(() => {
  sandbox = createQuickJsSandbox();
});
afterAll(async () => {
  await sandbox.close();
});

describe("programs written in TypeScript", () => {
  it("loads decide.ts and apply.ts named by the manifest; the types are stripped at load", async () => {
    await using dir = await programFolder({
      "counter/manifest.yaml": "decide: decide.ts\napply: apply.ts\ninitial_state: { count: 0 }\n",
      "counter/types.ts": `
        export interface State { readonly count: number }
        export type Command = { type: "add"; by: number } | { type: "reset" };
        export type Event = { type: "added"; by: number } | { type: "reset" };
        export const enum Limit { Max = 10 }`,
      "counter/decide.ts": `
        import type { Command, Event, State } from "./types.ts";
        import { Limit } from "./types.ts";
        export function decide(state: State, command: Command): Event[] {
          if (command.type === "reset") return [{ type: "reset" }];
          const by = command.by satisfies number;
          if (state.count + by > Limit.Max) throw new Error(\`would pass \${Limit.Max as number}\`);
          return [{ type: "added", by }];
        }`,
      "counter/apply.ts": `
        import type { Event, State } from "./types.ts";
        export function apply(state: State, event: Event): State {
          return event.type === "added" ? { count: state.count + event.by } : { count: 0 };
        }`,
    });
    const [counter] = await loadFunctions(dir.dir, DEFAULTS, compileProgramFile);
    expect(counter?.source.decide.file).toMatch(/decide\.ts$/);
    const program = await sandbox.load(counter!.source);
    const outcome = await program.decide(counter!.initialState, { type: "add", by: 4 }, context());
    expect(outcome).toEqual({ events: [{ type: "added", by: 4 }], state: `{"count":4}` });
    await expect(program.decide(outcome.state, { type: "add", by: 7 }, context())).rejects.toThrow(
      "would pass 10",
    );
    expect(await program.applyAll(counter!.initialState, [{ type: "added", by: 2 }, { type: "reset" }])).toBe(
      `{"count":0}`,
    );
  });
});

describe("limits from the manifest", () => {
  it("takes timeout_ms and memory_mb from the manifest and the service defaults for the rest", async () => {
    await using dir = await programFolder({
      "a/manifest.yaml": "decide: p.js\napply: p.js\nlimits: { timeout_ms: 250 }\n",
      "a/p.js": "export const decide = () => [], apply = (s) => s;",
    });
    const [a] = await loadFunctions(
      dir.dir,
      { ...DEFAULTS, maxTimeoutMs: 250, maxMemoryMb: 32 },
      compileProgramFile,
    );
    expect(a?.source.limits).toEqual({ timeoutMs: 250, memoryMb: 32 });
  });

  it.each([
    [
      "limits: { timeout_ms: 5000 }",
      /limits\.timeout_ms 5000 is above the service's cap AGGREGATE_PROGRAM_MAX_TIMEOUT_MS=1000/,
    ],
    [
      "limits: { memory_mb: 512 }",
      /limits\.memory_mb 512 is above the service's cap AGGREGATE_PROGRAM_MAX_MEMORY_MB=64/,
    ],
  ])("stops start-up naming the manifest when %s is above the cap", async (limits, message) => {
    await using dir = await programFolder({
      "greedy/manifest.yaml": `decide: p.js\napply: p.js\n${limits}\n`,
      "greedy/p.js": "export const decide = () => [], apply = (s) => s;",
    });
    const loading = loadFunctions(
      dir.dir,
      { ...DEFAULTS, maxTimeoutMs: 1_000, maxMemoryMb: 64 },
      compileProgramFile,
    );
    await expect(loading).rejects.toThrow(message);
    await expect(loading).rejects.toThrow(/greedy\/manifest\.yaml: /);
  });
});

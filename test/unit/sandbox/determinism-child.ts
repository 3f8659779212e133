/**
 * Run as a child process by test/integration/sandbox-determinism.test.ts, under different TZ and
 * locale variables: a fresh worker pool runs a fixed command sequence and prints every outcome
 * as one JSON line, then the replay of all events. Two runs must print the same bytes. The host's
 * own view of the clock goes to stderr, so the test can check that the environments differed.
 */
import path from "node:path";
import type { JsonObject } from "../../../shared/contract/index.ts";
import { loadFunctions } from "../../../shared/functions/index.ts";
import {
  compileProgramFile,
  createWorkerSandbox,
  type AggregateProgram,
} from "../../../shared/sandbox/index.ts";
import { context, programFolder } from "./program-fixture.ts";

const QUIRKY = `
export function decide(state, command, context) {
  const words = ["Zebra", "apple", "\\u00c4pfel", "banana", "\\u00e9clair", "Apple", "zoo"];
  const n = command.n;
  return [{
    type: "computed",
    sorted: [...words].sort(),
    localeSorted: [...words].sort((a, b) => a.localeCompare(b)),
    float: String(n / 7), fixed: (n / 7).toFixed(5), precision: (n * Math.PI).toPrecision(15),
    exp: Math.exp(n / 10), sin: Math.sin(n), pow: Math.pow(1.1, n), sqrt: Math.sqrt(n), atan2: Math.atan2(n, 3),
    upper: "stra\\u00dfe \\u01c6".toUpperCase(), lower: "\\u0130STANBUL".toLowerCase(),
    localeUpper: "i".toLocaleUpperCase(), nfd: "\\u00e9".normalize("NFD").length,
    localeString: (1234567.891 * n).toLocaleString(), intl: typeof Intl,
    json: JSON.stringify({ b: 1, a: [n, -0, 1e21, 1e-7, 0.1 + 0.2] }),
    keys: Object.keys({ b: 1, 2: 0, a: 1, 1: 0 }),
    parsed: parseFloat("3.14abc") + parseInt("0x1f"),
    context,
  }];
}
export function apply(state, event) {
  return { ...state, count: (state.count ?? 0) + 1, last: event };
}
`;

const lines: string[] = [];
const FUNCTIONS_DIR = path.resolve(import.meta.dirname, "../../../functions");
const [bank] = (
  await loadFunctions(
    FUNCTIONS_DIR,
    { snapshotThreshold: 100, timeoutMs: 1_000, memoryMb: 32 },
    compileProgramFile,
  )
).filter((fn) => fn.type === "bank-account");
await using folder = await programFolder({ "quirky.js": QUIRKY });
const quirkyModule = await compileProgramFile(folder.path("quirky.js"));
const pool = createWorkerSandbox({ size: 1 });
try {
  const programs: Array<[AggregateProgram, string, JsonObject[]]> = [
    [
      await pool.load(bank!.source),
      bank!.initialState,
      [
        { type: "open", initial_balance: 100, owner: "ann" },
        { type: "deposit", amount: 50 },
        { type: "withdraw", amount: 1_000 },
        { type: "withdraw", amount: 150 },
        { type: "deposit", amount: 7 },
        { type: "withdraw", amount: 7 },
        { type: "close" },
        { type: "deposit", amount: 1 },
      ],
    ],
    [
      await pool.load({
        name: "quirky",
        decide: quirkyModule,
        apply: quirkyModule,
        limits: { timeoutMs: 1_000, memoryMb: 32 },
      }),
      "{}",
      Array.from({ length: 12 }, (_, i) => ({ type: "compute", n: i * 13 + 1 })),
    ],
  ];
  for (const [program, initial, commands] of programs) {
    let state = initial;
    const events: JsonObject[] = [];
    for (const [version, command] of commands.entries()) {
      try {
        const outcome = await program.decide(
          state,
          command,
          context({ tenant_id: "acme", aggregate_id: "00000000-0000-4000-8000-000000000001", version }),
        );
        state = outcome.state;
        events.push(...outcome.events);
        lines.push(JSON.stringify({ events: outcome.events, state: outcome.state }));
      } catch (err) {
        lines.push(JSON.stringify({ error: (err as Error).name, message: (err as Error).message }));
      }
    }
    lines.push(JSON.stringify({ replay: await program.applyAll(initial, events) }));
  }
} finally {
  await pool.close();
}
process.stdout.write(`${lines.join("\n")}\n`);
process.stderr.write(
  `${JSON.stringify({ tz: process.env["TZ"], hours_at_epoch: new Date(0).getHours(), local: new Date(0).toString() })}\n`,
);

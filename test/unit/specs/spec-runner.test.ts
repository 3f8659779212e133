import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createQuickJsSandbox, type AggregateProgram, type Sandbox } from "../../../shared/sandbox/index.ts";
import {
  diffLines,
  formatSpecReport,
  loadSpecFile,
  loadSpecs,
  runAllSpecs,
  specCounts,
} from "../../../shared/specs/index.ts";
import { BANK_ACCOUNT, loadProgram, programFolder } from "../sandbox/program-fixture.ts";

let sandbox: Sandbox;
let bank: AggregateProgram;

beforeAll(async () => {
  sandbox = createQuickJsSandbox();
  bank = await loadProgram(sandbox, BANK_ACCOUNT);
});
afterAll(async () => {
  await sandbox.close();
});

const SPECS = `
- name: a deposit adds to the balance
  given: [{ type: deposited, amount: 10 }]
  when: { type: deposit, amount: 5 }
  then:
    events: [{ amount: 5, type: deposited }]
    state: { balance: 15 }
- name: a deliberately wrong expectation
  given: [{ type: deposited, amount: 10 }]
  when: { type: withdraw, amount: 50 }
  then:
    - { type: withdrawn, amount: 50 }
- name: a refusal with the wrong message
  when: { type: withdraw, amount: 50 }
  then:
    error: { code: DecideError, message: not enough money }
`;

describe("decider specs", () => {
  it("passes a spec whose events and state match (key order aside) and fails the others with a readable diff", async () => {
    await using dir = await programFolder({ "specs/account.yaml": SPECS });
    const [results] = await runAllSpecs([
      { type: "bank", dir: dir.dir, initialState: `{"balance":0}`, program: bank },
    ]);
    expect(results!.results.map((r) => r.passed)).toEqual([true, false, false]);
    expect(specCounts([results!])).toEqual({ passed: 1, failed: 2 });

    const report = formatSpecReport([results!]);
    expect(report).toContain("✓ a deposit adds to the balance  (specs/account.yaml #1)");
    expect(report).toContain("✗ a deliberately wrong expectation  (specs/account.yaml #2)");
    expect(report).toContain(
      [
        '      - { "events": [{ "type": "withdrawn", "amount": 50 }] }',
        '      + { "error": { "code": "DecideError", "message": "insufficient funds" } }',
      ].join("\n"),
    );
    expect(report).toContain(
      [
        '      - { "error": { "code": "DecideError", "message": "not enough money" } }',
        '      + { "error": { "code": "DecideError", "message": "insufficient funds" } }',
      ].join("\n"),
    );
    expect(report.endsWith("1 passed, 2 failed")).toBe(true);
  });

  it("marks only the lines that differ in a long outcome", () => {
    expect(diffLines("{\n  a\n  b\n}", "{\n  a\n  c\n}")).toBe("  {\n    a\n-   b\n+   c\n  }");
  });

  it("compares the error code alone when the spec gives no message", async () => {
    await using dir = await programFolder({
      "specs/a.yaml":
        "- name: refused\n  when: { type: withdraw, amount: 1 }\n  then: { error: { code: DecideError } }\n",
    });
    const [results] = await runAllSpecs([
      { type: "bank", dir: dir.dir, initialState: `{"balance":0}`, program: bank },
    ]);
    expect(results!.results[0]?.passed).toBe(true);
  });

  it.each([
    ["not a list", "name: x\n", /a\.yaml: must be a list of specs/],
    [
      "an unknown key",
      "- name: x\n  when: { type: a }\n  then: []\n  expect: []\n",
      /a\.yaml: spec 1 \(x\): expect: /,
    ],
    [
      "an event without a type",
      "- name: x\n  when: { type: a }\n  then: [{ amount: 1 }]\n",
      /spec 1 \(x\): then/,
    ],
    [
      "an unknown error code",
      "- name: x\n  when: { type: a }\n  then: { error: { code: Oops } }\n",
      /spec 1 \(x\): then/,
    ],
  ])("refuses a spec file with %s, naming the file and the spec", async (_what, text, message) => {
    await using dir = await programFolder({ "a.yaml": text });
    await expect(loadSpecFile(dir.path("a.yaml"))).rejects.toThrow(message);
  });

  it("finds no specs in a folder without specs/", async () => {
    await using dir = await programFolder({ "manifest.yaml": "" });
    expect(await loadSpecs(dir.dir)).toEqual([]);
  });
});

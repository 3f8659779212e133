import { expect, it } from "vitest";
import { runSandboxBench } from "../../../shared/sandbox/sandbox-bench.ts";

it("measures applyAll of 1,000 events against plain JavaScript, in this thread and through the pool", async () => {
  const result = await runSandboxBench({ rounds: 1 });
  console.log(`sandbox micro-benchmark: ${JSON.stringify(result)}`);
  expect(result.events).toBe(1_000);
  // Loose floors: this guards the harness and gross regressions, not the target (see the README).
  expect(result.applyAllInThread).toBeGreaterThan(20_000);
  expect(result.applyAllInPool).toBeGreaterThan(20_000);
  expect(result.plainJs).toBeGreaterThan(result.applyAllInThread);
  expect(result.decidePoolMicros).toBeLessThan(20_000);
});

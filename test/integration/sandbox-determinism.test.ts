/**
 * Determinism across hosts: the same command sequence, run by fresh worker pools in two child
 * processes with different time zones and locales, gives byte-identical events and states.
 * Programs have no clock, no randomness and no host access; what is left (sorting, number
 * formatting, Math, case mapping, JSON) is QuickJS's own code in the same WebAssembly binary.
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const REPO = path.resolve(import.meta.dirname, "../..");
const CHILD = path.join(REPO, "test/unit/sandbox/determinism-child.ts");

async function runChild(
  env: Record<string, string>,
): Promise<{ stdout: string; host: { hours_at_epoch: number } }> {
  const { stdout, stderr } = await run(process.execPath, ["--import", "tsx", CHILD], {
    cwd: REPO,
    env: { ...process.env, ...env },
    timeout: 60_000,
  });
  return { stdout, host: JSON.parse(stderr.trim().split("\n").pop()!) as { hours_at_epoch: number } };
}

describe("determinism", () => {
  it("gives byte-identical events and states under TZ=UTC and TZ=Asia/Tokyo, C and German locales", async () => {
    const [utc, tokyo] = await Promise.all([
      runChild({ TZ: "UTC", LANG: "C", LC_ALL: "C" }),
      runChild({ TZ: "Asia/Tokyo", LANG: "de_DE.UTF-8", LC_ALL: "de_DE.UTF-8" }),
    ]);
    // The hosts really did differ...
    expect([utc.host.hours_at_epoch, tokyo.host.hours_at_epoch]).toEqual([0, 9]);
    // ...and the programs could not tell.
    const lines = utc.stdout.trim().split("\n");
    expect(lines).toHaveLength(8 + 1 + 12 + 1);
    expect(lines.filter((line) => line.includes('"DecideError"'))).toHaveLength(2);
    expect(tokyo.stdout).toBe(utc.stdout);
  });
});

import { describe, expect, it } from "vitest";
import { validate, version } from "uuid";
import { pooledUuidv7 } from "../../../shared/app/uuid.ts";

describe("pooled UUID v7", () => {
  it("gives valid, distinct v7 ids across several refills of the random pool", () => {
    const next = pooledUuidv7();
    const ids = Array.from({ length: 2_000 }, () => next());
    for (const id of ids) {
      expect(validate(id)).toBe(true);
      expect(version(id)).toBe(7);
    }
    expect(new Set(ids).size).toBe(ids.length);
    // 74 random bits per id: two ids sharing them would mean the pool handed out bytes twice.
    expect(new Set(ids.map((id) => id.replaceAll("-", "").slice(13))).size).toBe(ids.length);
  });

  it("carries the current time in its first 48 bits", () => {
    const before = Date.now();
    const id = pooledUuidv7()();
    const ms = parseInt(id.replaceAll("-", "").slice(0, 12), 16);
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(Date.now());
  });

  it("sorts in the order the ids were made, also within one millisecond and when the clock goes back", () => {
    const next = pooledUuidv7();
    const ids = Array.from({ length: 2_000 }, () => next());
    expect([...ids].sort()).toEqual(ids);
    let t = 1_000_000;
    const clock = pooledUuidv7(() => t);
    const a = clock();
    t -= 5; // the clock steps back: ids still count up
    const b = clock();
    t += 100;
    const c = clock();
    expect([a, b, c]).toEqual([a, b, c].sort());
    expect(new Set([a, b, c]).size).toBe(3);
  });
});

import { describe, expect, it } from "vitest";
import { ValidationError } from "../../../shared/contract/index.ts";
import { compilePredicate, parseFilter } from "../../../shared/query/index.ts";

const matches = (filter: string, state: unknown) => compilePredicate(parseFilter(filter))(state);

function refusal(filter: string): ValidationError {
  try {
    parseFilter(filter);
  } catch (err) {
    expect(err).toBeInstanceOf(ValidationError);
    return err as ValidationError;
  }
  throw new Error(`expected ${filter} to be refused`);
}

describe("parseFilter + compilePredicate", () => {
  it("compares type-strictly: numbers with numbers, strings with strings, a missing field never matches", () => {
    expect(matches("balance > 50", { balance: 100 })).toBe(true);
    expect(matches("balance > 50", { balance: 9 })).toBe(false);
    expect(matches("balance > 50", { balance: "100" })).toBe(false);
    expect(matches("balance > 50", {})).toBe(false);
    expect(matches("!(balance > 50)", {})).toBe(true);
    expect(matches('status != "open"', {})).toBe(false);
    expect(matches('status != "open"', { status: 5 })).toBe(true);
    expect(matches("50 < balance", { balance: 51 })).toBe(true);
    expect(matches("balance == 1.0", { balance: 1 })).toBe(true);
    expect(matches("x == null", { x: null })).toBe(true);
    expect(matches("has(x)", { x: null })).toBe(true);
    expect(matches("has(a.b)", { a: [1] })).toBe(false);
  });

  it("supports in-lists, array membership, string functions and nested paths", () => {
    expect(matches('status in ["open", "new"]', { status: "new" })).toBe(true);
    expect(matches('"vip" in tags', { tags: ["a", "vip"] })).toBe(true);
    expect(matches('"vip" in tags', { tags: "vip" })).toBe(false);
    expect(matches('owner.name.startsWith("An")', { owner: { name: "Ann" } })).toBe(true);
    expect(matches('owner.name.endsWith("nn") && owner.name.contains("n")', { owner: { name: "Ann" } })).toBe(
      true,
    );
    expect(matches("active", { active: true })).toBe(true);
  });

  it("orders strings by code point, like SQLite BINARY and PostgreSQL COLLATE C", () => {
    expect(matches('s > "\\uffff"', { s: "😀" })).toBe(true);
  });

  it("refuses anything outside the subset with a 400 naming the position", () => {
    expect(refusal("balance > 50 && size(x) > 1").fields["position"]).toBe(16);
    expect(refusal("balance >").message).toMatch(/position 9/);
    for (const bad of [
      "a + 1 > 2",
      "a[0] == 1",
      "a == b",
      "true < a",
      "{'a': 1} == a",
      "a ? b : c",
      "__proto__.x == 1",
      "a.constructor == 1",
      "a.b.c.d.e.f.g.h.i == 1",
      "a == 1u",
      "a == b'x'",
      `a == "\\u0000"`,
      "a.matches('x')",
      "x == 9007199254740993",
    ]) {
      expect(() => parseFilter(bad), bad).toThrow(ValidationError);
    }
  });

  it("treats an empty filter as match-all", () => {
    expect(matches("", { anything: 1 })).toBe(true);
  });
});

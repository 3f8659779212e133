import { describe, expect, it } from "vitest";
import { parseApplyAllReply, parseDecideReply } from "../../../shared/sandbox/quickjs-sandbox.ts";

describe("sandbox reply texts", () => {
  it("splits a decide reply into events and the state text, code unit for code unit", () => {
    const state = `{"name":"\u00e9\ud83d\ude00 lone \ud800 end","n":1}`;
    const outcome = parseDecideReply(`O\n[{"type":"t","s":"a\\nb"}]\n${state}`);
    expect(outcome.events).toEqual([{ type: "t", s: "a\nb" }]);
    expect(outcome.state).toBe(state);
    expect(outcome.state.length).toBe(state.length);
  });

  it("returns applyAll's state text whole", () => {
    const state = `{"balance":42,"owner":"\ud800"}`;
    expect(parseApplyAllReply(`S\n${state}`)).toBe(state);
  });

  it("refuses texts that are not replies", () => {
    expect(() => parseDecideReply(`S\n{}`)).toThrow(/not a decide reply/);
    expect(() => parseDecideReply(`O\n[]`)).toThrow(/not a decide reply/);
    expect(() => parseApplyAllReply(`O\n[]\n{}`)).toThrow(/not an applyAll reply/);
  });
});

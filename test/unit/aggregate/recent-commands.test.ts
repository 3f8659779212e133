import { describe, expect, it } from "vitest";
import { RecentCommands } from "../../../shared/aggregate/index.ts";

const applied = (n: number) => ({
  command_id: `c${n}`,
  payload_hash: `h${n}`,
  version: n,
  stream_seq: n * 10,
});

describe("recent commands", () => {
  it("finds a remembered command and forgets the oldest beyond the window", () => {
    const recent = new RecentCommands(3);
    for (let n = 1; n <= 5; n++) recent.add(applied(n));
    expect(recent.size).toBe(3);
    expect(recent.find("c1")).toBeUndefined();
    expect(recent.find("c2")).toBeUndefined();
    expect(recent.find("c5")).toEqual(applied(5));
    expect(recent.toArray().map((a) => a.command_id)).toEqual(["c3", "c4", "c5"]);
  });

  it("keeps the newest entries of a longer list it starts from", () => {
    const recent = new RecentCommands(2, [applied(1), applied(2), applied(3)]);
    expect(recent.toArray().map((a) => a.version)).toEqual([2, 3]);
  });

  it("ignores a command id it already holds", () => {
    const recent = new RecentCommands(5, [applied(1)]);
    recent.add({ ...applied(1), version: 99 });
    expect(recent.size).toBe(1);
    expect(recent.find("c1")?.version).toBe(1);
  });

  it("finds entries the same way before and after it builds its index", () => {
    const recent = new RecentCommands(40);
    for (let n = 1; n <= 40; n++) {
      recent.add(applied(n));
      for (const m of [1, Math.ceil(n / 2), n]) expect(recent.find(`c${m}`)?.version).toBe(m);
      expect(recent.find(`c${n + 1}`)).toBeUndefined();
    }
    for (let n = 41; n <= 60; n++) recent.add(applied(n));
    expect(recent.find("c20")).toBeUndefined();
    expect(recent.find("c21")?.version).toBe(21);
    expect(recent.size).toBe(40);
  });

  it("clones independently", () => {
    const a = new RecentCommands(5, [applied(1)]);
    const b = a.clone();
    b.add(applied(2));
    expect(a.find("c2")).toBeUndefined();
    expect(b.find("c2")).toBeDefined();
  });
});

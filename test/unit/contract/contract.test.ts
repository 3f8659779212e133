import { randomUUID } from "node:crypto";
import * as v from "valibot";
import { describe, expect, it } from "vitest";
import {
  AggregateError,
  AggregateId,
  CommandId,
  Commit,
  DecideError,
  ErrorStatus,
  Event,
  Snapshot,
  TenantAccessDenied,
  TenantId,
  Version,
  VersionConflict,
  headerSafe,
  jsonDepthExceeds,
  parseAggregateId,
  parseAggregateType,
  parseTenantId,
  tenantToken,
} from "../../../shared/contract/index.ts";
import { v7 as uuidv7 } from "uuid";

const event = (over: Partial<Event> = {}): Event => ({
  tenant_id: "acme-corp",
  event_id: uuidv7(),
  aggregate_id: uuidv7(),
  aggregate_type: "account",
  version: 1,
  event_type: "deposited",
  payload: { type: "deposited", amount: 5 },
  command_id: uuidv7(),
  correlation_id: "c-1",
  timestamp: new Date().toISOString(),
  metadata: { source: "test" },
  ...over,
});

describe("identifiers", () => {
  it("round-trips a tenant id through JSON (T2.1)", () => {
    const id = v.parse(TenantId, "acme-corp");
    expect(v.parse(TenantId, JSON.parse(JSON.stringify(id)))).toBe("acme-corp");
  });

  it("accepts the empty tenant as the default and writes it as `_` in subjects (T2.2)", () => {
    expect(parseTenantId("")).toBe("");
    expect(tenantToken(v.parse(TenantId, ""))).toBe("_");
    expect(tenantToken(v.parse(TenantId, "acme"))).toBe("acme");
  });

  it.each(["_", "-a", "a.b", "*", ">", "a b", "x\r\ny", "a".repeat(65), "é", "a/b"])(
    "rejects the tenant id %j",
    (bad) => {
      expect(parseTenantId(bad)).toBeUndefined();
    },
  );

  it("round-trips an aggregate id and lower-cases it on input (T2.3)", () => {
    const id = uuidv7();
    expect(v.parse(AggregateId, JSON.parse(JSON.stringify(id)))).toBe(id);
    expect(parseAggregateId(id.toUpperCase())).toBe(id);
  });

  it.each(["", "a.b", "*", ">", "not-a-uuid", `${uuidv7()} `, `${uuidv7()}.x`, "x".repeat(5000)])(
    "rejects the aggregate id %j",
    (bad) => {
      expect(parseAggregateId(bad)).toBeUndefined();
      expect(v.is(CommandId, bad)).toBe(false);
    },
  );

  it("accepts aggregate types by the contract's rule", () => {
    expect(parseAggregateType("Order")).toBe("Order");
    expect(parseAggregateType("bank-account")).toBe("bank-account");
    for (const bad of ["", "1abc", "a.b", "a*", "a>", "a b", "a".repeat(65)])
      expect(parseAggregateType(bad)).toBeUndefined();
  });

  it("counts versions from 0 and refuses negative or fractional ones (T2.4)", () => {
    expect(v.parse(Version, 0)).toBe(0);
    expect(v.parse(Version, 0) + 1).toBe(1);
    expect(v.is(Version, -1)).toBe(false);
    expect(v.is(Version, 1.5)).toBe(false);
  });
});

describe("messages", () => {
  it("round-trips an event with its tenant id (T2.6)", () => {
    const e = event();
    expect(v.parse(Event, JSON.parse(JSON.stringify(e)))).toEqual(e);
  });

  it("round-trips a commit and refuses an empty one", () => {
    const c = { command_id: randomUUID(), events: [event(), event({ version: 2 })] };
    expect(v.parse(Commit, JSON.parse(JSON.stringify(c)))).toEqual(c);
    expect(v.is(Commit, { command_id: "x", events: [] })).toBe(false);
  });

  it("round-trips a snapshot with its tenant id, defaulting recent commands (T2.7)", () => {
    const s = {
      tenant_id: "acme-corp",
      aggregate_id: uuidv7(),
      aggregate_type: "account",
      version: 3,
      stream_seq: 42,
      state: { balance: 10 },
      created_at: new Date().toISOString(),
    };
    expect(v.parse(Snapshot, JSON.parse(JSON.stringify(s)))).toEqual({ ...s, recent_commands: [] });
    expect(v.is(Snapshot, { ...s, version: -1 })).toBe(false);
  });

  it("measures JSON depth without recursion", () => {
    let deep: unknown = 1;
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expect(jsonDepthExceeds(deep, 64)).toBe(true);
    expect(jsonDepthExceeds({ a: { b: [1, 2] } }, 3)).toBe(false);
    expect(jsonDepthExceeds({ a: { b: [{}] } }, 3)).toBe(true);
  });
});

describe("error catalogue (T2.8)", () => {
  it("gives every error a name, a stable code, a numeric status, fields and a cause", () => {
    const cause = new Error("10071");
    const err = new VersionConflict("stale", { expected: 3, actual: 4 }, { cause });
    expect(err).toBeInstanceOf(Error);
    expect(err).toBeInstanceOf(AggregateError);
    expect(err.name).toBe("VersionConflict");
    expect(err.code).toBe("VersionConflict");
    expect(err.status).toBe(409);
    expect(err.fields).toEqual({ expected: 3, actual: 4 });
    expect(err.cause).toBe(cause);
    expect(err.toJSON()).toEqual({ error: { code: "VersionConflict", message: "stale" } });
    expect(String(new TenantAccessDenied("no"))).toBe("TenantAccessDenied: no");
    expect(new DecideError("insufficient funds").status).toBe(422);
  });

  it("maps names to the contract's numbers", () => {
    expect(ErrorStatus).toMatchObject({
      ValidationError: 400,
      InvalidTenantId: 400,
      TenantAccessDenied: 403,
      NotFound: 404,
      VersionConflict: 409,
      CommandIdReused: 409,
      PayloadTooLarge: 413,
      DecideError: 422,
      ProgramError: 500,
      Unavailable: 503,
    });
  });

  it("makes any message safe for a one-line header", () => {
    expect(headerSafe("a\r\nb\tc")).toBe("a b c");
    expect(headerSafe("é")).toBe("?");
    expect(headerSafe("x".repeat(1000)).length).toBeLessThanOrEqual(256);
  });
});

import { describe, expect, it } from "vitest";
import {
  InvalidTenantId,
  TenantAccessDenied,
  ValidationError,
  type AggregateType,
  type TenantId,
} from "../../../shared/contract/index.ts";
import {
  canonicalJson,
  parseGet,
  parseSubmit,
  payloadHash,
  type RequestPolicy,
} from "../../../shared/service/index.ts";

const TYPE = "account" as AggregateType;
const ID = "0192f1a0-7b3c-7def-8123-456789abcdef";
const policy: RequestPolicy = { multiTenancy: "optional", defaultTenant: "" as TenantId, newId: () => ID };
const enc = (x: unknown) => new TextEncoder().encode(typeof x === "string" ? x : JSON.stringify(x));
const headers = (h: Record<string, string[]>) => ({
  values: (name: string) => h[Object.keys(h).find((k) => k.toLowerCase() === name.toLowerCase()) ?? ""] ?? [],
});
const deposit = { payload: { type: "deposit", amount: 1 } };

describe("submit requests", () => {
  it("takes the tenant from x-tenant-id and defaults the ids", () => {
    const c = parseSubmit(TYPE, headers({ "x-tenant-id": ["acme"] }), enc(deposit), policy);
    expect(c).toMatchObject({
      tenant_id: "acme",
      aggregate_type: "account",
      command_id: ID,
      aggregate_id: ID,
      metadata: {},
    });
    expect(c.correlation_id).toBe(ID);
  });

  it("uses the default tenant without a header, and refuses that when multi-tenancy is required", () => {
    expect(parseSubmit(TYPE, undefined, enc(deposit), policy).tenant_id).toBe("");
    expect(() => parseSubmit(TYPE, undefined, enc(deposit), { ...policy, multiTenancy: "required" })).toThrow(
      InvalidTenantId,
    );
  });

  it("refuses a tenant header sent twice", () => {
    expect(() => parseSubmit(TYPE, headers({ "x-tenant-id": ["a", "a"] }), enc(deposit), policy)).toThrow(
      /more than once/,
    );
  });

  it.each(["a.b", "*", ">", "a b", "x\r\ny", "_", "a".repeat(5000), "invalid@tenant!"])(
    "refuses the hostile tenant %j before anything is built",
    (bad) => {
      expect(() => parseSubmit(TYPE, headers({ "x-tenant-id": [bad] }), enc(deposit), policy)).toThrow(
        InvalidTenantId,
      );
    },
  );

  it.each(["a.b", "*", ">", "a b", "x\r\ny", "", "x".repeat(5000)])(
    "refuses the hostile aggregate id %j",
    (bad) => {
      expect(() => parseSubmit(TYPE, undefined, enc({ ...deposit, aggregate_id: bad }), policy)).toThrow(
        ValidationError,
      );
      expect(() => parseSubmit(TYPE, undefined, enc({ ...deposit, command_id: bad }), policy)).toThrow(
        ValidationError,
      );
      expect(() => parseGet(TYPE, undefined, enc({ aggregate_id: bad }), policy)).toThrow(ValidationError);
    },
  );

  it("lower-cases ids", () => {
    const c = parseSubmit(TYPE, undefined, enc({ ...deposit, aggregate_id: ID.toUpperCase() }), policy);
    expect(c.aggregate_id).toBe(ID);
  });

  it("refuses a body tenant that differs from the header with TenantAccessDenied", () => {
    expect(() =>
      parseSubmit(TYPE, headers({ "x-tenant-id": ["a"] }), enc({ ...deposit, tenant_id: "b" }), policy),
    ).toThrow(TenantAccessDenied);
    expect(
      parseSubmit(TYPE, headers({ "x-tenant-id": ["a"] }), enc({ ...deposit, tenant_id: "a" }), policy)
        .tenant_id,
    ).toBe("a");
  });

  it.each([
    ["not JSON", "{"],
    ["empty", ""],
    ["an array", "[]"],
    ["no payload", { invalid: true }],
    ["payload without type", { payload: { amount: 1 } }],
    ["payload type not a string", { payload: { type: 1 } }],
    ["payload not an object", { payload: "deposit" }],
    ["unknown key", { ...deposit, expected_verison: 1 }],
    ["negative expected_version", { ...deposit, expected_version: -1 }],
    ["metadata not an object", { ...deposit, metadata: [] }],
    ["aggregate_type of another type", { ...deposit, aggregate_type: "order" }],
    ["invalid UTF-8", new Uint8Array([0x7b, 0xff, 0x7d])],
  ])("refuses a malformed body: %s", (_what, body) => {
    expect(() => parseSubmit(TYPE, undefined, body instanceof Uint8Array ? body : enc(body), policy)).toThrow(
      ValidationError,
    );
  });

  it("refuses deep nesting in the payload", () => {
    const deep = `${'{"a":'.repeat(10_000)}1${"}".repeat(10_000)}`;
    expect(() =>
      parseSubmit(TYPE, undefined, enc(`{"payload":{"type":"x","deep":${deep}}}`), policy),
    ).toThrow(ValidationError);
    const deepArray = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    expect(() =>
      parseSubmit(TYPE, undefined, enc(`{"payload":{"type":"x"},"metadata":{"m":${deepArray}}}`), policy),
    ).toThrow(ValidationError);
  });

  it("keeps a __proto__ key as data, never as a prototype", () => {
    const c = parseSubmit(
      TYPE,
      undefined,
      enc('{"payload":{"type":"x","__proto__":{"polluted":1}}}'),
      policy,
    );
    expect(Object.getPrototypeOf(c.payload)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>)["polluted"]).toBeUndefined();
    expect(() =>
      parseSubmit(TYPE, undefined, enc('{"__proto__":{"polluted":1},"payload":{"type":"x"}}'), policy),
    ).toThrow(ValidationError);
  });

  it("carries a valid traceparent and drops an invalid one", () => {
    const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    expect(
      parseSubmit(TYPE, headers({ traceparent: [tp], tracestate: ["a=b"] }), enc(deposit), policy),
    ).toMatchObject({
      traceparent: tp,
      tracestate: "a=b",
    });
    expect(
      parseSubmit(TYPE, headers({ traceparent: ["garbage"] }), enc(deposit), policy).traceparent,
    ).toBeUndefined();
  });

  it("refuses a correlation id that cannot travel in a header", () => {
    expect(() => parseSubmit(TYPE, headers({ "x-correlation-id": ["a b"] }), enc(deposit), policy)).toThrow(
      ValidationError,
    );
    expect(
      parseSubmit(TYPE, headers({ "x-correlation-id": ["corr-1"] }), enc(deposit), policy).correlation_id,
    ).toBe("corr-1");
  });
});

describe("payload hash", () => {
  it("does not depend on key order but on every value", () => {
    expect(payloadHash({ type: "a", x: 1, y: [1, 2] })).toBe(payloadHash({ y: [1, 2], x: 1, type: "a" }));
    expect(payloadHash({ type: "a", x: 1 })).not.toBe(payloadHash({ type: "a", x: 2 }));
    expect(canonicalJson({ b: 1, a: { d: 1, c: 2 } })).toBe('{"a":{"c":2,"d":1},"b":1}');
  });
});

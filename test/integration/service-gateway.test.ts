/**
 * The seed's gateway tests (T10.1–T10.7) as NATS requests to the service started in-process on a
 * real nats-server: headers, tenants, body validation and the error replies of CONTRACT.md §2.
 */
import { randomUUID } from "node:crypto";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsServer } from "../../shared/nats-server/index.ts";
import { connectTest, startTestNats } from "../support/nats.ts";
import { request, startTestApp, type TestApp } from "../support/service.ts";
import { GET, SUBMIT, UUID_RE, expectError, expectOk, type GetBody } from "../support/service-replies.ts";

let server: NatsServer;
let nc: NatsConnection;
let app: TestApp;

beforeAll(async () => {
  server = await startTestNats();
  app = await startTestApp(server.url);
  nc = await connectTest(server);
});
afterAll(async () => {
  await nc?.close();
  await app?.stop();
  await server?.stop();
});

const deposit = (amount = 100) => ({ payload: { type: "deposit", amount } });

describe("tenants from the x-tenant-id header (T10.1–T10.4)", () => {
  it("accepts a valid command with x-tenant-id and replies with that tenant (T10.1, T10.2)", async () => {
    const aggregateId = randomUUID();
    const commandId = randomUUID();
    const reply = await request(
      nc,
      SUBMIT,
      { command_id: commandId, aggregate_id: aggregateId, ...deposit(100), metadata: { source: "t10" } },
      { "x-tenant-id": "acme-corp", "x-correlation-id": "corr-t10-1" },
    );
    const body = expectOk(reply);
    expect(body).toMatchObject({
      tenant_id: "acme-corp",
      aggregate_type: "bank-account",
      aggregate_id: aggregateId,
      command_id: commandId,
      version: 1,
      correlation_id: "corr-t10-1",
      duplicate: false,
    });
    expect(body.stream_seq).toBeGreaterThan(0);
    expect(body.events).toHaveLength(1);
    const event = body.events[0]!;
    expect(event).toMatchObject({
      tenant_id: "acme-corp",
      aggregate_id: aggregateId,
      aggregate_type: "bank-account",
      version: 1,
      event_type: "deposited",
      payload: { type: "deposited", amount: 100 },
      command_id: commandId,
      correlation_id: "corr-t10-1",
      metadata: { source: "t10" },
    });
    expect(event.event_id).toMatch(UUID_RE);
    expect(new Date(event.timestamp).toISOString()).toBe(event.timestamp);
  });

  it("uses the default tenant (empty) when x-tenant-id is absent or empty (T10.3)", async () => {
    for (const headers of [{}, { "x-tenant-id": "" }] as Array<Record<string, string>>) {
      const body = expectOk(await request(nc, SUBMIT, deposit(), headers));
      expect(body.tenant_id).toBe("");
      expect(body.events[0]?.tenant_id).toBe("");
      // No x-correlation-id sent: one is generated (UUID v7).
      expect(body.correlation_id).toMatch(UUID_RE);
      expect(body.correlation_id[14]).toBe("7");
    }
  });

  it("reads the header name case-insensitively", async () => {
    const body = expectOk(await request(nc, SUBMIT, deposit(), { "X-Tenant-Id": "acme-corp" }));
    expect(body.tenant_id).toBe("acme-corp");
  });

  const invalidTenants = ["invalid@tenant!", "a.b", "*", ">", "a b", "t".repeat(65), "_", "-abc", "a/b"];
  it.each(invalidTenants)("rejects x-tenant-id %j with 400 InvalidTenantId (T10.4)", async (tenant) => {
    const reply = await request(nc, SUBMIT, deposit(), { "x-tenant-id": tenant });
    expectError(reply, 400, "InvalidTenantId");
  });

  it("accepts a 64-character tenant id (the longest the rule allows)", async () => {
    const tenant = `t${"0".repeat(63)}`;
    const body = expectOk(await request(nc, SUBMIT, deposit(), { "x-tenant-id": tenant }));
    expect(body.tenant_id).toBe(tenant);
  });

  it("rejects x-tenant-id sent twice with 400, even with the same value or another spelling", async () => {
    const cases: Array<Record<string, string | string[]>> = [
      { "x-tenant-id": ["tenant-a", "tenant-b"] },
      { "x-tenant-id": ["tenant-a", "tenant-a"] },
      { "x-tenant-id": "tenant-a", "X-TENANT-ID": "tenant-a" },
    ];
    for (const headers of cases) {
      const reply = await request(nc, SUBMIT, deposit(), headers);
      expectError(reply, 400, "InvalidTenantId");
    }
  });

  it("rejects an invalid x-tenant-id on get as well", async () => {
    const reply = await request(nc, GET, { aggregate_id: randomUUID() }, { "x-tenant-id": "a.b" });
    expectError(reply, 400, "InvalidTenantId");
  });
});

describe("multi-tenancy required", () => {
  let requiredServer: NatsServer;
  let requiredApp: TestApp;
  let requiredNc: NatsConnection;

  // Its own server: a second service on the first server would share its queue group.
  beforeAll(async () => {
    requiredServer = await startTestNats();
    requiredApp = await startTestApp(requiredServer.url, { AGGREGATE_MULTI_TENANCY: "required" });
    requiredNc = await connectTest(requiredServer);
  });
  afterAll(async () => {
    await requiredNc?.close();
    await requiredApp?.stop();
    await requiredServer?.stop();
  });

  it("rejects a command without x-tenant-id (or with an empty one) with 400", async () => {
    expectError(await request(requiredNc, SUBMIT, deposit()), 400, "InvalidTenantId");
    expectError(await request(requiredNc, SUBMIT, deposit(), { "x-tenant-id": "" }), 400, "InvalidTenantId");
    expectError(await request(requiredNc, GET, { aggregate_id: randomUUID() }), 400, "InvalidTenantId");
  });

  it("accepts a command that names its tenant", async () => {
    const body = expectOk(await request(requiredNc, SUBMIT, deposit(), { "x-tenant-id": "tenant-a" }));
    expect(body.tenant_id).toBe("tenant-a");
  });
});

describe("malformed bodies (T10.5)", () => {
  const cases: Array<[string, unknown]> = [
    ["a body that is not JSON", "{not json"],
    ["an empty body", ""],
    ["a body that is not valid UTF-8", new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])],
    ['{"invalid": true}', { invalid: true }],
    ["a JSON array", [deposit()]],
    ["a JSON number", 42],
    ["JSON null", null],
    ["a body without payload", { command_id: randomUUID() }],
    ["a payload without type", { payload: { amount: 100 } }],
    ["a payload with a non-string type", { payload: { type: 7, amount: 100 } }],
    ["a payload with an empty type", { payload: { type: "", amount: 100 } }],
    ["a payload that is an array", { payload: [{ type: "deposit" }] }],
    ["a payload that is a string", { payload: "deposit" }],
    ["a payload that is null", { payload: null }],
    ["an unknown top-level key", { ...deposit(), expected_verison: 1 }],
    ["a command_id that is not a UUID", { ...deposit(), command_id: "not-a-uuid" }],
    ["a command_id that is a number", { ...deposit(), command_id: 12 }],
    ["an aggregate_id that is not a UUID", { ...deposit(), aggregate_id: "acc-1" }],
    ["a UUID without hyphens", { ...deposit(), aggregate_id: randomUUID().replaceAll("-", "") }],
    ["an aggregate_type that differs from the subject", { ...deposit(), aggregate_type: "order" }],
    ["an expected_version that is negative", { ...deposit(), expected_version: -1 }],
    ["an expected_version that is not an integer", { ...deposit(), expected_version: 1.5 }],
    ["metadata that is not an object", { ...deposit(), metadata: "x" }],
  ];
  it.each(cases)("rejects %s with 400 ValidationError", async (_name, body) => {
    const reply = await request(nc, SUBMIT, body, { "x-tenant-id": "tenant-a" });
    expectError(reply, 400, "ValidationError");
  });

  it("rejects a get without a valid aggregate_id with 400 ValidationError", async () => {
    expectError(await request(nc, GET, {}), 400, "ValidationError");
    expectError(await request(nc, GET, { aggregate_id: "x" }), 400, "ValidationError");
    expectError(await request(nc, GET, "nope"), 400, "ValidationError");
  });

  it("accepts aggregate_type when it equals the subject's type", async () => {
    const body = expectOk(await request(nc, SUBMIT, { ...deposit(), aggregate_type: "bank-account" }));
    expect(body.aggregate_type).toBe("bank-account");
  });
});

describe("tenant in the body (T10.7)", () => {
  it("refuses a body tenant_id that differs from x-tenant-id with 403 TenantAccessDenied", async () => {
    const aggregateId = randomUUID();
    expectOk(
      await request(nc, SUBMIT, { aggregate_id: aggregateId, ...deposit() }, { "x-tenant-id": "tenant-a" }),
    );
    const cross = await request(
      nc,
      SUBMIT,
      { aggregate_id: aggregateId, tenant_id: "tenant-b", ...deposit() },
      { "x-tenant-id": "tenant-a" },
    );
    expectError(cross, 403, "TenantAccessDenied");
    // Without a header the request is the default tenant's: naming another tenant is denied too.
    const noHeader = await request(nc, SUBMIT, {
      aggregate_id: aggregateId,
      tenant_id: "tenant-a",
      ...deposit(),
    });
    expectError(noHeader, 403, "TenantAccessDenied");
    const get = await request(
      nc,
      GET,
      { aggregate_id: aggregateId, tenant_id: "tenant-b" },
      { "x-tenant-id": "tenant-a" },
    );
    expectError(get, 403, "TenantAccessDenied");
    // Nothing was applied by the refused commands.
    const state = expectOk<GetBody>(
      await request(nc, GET, { aggregate_id: aggregateId }, { "x-tenant-id": "tenant-a" }),
    );
    expect(state.version).toBe(1);
  });

  it("accepts a body tenant_id equal to x-tenant-id", async () => {
    const body = expectOk(
      await request(nc, SUBMIT, { tenant_id: "tenant-a", ...deposit() }, { "x-tenant-id": "tenant-a" }),
    );
    expect(body.tenant_id).toBe("tenant-a");
  });
});

describe("outcomes of a command", () => {
  it("answers get of an unknown aggregate with 404 NotFound", async () => {
    const reply = await request(nc, GET, { aggregate_id: randomUUID() }, { "x-tenant-id": "tenant-a" });
    expectError(reply, 404, "NotFound");
  });

  it("answers get of a known aggregate with its state and version", async () => {
    const aggregateId = randomUUID();
    expectOk(
      await request(nc, SUBMIT, {
        aggregate_id: aggregateId,
        payload: { type: "open", initial_balance: 30 },
      }),
    );
    const body = expectOk<GetBody>(await request(nc, GET, { aggregate_id: aggregateId }));
    expect(body).toEqual({
      tenant_id: "",
      aggregate_type: "bank-account",
      aggregate_id: aggregateId,
      version: 1,
      state: { balance: 30, status: "open" },
    });
  });

  it("passes a decide rejection on as 422 DecideError with the program's message", async () => {
    const aggregateId = randomUUID();
    expectOk(
      await request(nc, SUBMIT, {
        aggregate_id: aggregateId,
        payload: { type: "open", initial_balance: 10 },
      }),
    );
    const reply = await request(nc, SUBMIT, {
      aggregate_id: aggregateId,
      payload: { type: "withdraw", amount: 11 },
    });
    expectError(reply, 422, "DecideError", "insufficient funds");
    expect(reply.errorHeader).toBe("insufficient funds");
    const state = expectOk<GetBody>(await request(nc, GET, { aggregate_id: aggregateId }));
    expect(state.version).toBe(1);
    expect(state.state["balance"]).toBe(10);
  });

  it("refuses a command whose expected_version differs with 409 VersionConflict", async () => {
    const aggregateId = randomUUID();
    expectOk(await request(nc, SUBMIT, { aggregate_id: aggregateId, expected_version: 0, ...deposit(5) }));
    const stale = await request(nc, SUBMIT, {
      aggregate_id: aggregateId,
      expected_version: 0,
      ...deposit(5),
    });
    expectError(stale, 409, "VersionConflict");
    const ahead = await request(nc, SUBMIT, {
      aggregate_id: aggregateId,
      expected_version: 7,
      ...deposit(5),
    });
    expectError(ahead, 409, "VersionConflict");
    const body = expectOk(
      await request(nc, SUBMIT, { aggregate_id: aggregateId, expected_version: 1, ...deposit(5) }),
    );
    expect(body.version).toBe(2);
  });

  it("refuses a command id reused with another payload with 409 CommandIdReused", async () => {
    const aggregateId = randomUUID();
    const commandId = randomUUID();
    expectOk(await request(nc, SUBMIT, { aggregate_id: aggregateId, command_id: commandId, ...deposit(5) }));
    const reused = await request(nc, SUBMIT, {
      aggregate_id: aggregateId,
      command_id: commandId,
      ...deposit(6),
    });
    expectError(reused, 409, "CommandIdReused");
    const state = expectOk<GetBody>(await request(nc, GET, { aggregate_id: aggregateId }));
    expect(state.state["balance"]).toBe(5);
  });

  it("treats the same payload with its keys in another order as a retry, not a reuse", async () => {
    const aggregateId = randomUUID();
    const commandId = randomUUID();
    const first = expectOk(
      await request(nc, SUBMIT, {
        aggregate_id: aggregateId,
        command_id: commandId,
        payload: { type: "deposit", amount: 3 },
      }),
    );
    const retry = expectOk(
      await request(nc, SUBMIT, {
        aggregate_id: aggregateId,
        command_id: commandId,
        payload: { amount: 3, type: "deposit" },
      }),
    );
    expect(retry.duplicate).toBe(true);
    expect(retry.events).toEqual(first.events);
  });

  it("uses the command id as the aggregate id when aggregate_id is absent", async () => {
    const commandId = randomUUID();
    const body = expectOk(await request(nc, SUBMIT, { command_id: commandId, ...deposit() }));
    expect(body.aggregate_id).toBe(commandId);
    expect(body.command_id).toBe(commandId);

    // Neither given: a generated command id (UUID v7) that is also the aggregate id.
    const generated = expectOk(await request(nc, SUBMIT, deposit()));
    expect(generated.command_id).toMatch(UUID_RE);
    expect(generated.command_id[14]).toBe("7");
    expect(generated.aggregate_id).toBe(generated.command_id);
    expect(generated.version).toBe(1);
  });

  it("lower-cases aggregate and command ids on input", async () => {
    const aggregateId = randomUUID();
    const commandId = randomUUID();
    const body = expectOk(
      await request(nc, SUBMIT, {
        aggregate_id: aggregateId.toUpperCase(),
        command_id: commandId.toUpperCase(),
        ...deposit(),
      }),
    );
    expect(body.aggregate_id).toBe(aggregateId);
    expect(body.command_id).toBe(commandId);
    expect(body.events[0]?.aggregate_id).toBe(aggregateId);

    // The same aggregate whatever the case used to name it.
    const second = expectOk(await request(nc, SUBMIT, { aggregate_id: aggregateId, ...deposit() }));
    expect(second.version).toBe(2);
    const state = expectOk<GetBody>(await request(nc, GET, { aggregate_id: aggregateId.toUpperCase() }));
    expect(state.aggregate_id).toBe(aggregateId);
    expect(state.version).toBe(2);

    // The upper-case spelling of the command id is the same command.
    const retry = expectOk(
      await request(nc, SUBMIT, {
        aggregate_id: aggregateId,
        command_id: commandId.toUpperCase(),
        ...deposit(),
      }),
    );
    expect(retry.duplicate).toBe(true);
    expect(retry.version).toBe(1);
  });
});

describe("health (T10.6)", () => {
  it("answers GET /health with 200 and a JSON status, and GET /ready with 200", async () => {
    const health = await fetch(`http://127.0.0.1:${app.httpPort}/health`);
    expect(health.status).toBe(200);
    const body = (await health.json()) as Record<string, unknown>;
    expect(body["status"]).toBe("ok");
    const ready = await fetch(`http://127.0.0.1:${app.httpPort}/ready`);
    expect(ready.status).toBe(200);
  });
});

import { describe, expect, it } from "vitest";
import { Unavailable } from "../../../shared/contract/index.ts";
import { createTenantGate } from "../../../shared/tenancy/index.ts";

describe("tenant gate", () => {
  it("counts tenants, aggregates and last activity", () => {
    let t = 1_000;
    const gate = createTenantGate(() => t);
    expect(gate.enter("a", "x")).toBeUndefined();
    gate.leave("a");
    t = 2_000;
    gate.enter("a", "y");
    gate.leave("a");
    gate.enter("a", "x");
    gate.leave("a");
    gate.enter("b", "x");
    expect(gate.tenants()).toEqual([
      expect.objectContaining({
        tenant_id: "a",
        aggregates_seen: 2,
        commands: 3,
        in_flight: 0,
        last_activity: new Date(2_000).toISOString(),
      }),
      expect.objectContaining({ tenant_id: "b", aggregates_seen: 1, in_flight: 1 }),
    ]);
  });

  it("refuses a draining tenant's new commands, waits for its in-flight ones, and undrains", async () => {
    const gate = createTenantGate();
    gate.enter("a", "1");
    gate.enter("a", "2");
    let drained = false;
    const drain = gate.drain("a", 5_000).then((r) => (drained = r));
    expect(gate.enter("a", "3")).toBeInstanceOf(Unavailable);
    expect(gate.enter("b", "3")).toBeUndefined();
    gate.leave("a");
    await Promise.resolve();
    expect(drained).toBe(false);
    gate.leave("a");
    await drain;
    expect(drained).toBe(true);
    expect(gate.undrain("a")).toBe(true);
    expect(gate.enter("a", "4")).toBeUndefined();
    expect(gate.undrain("a")).toBe(false);
  });

  it("reports a drain that did not finish within its timeout", async () => {
    const gate = createTenantGate();
    gate.enter("a", "1");
    expect(await gate.drain("a", 20)).toBe(false);
    expect(gate.isDraining("a")).toBe(true);
  });

  it("drains a tenant with nothing in flight at once", async () => {
    expect(await createTenantGate().drain("idle", 1)).toBe(true);
  });
});

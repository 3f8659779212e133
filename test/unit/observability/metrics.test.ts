import { describe, expect, it } from "vitest";
import {
  DecideError,
  ProgramError,
  TenantAccessDenied,
  type AggregateType,
  type AggregateId,
  type TenantId,
} from "../../../shared/contract/index.ts";
import { createMetrics } from "../../../shared/observability/index.ts";

const TYPE = "account" as AggregateType;
const ref = { tenant_id: "acme" as TenantId, aggregate_type: TYPE, aggregate_id: "x" as AggregateId };

/** A strict reading of the Prometheus text format: every sample line must parse. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("# HELP ") || line.startsWith("# TYPE ")) continue;
    const m =
      /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/.exec(
        line,
      );
    if (!m) throw new Error(`not a Prometheus sample line: ${JSON.stringify(line)}`);
    out.set(`${m[1]}${m[2] ?? ""}`, Number(m[3]));
  }
  return out;
}

describe("metrics", () => {
  it("counts commands by type, tenant and outcome, and exposes valid Prometheus text", async () => {
    const metrics = createMetrics({ tenantLabels: true, processMetrics: false });
    const base = { endpoint: "submit" as const, aggregate_type: TYPE, tenant_id: "acme", durationMs: 2 };
    metrics.recordOutcome({ ...base, outcome: "ok" });
    metrics.recordOutcome({ ...base, outcome: "ok" });
    metrics.recordOutcome({ ...base, outcome: "DecideError", error: new DecideError("no") });
    metrics.recordOutcome({ ...base, tenant_id: "", outcome: "duplicate" });
    metrics.recordOutcome({ ...base, outcome: "TenantAccessDenied", error: new TenantAccessDenied("x") });
    metrics.recordOutcome({
      ...base,
      outcome: "ProgramError",
      error: new ProgramError("t", { reason: "timeout" }),
    });
    metrics.observer.versionConflict!(ref, 1);
    metrics.observer.cacheHit!(ref);
    metrics.observer.rehydrated!(ref, 3, 12);
    const s = samples(await metrics.text());
    expect(s.get('aggregate_commands_total{aggregate_type="account",tenant_id="acme",outcome="ok"}')).toBe(2);
    expect(
      s.get('aggregate_commands_total{aggregate_type="account",tenant_id="acme",outcome="DecideError"}'),
    ).toBe(1);
    expect(
      s.get('aggregate_commands_total{aggregate_type="account",tenant_id="_",outcome="duplicate"}'),
    ).toBe(1);
    expect(s.get('aggregate_command_duration_seconds_count{aggregate_type="account"}')).toBe(6);
    expect(s.get('aggregate_version_conflicts_total{aggregate_type="account"}')).toBe(1);
    expect(
      s.get(
        'aggregate_tenant_errors_total{aggregate_type="account",tenant_id="acme",code="TenantAccessDenied"}',
      ),
    ).toBe(1);
    expect(s.get('aggregate_sandbox_failures_total{aggregate_type="account",reason="timeout"}')).toBe(1);
    expect(s.get('aggregate_rehydration_duration_seconds_count{aggregate_type="account"}')).toBe(1);
    expect(s.get('aggregate_cache_hits_total{aggregate_type="account"}')).toBe(1);
  });

  it("can leave the tenant out of the labels", async () => {
    const metrics = createMetrics({ tenantLabels: false, processMetrics: false });
    metrics.recordOutcome({
      endpoint: "submit",
      aggregate_type: TYPE,
      tenant_id: "acme",
      outcome: "ok",
      durationMs: 1,
    });
    metrics.recordOutcome({
      endpoint: "submit",
      aggregate_type: TYPE,
      tenant_id: "other",
      outcome: "ok",
      durationMs: 1,
    });
    const text = await metrics.text();
    expect(text).not.toContain("acme");
    expect(
      samples(text).get('aggregate_commands_total{aggregate_type="account",tenant_id="*",outcome="ok"}'),
    ).toBe(2);
  });

  it("reads gauges at scrape time", async () => {
    const metrics = createMetrics({ tenantLabels: true, processMetrics: false });
    let n = 3;
    metrics.setGaugeSources({ inFlight: () => n, cachedAggregates: () => 7 });
    expect(samples(await metrics.text()).get("aggregate_commands_in_flight")).toBe(3);
    n = 0;
    expect(samples(await metrics.text()).get("aggregate_commands_in_flight")).toBe(0);
    expect(samples(await metrics.text()).get("aggregate_cached_aggregates")).toBe(7);
  });
});

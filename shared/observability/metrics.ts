/**
 * Prometheus metrics (prom-client). Label sets are bounded: aggregate type, outcome (an error
 * code or ok/duplicate) and, unless turned off for many-tenant deployments, the tenant. Never an
 * aggregate id.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { AggregateRef, HandlerObserver } from "../aggregate/index.ts";
import type { RequestOutcome } from "../service/index.ts";

export interface MetricsOptions {
  /** Label commands by tenant; off for deployments with very many tenants. */
  readonly tenantLabels: boolean;
  /** Also export Node.js process metrics. */
  readonly processMetrics?: boolean;
}

export interface GaugeSources {
  inFlight(): number;
  cachedAggregates(): number;
}

/** The value of the tenant label when per-tenant labels are off. */
export const ALL_TENANTS = "*";

export interface Metrics {
  readonly registry: Registry;
  /** Feeds the command handler's events into the metrics. */
  readonly observer: HandlerObserver;
  /** Records one endpoint request. */
  recordOutcome(outcome: RequestOutcome): void;
  /** Records one sandbox call that failed, by reason (timeout, memory, ...). */
  recordProgramFailure(aggregateType: string, reason: string): void;
  /** Where the gauges read their values at scrape time. */
  setGaugeSources(sources: GaugeSources): void;
  /** Prometheus text exposition. */
  text(): Promise<string>;
  readonly contentType: string;
}

export function createMetrics(options: MetricsOptions): Metrics {
  const registry = new Registry();
  if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry });
  const tenant = (id: string | undefined) =>
    options.tenantLabels ? (id === "" ? "_" : (id ?? "invalid")) : ALL_TENANTS;

  const commands = new Counter({
    name: "aggregate_commands_total",
    help: "Commands handled, by aggregate type, tenant and outcome (ok, duplicate or an error code)",
    labelNames: ["aggregate_type", "tenant_id", "outcome"] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: "aggregate_command_duration_seconds",
    help: "Time from request to reply of a command",
    labelNames: ["aggregate_type"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const reads = new Counter({
    name: "aggregate_reads_total",
    help: "State reads (get), by aggregate type and outcome",
    labelNames: ["aggregate_type", "outcome"] as const,
    registers: [registry],
  });
  const conflicts = new Counter({
    name: "aggregate_version_conflicts_total",
    help: "Appends refused because another writer got there first (each is retried)",
    labelNames: ["aggregate_type"] as const,
    registers: [registry],
  });
  const rehydration = new Histogram({
    name: "aggregate_rehydration_duration_seconds",
    help: "Time to load an aggregate that was not in the cache (snapshot + events read; for a command the events are folded by its decide call)",
    labelNames: ["aggregate_type"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers: [registry],
  });
  const rehydratedEvents = new Counter({
    name: "aggregate_rehydrated_commits_total",
    help: "Commits replayed while loading aggregates",
    labelNames: ["aggregate_type"] as const,
    registers: [registry],
  });
  const tenantErrors = new Counter({
    name: "aggregate_tenant_errors_total",
    help: "Requests refused for tenant reasons (TenantAccessDenied, InvalidTenantId)",
    labelNames: ["aggregate_type", "tenant_id", "code"] as const,
    registers: [registry],
  });
  const cacheHits = new Counter({
    name: "aggregate_cache_hits_total",
    help: "Commands whose aggregate was in the worker's cache",
    labelNames: ["aggregate_type"] as const,
    registers: [registry],
  });
  const cacheMisses = new Counter({
    name: "aggregate_cache_misses_total",
    help: "Commands whose aggregate had to be loaded",
    labelNames: ["aggregate_type"] as const,
    registers: [registry],
  });
  const snapshots = new Counter({
    name: "aggregate_snapshots_total",
    help: "Snapshot writes, by result (written, failed)",
    labelNames: ["aggregate_type", "result"] as const,
    registers: [registry],
  });
  const programFailures = new Counter({
    name: "aggregate_sandbox_failures_total",
    help: "Program calls that failed with ProgramError, by reason",
    labelNames: ["aggregate_type", "reason"] as const,
    registers: [registry],
  });
  let sources: GaugeSources = { inFlight: () => 0, cachedAggregates: () => 0 };
  new Gauge({
    name: "aggregate_commands_in_flight",
    help: "Requests being handled by this worker",
    registers: [registry],
    collect() {
      this.set(sources.inFlight());
    },
  });
  new Gauge({
    name: "aggregate_cached_aggregates",
    help: "Aggregates held in this worker's cache",
    registers: [registry],
    collect() {
      this.set(sources.cachedAggregates());
    },
  });

  const type = (ref: AggregateRef) => ref.aggregate_type as string;

  return {
    registry,
    contentType: registry.contentType,
    observer: {
      cacheHit: (ref) => cacheHits.inc({ aggregate_type: type(ref) }),
      cacheMiss: (ref) => cacheMisses.inc({ aggregate_type: type(ref) }),
      versionConflict: (ref) => conflicts.inc({ aggregate_type: type(ref) }),
      rehydrated: (ref, commits, ms) => {
        rehydration.observe({ aggregate_type: type(ref) }, ms / 1000);
        rehydratedEvents.inc({ aggregate_type: type(ref) }, commits);
      },
      snapshotWritten: (ref) => snapshots.inc({ aggregate_type: type(ref), result: "written" }),
      snapshotFailed: (ref) => snapshots.inc({ aggregate_type: type(ref), result: "failed" }),
    } satisfies HandlerObserver,
    setGaugeSources(next) {
      sources = next;
    },
    recordOutcome(o) {
      const aggregateType = o.aggregate_type as string;
      if (o.endpoint === "submit") {
        commands.inc({ aggregate_type: aggregateType, tenant_id: tenant(o.tenant_id), outcome: o.outcome });
        duration.observe({ aggregate_type: aggregateType }, o.durationMs / 1000);
      } else {
        reads.inc({ aggregate_type: aggregateType, outcome: o.outcome });
      }
      if (o.outcome === "TenantAccessDenied" || o.outcome === "InvalidTenantId") {
        tenantErrors.inc({ aggregate_type: aggregateType, tenant_id: tenant(o.tenant_id), code: o.outcome });
      }
      if (o.error?.name === "ProgramError") {
        const reason = typeof o.error.fields["reason"] === "string" ? o.error.fields["reason"] : "other";
        programFailures.inc({ aggregate_type: aggregateType, reason });
      }
    },
    recordProgramFailure(aggregateType, reason) {
      programFailures.inc({ aggregate_type: aggregateType, reason });
    },
    text: () => registry.metrics(),
  };
}

/** Projection lag as Prometheus gauges, read from the projectors at scrape time. */
import { Gauge, type Registry } from "prom-client";
import type { ProjectorStatus } from "./projector.ts";

export function registerQueryMetrics(registry: Registry, status: () => readonly ProjectorStatus[]): void {
  new Gauge({
    name: "aggregate_projection_pending_commits",
    help: "Commits of the type in the stream not yet in the read model (as of the last delivery)",
    labelNames: ["aggregate_type"],
    registers: [registry],
    collect() {
      for (const s of status()) this.set({ aggregate_type: s.aggregate_type }, s.pending);
    },
  });
  new Gauge({
    name: "aggregate_projection_lag_seconds",
    help: "Time from a commit's append to its projection, for the last commit projected",
    labelNames: ["aggregate_type"],
    registers: [registry],
    collect() {
      for (const s of status()) this.set({ aggregate_type: s.aggregate_type }, s.lag_ms / 1000);
    },
  });
  new Gauge({
    name: "aggregate_projection_checkpoint",
    help: "Stream sequence of the last commit in the read model",
    labelNames: ["aggregate_type"],
    registers: [registry],
    collect() {
      for (const s of status()) this.set({ aggregate_type: s.aggregate_type }, s.checkpoint);
    },
  });
}

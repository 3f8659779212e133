import path from "node:path";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { composeSchemaErrors, constraintErrors, readComposeFile } from "./compose-schema.ts";
import {
  generatePlatformStack,
  POOLS_FILE,
  renderPlatformStack,
  STACK_FILE,
} from "../../../infra/swarm/generate.ts";
import { loadPlacementTable } from "../../../shared/placement/index.ts";

const ROOT = path.resolve(import.meta.dirname, "../../..");
const COMPOSE_FILE = path.join(ROOT, "infra/docker-compose.yml");

type Service = {
  environment?: Record<string, string>;
  stop_grace_period?: string;
  deploy?: {
    replicas?: number;
    placement?: { constraints?: string[] };
    update_config?: { order?: string; failure_action?: string };
  };
  healthcheck?: { test?: string[] };
  volumes?: string[];
  secrets?: string[];
  configs?: Array<{ source: string; target: string }>;
};
type Stack = { services: Record<string, Service>; volumes?: Record<string, unknown> };

function durationMs(text: string): number {
  const m = /^(\d+)(ms|s|m)$/.exec(text);
  if (!m) throw new Error(`unexpected duration ${text}`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as "ms" | "s" | "m"];
}

describe("compose schema check", () => {
  it("accepts the development compose file", () => {
    const doc = readComposeFile(COMPOSE_FILE);
    expect(composeSchemaErrors(doc)).toEqual([]);
    const services = (doc as Stack).services;
    expect(services["worker"]?.deploy?.replicas).toBe(2);
    expect(Object.keys(services)).toEqual(
      expect.arrayContaining(["nats", "worker", "prometheus", "grafana"]),
    );
  });

  it("accepts the generated Swarm stack (seed T14.1, without an engine)", () => {
    const doc = readComposeFile(STACK_FILE);
    expect(composeSchemaErrors(doc)).toEqual([]);
    expect(constraintErrors(doc)).toEqual([]);
  });

  it("rejects what Docker would reject: unknown keys, bad enums, bad durations", () => {
    const base = parse(readFileSync(STACK_FILE, "utf8")) as Stack;
    const worker = () =>
      structuredClone(base.services["worker-shared-a"]!) as Record<string, unknown> & Service;
    const variants: Array<[string, Service & Record<string, unknown>]> = [
      ["unknown key", { ...worker(), deploi: {} }],
      [
        "update order",
        { ...worker(), deploy: { ...worker().deploy, update_config: { order: "start-firs" } } },
      ],
      ["duration", { ...worker(), stop_grace_period: "15 seconds" }],
    ];
    for (const [what, service] of variants) {
      const doc = { ...base, services: { ...base.services, broken: service } };
      expect(composeSchemaErrors(doc), what).not.toEqual([]);
    }
  });

  it("catches node.labels.x=a, which the schema alone lets through", () => {
    const doc = parse(readFileSync(STACK_FILE, "utf8")) as Stack;
    doc.services["worker-big"]!.deploy!.placement!.constraints = ["node.labels.x=a"];
    expect(composeSchemaErrors(doc)).toEqual([]);
    expect(constraintErrors(doc)).toEqual([
      expect.stringMatching(/worker-big: .*node\.labels\.x=a.*use '=='/),
    ]);
  });
});

describe("Swarm stack generated from the pool definitions", () => {
  const table = loadPlacementTable(readFileSync(POOLS_FILE, "utf8"));

  it("is up to date with infra/swarm/pools.yaml", () => {
    expect(readFileSync(STACK_FILE, "utf8")).toBe(renderPlatformStack(readFileSync(POOLS_FILE, "utf8")));
  });

  it("has one worker service per pool, constrained to the pool's node labels", () => {
    const stack = generatePlatformStack(table) as Stack;
    const workers = Object.keys(stack.services).filter((s) => s.startsWith("worker-"));
    expect(workers.sort()).toEqual(
      Object.keys(table.pools)
        .map((p) => `worker-${p}`)
        .sort(),
    );
    for (const [pool, def] of Object.entries(table.pools)) {
      const svc = stack.services[`worker-${pool}`]!;
      expect(svc.environment?.["AGGREGATE_POOL"]).toBe(pool);
      // the fallback placement table is this stack's pools.yaml, mounted as a config
      expect(svc.configs).toEqual([
        { source: "placement_fallback", target: "/etc/aggregate/placement.yaml" },
      ]);
      expect(svc.environment?.["AGGREGATE_PLACEMENT_FILE"]).toBe("/etc/aggregate/placement.yaml");
      expect(svc.deploy?.replicas).toBe(def.replicas);
      for (const [k, v] of Object.entries(def.node_labels)) {
        expect(svc.deploy?.placement?.constraints).toContain(`node.labels.${k}==${v}`);
      }
    }
    expect(stack.services["worker-big"]?.deploy?.placement?.constraints).toContain("node.role==worker");
  });

  it("updates start-first with rollback, and stops slower than the drain deadline", () => {
    const stack = generatePlatformStack(table, { shutdownTimeoutMs: 25_000 }) as Stack;
    for (const [name, svc] of Object.entries(stack.services).filter(([n]) => n.startsWith("worker-"))) {
      expect(svc.deploy?.update_config, name).toMatchObject({
        order: "start-first",
        failure_action: "rollback",
      });
      const drain = Number(svc.environment?.["AGGREGATE_SHUTDOWN_TIMEOUT_MS"]);
      expect(drain).toBe(25_000);
      expect(durationMs(svc.stop_grace_period!)).toBeGreaterThan(drain);
      expect(svc.healthcheck?.test?.join(" ")).toContain("/health");
      expect(svc.secrets).toContain("nats_worker_password");
      expect(svc.environment?.["AGGREGATE_NATS_PASSWORD"]).toBeUndefined();
    }
  });

  it("runs three NATS members, each with its own volume and node", () => {
    const stack = generatePlatformStack(table) as Stack;
    const members = ["nats-1", "nats-2", "nats-3"].map((n) => stack.services[n]!);
    const volumes = members.map((m) => m.volumes![0]!.split(":")[0]!);
    expect(new Set(volumes).size).toBe(3);
    for (const v of volumes) expect(stack.volumes).toHaveProperty(v);
    expect(members.map((m) => m.deploy?.placement?.constraints?.[0])).toEqual([
      "node.labels.nats==1",
      "node.labels.nats==2",
      "node.labels.nats==3",
    ]);
  });
});

/**
 * Generates the Swarm stack `infra/swarm/platform.yml` from the pool definitions
 * (`infra/swarm/pools.yaml`, the placement-table format): a 3-node NATS cluster with its own
 * volumes, and one worker service per pool with placement constraints on node labels,
 * replicas, resources, healthcheck, start-first updates with rollback, a stop grace period
 * longer than the drain deadline, and the NATS password as a Docker secret.
 *
 *   node --import tsx infra/swarm/generate.ts            # write platform.yml
 *   node --import tsx infra/swarm/generate.ts --check    # exit 1 when platform.yml is stale
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { stringify } from "yaml";
import {
  generateConstraints,
  loadPlacementTable,
  type PlacementTable,
} from "../../shared/placement/index.ts";

export const POOLS_FILE = path.resolve(import.meta.dirname, "pools.yaml");
export const STACK_FILE = path.resolve(import.meta.dirname, "platform.yml");

export interface StackOptions {
  /** The worker image; `${AGGREGATE_IMAGE}` is left for `docker stack deploy` to fill in. */
  readonly image?: string;
  readonly natsImage?: string;
  /** The workers' drain deadline; the stop grace period is this plus a margin. */
  readonly shutdownTimeoutMs?: number;
}

const NATS_MEMBERS = ["nats-1", "nats-2", "nats-3"] as const;
/** Where the workers find the fallback placement table (this stack's pools.yaml, as a config). */
const PLACEMENT_FALLBACK_PATH = "/etc/aggregate/placement.yaml";
const NATS_PASSWORD_VARS = [
  "NATS_ADMIN_PASSWORD",
  "NATS_GATEWAY_PASSWORD",
  "NATS_WORKER_PASSWORD",
  "NATS_READER_ACME_PASSWORD",
  "NATS_READER_GLOBEX_PASSWORD",
  "NATS_SYS_PASSWORD",
] as const;
const HEALTHCHECK = [
  "CMD",
  "node",
  "-e",
  "fetch('http://127.0.0.1:'+(process.env.AGGREGATE_HTTP_PORT||9090)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))",
];

/** Seconds as a Go duration string, as compose files write them. */
function seconds(ms: number): string {
  return `${Math.ceil(ms / 1000)}s`;
}

/** The stack as a plain object (what `docker stack deploy` reads). */
export function generatePlatformStack(
  table: PlacementTable,
  options: StackOptions = {},
): Record<string, unknown> {
  const image = options.image ?? "${AGGREGATE_IMAGE:-aggregate:latest}";
  const natsImage = options.natsImage ?? "${NATS_IMAGE:-nats:2.12-alpine}";
  const shutdownMs = options.shutdownTimeoutMs ?? 10_000;
  const services: Record<string, unknown> = {};

  for (const [i, name] of NATS_MEMBERS.entries()) {
    services[name] = {
      image: natsImage,
      command: ["-c", "/etc/nats/cluster.conf", "--name", name, "--store_dir", "/data", "-m", "8222"],
      // bcrypt hashes (`nats server passwd`), not plain passwords: the spec is readable by any
      // swarm manager. Required at deploy time.
      environment: Object.fromEntries(
        NATS_PASSWORD_VARS.map((v) => [v, `\${${v}_BCRYPT:?set ${v}_BCRYPT to a bcrypt hash}`]),
      ),
      configs: [
        { source: "nats_cluster_conf", target: "/etc/nats/cluster.conf" },
        { source: "nats_accounts_conf", target: "/etc/nats/accounts.conf" },
      ],
      volumes: [`${name}-data:/data`],
      networks: ["aggregate"],
      healthcheck: {
        test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8222/healthz?js-enabled-only=true"],
        interval: "10s",
        timeout: "3s",
        retries: 3,
        start_period: "30s",
      },
      // Lame-duck mode (cluster.conf) lasts 30 s + 10 s grace; give it time before SIGKILL.
      stop_signal: "SIGUSR2",
      stop_grace_period: "60s",
      deploy: {
        replicas: 1,
        // A member and its volume stay on one node: label nodes nats=1, nats=2, nats=3.
        placement: { constraints: generateConstraints({ node_labels: { nats: String(i + 1) } }) },
        // Never two members down at once: stop-first, one at a time, roll back on failure.
        update_config: { parallelism: 1, order: "stop-first", failure_action: "rollback", monitor: "30s" },
        restart_policy: { condition: "any", delay: "5s" },
        resources: { limits: { cpus: "2.0", memory: "2G" } },
      },
    };
  }

  for (const [pool, def] of Object.entries(table.pools)) {
    services[`worker-${pool}`] = {
      image,
      environment: {
        AGGREGATE_NATS_URL: NATS_MEMBERS.map((m) => `nats://${m}:4222`).join(","),
        AGGREGATE_NATS_USER: "worker",
        AGGREGATE_NATS_PASSWORD_FILE: "/run/secrets/nats_worker_password",
        AGGREGATE_ADMIN_TOKEN_FILE: "/run/secrets/aggregate_admin_token",
        AGGREGATE_POOL: pool,
        // pools.yaml itself, read only when TENANT_PLACEMENT cannot be read at start
        AGGREGATE_PLACEMENT_FILE: PLACEMENT_FALLBACK_PATH,
        AGGREGATE_STREAM_REPLICAS: "3",
        AGGREGATE_SHUTDOWN_TIMEOUT_MS: String(shutdownMs),
        AGGREGATE_METRICS_TENANT_LABELS: "false",
        ...def.env,
      },
      secrets: ["nats_worker_password", "aggregate_admin_token"],
      configs: [{ source: "placement_fallback", target: PLACEMENT_FALLBACK_PATH }],
      networks: ["aggregate"],
      healthcheck: { test: HEALTHCHECK, interval: "10s", timeout: "3s", retries: 3, start_period: "20s" },
      // The drain (AGGREGATE_SHUTDOWN_TIMEOUT_MS) plus a margin for the NATS drain and exit.
      stop_grace_period: seconds(shutdownMs + 5_000),
      deploy: {
        replicas: def.replicas,
        placement: {
          constraints: generateConstraints(def),
          preferences: [{ spread: "node.id" }],
        },
        resources: {
          limits: { cpus: def.resources?.cpus ?? "1.0", memory: def.resources?.memory ?? "512M" },
        },
        // New task healthy before the old one stops; a failed update rolls back by itself.
        update_config: {
          parallelism: 1,
          delay: "5s",
          order: "start-first",
          failure_action: "rollback",
          monitor: "30s",
        },
        rollback_config: { parallelism: 1, order: "start-first" },
        restart_policy: { condition: "any", delay: "5s", window: "30s" },
        labels: { "aggregate.pool": pool },
      },
    };
  }

  return {
    version: "3.8",
    services,
    networks: { aggregate: { driver: "overlay", driver_opts: { encrypted: "true" } } },
    volumes: Object.fromEntries(NATS_MEMBERS.map((m) => [`${m}-data`, {}])),
    configs: {
      nats_cluster_conf: { file: "../../nats-config/cluster.conf" },
      nats_accounts_conf: { file: "../../nats-config/accounts.conf" },
      placement_fallback: { file: "./pools.yaml" },
    },
    secrets: {
      nats_worker_password: { external: true },
      aggregate_admin_token: { external: true },
    },
  };
}

const HEADER = `# GENERATED by infra/swarm/generate.ts from infra/swarm/pools.yaml: do not edit by hand.
# Deploy: docker stack deploy -c infra/swarm/platform.yml aggregate
`;

/** The stack file's text for the pool definitions in \`poolsText\`. */
export function renderPlatformStack(poolsText: string, options: StackOptions = {}): string {
  return HEADER + stringify(generatePlatformStack(loadPlacementTable(poolsText), options), { lineWidth: 0 });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const text = renderPlatformStack(readFileSync(POOLS_FILE, "utf8"));
  if (process.argv.includes("--check")) {
    if (readFileSync(STACK_FILE, "utf8") !== text) {
      process.stderr.write(`${STACK_FILE} is stale: run node --import tsx infra/swarm/generate.ts\n`);
      process.exit(1);
    }
  } else {
    writeFileSync(STACK_FILE, text);
    process.stdout.write(`wrote ${STACK_FILE}\n`);
  }
}

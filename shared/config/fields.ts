import type { ConfigField } from "./schema.ts";

/** One setting as an operator sees it: its environment variable, its YAML key and what it does. */
export interface ConfigVar {
  /** The environment variable, e.g. `AGGREGATE_HTTP_PORT`. */
  readonly env: string;
  /** The key in the YAML file, e.g. `http_port`. */
  readonly yaml: string;
  /** One line for the README table. */
  readonly description: string;
}

/**
 * Every setting, in the order the README lists them. The README's configuration table is this
 * table in prose; a test can compare the two.
 */
export const CONFIG_ENV_VARS = {
  natsUrls: {
    env: "AGGREGATE_NATS_URL",
    yaml: "nats_url",
    description: "NATS server(s), comma separated (a list in YAML); unset = start an embedded nats-server",
  },
  natsCreds: { env: "AGGREGATE_NATS_CREDS", yaml: "nats_creds", description: "NATS credentials file" },
  natsUser: { env: "AGGREGATE_NATS_USER", yaml: "nats_user", description: "NATS user (needs the password)" },
  natsPassword: {
    env: "AGGREGATE_NATS_PASSWORD",
    yaml: "nats_password",
    description: "NATS password (needs the user); never logged",
  },
  storagePath: {
    env: "AGGREGATE_STORAGE_PATH",
    yaml: "storage_path",
    description: "local data directory (default ./.data)",
  },
  functionsDir: {
    env: "AGGREGATE_FUNCTIONS_DIR",
    yaml: "functions_dir",
    description: "where aggregate programs live (default ./functions)",
  },
  snapshotThreshold: {
    env: "AGGREGATE_SNAPSHOT_THRESHOLD",
    yaml: "snapshot_threshold",
    description: "default events between snapshots, 1..1000000 (default 100)",
  },
  maxRetries: {
    env: "AGGREGATE_MAX_RETRIES",
    yaml: "max_retries",
    description: "retries on version conflict, 0..100 (default 10)",
  },
  multiTenancy: {
    env: "AGGREGATE_MULTI_TENANCY",
    yaml: "multi_tenancy",
    description: "`optional` (default) or `required`",
  },
  defaultTenant: {
    env: "AGGREGATE_DEFAULT_TENANT",
    yaml: "default_tenant",
    description: "tenant used when the header is absent (default empty)",
  },
  httpPort: {
    env: "AGGREGATE_HTTP_PORT",
    yaml: "http_port",
    description: "health/metrics/admin port (default 9090; 0 = any free port)",
  },
  adminToken: {
    env: "AGGREGATE_ADMIN_TOKEN",
    yaml: "admin_token",
    description:
      "bearer token for /admin/*, at least 16 characters (admin endpoints are off without it); never logged",
  },
  loggerSocket: {
    env: "AGGREGATE_LOGGER_SOCKET",
    yaml: "logger_socket",
    description: "optional unix socket to which JSON log lines are also written",
  },
  logLevel: {
    env: "AGGREGATE_LOG_LEVEL",
    yaml: "log_level",
    description: "pino level: fatal, error, warn, info (default), debug, trace or silent",
  },
  streamName: {
    env: "AGGREGATE_STREAM",
    yaml: "stream_name",
    description: "JetStream stream of the events (default AGGREGATE_EVENTS)",
  },
  bucketName: {
    env: "AGGREGATE_BUCKET",
    yaml: "bucket_name",
    description: "KV bucket of the snapshots (default AGGREGATE_SNAPSHOTS)",
  },
  streamReplicas: {
    env: "AGGREGATE_STREAM_REPLICAS",
    yaml: "stream_replicas",
    description: "replicas of the stream and bucket, 1..5 (default 1)",
  },
  duplicateWindowMs: {
    env: "AGGREGATE_DUPLICATE_WINDOW_MS",
    yaml: "duplicate_window_ms",
    description: "JetStream duplicate window in ms, 1000..86400000 (default 120000)",
  },
  cacheSize: {
    env: "AGGREGATE_CACHE_SIZE",
    yaml: "cache_size",
    description: "aggregates kept in memory per worker, 0..10000000 (default 100000)",
  },
  idempotencyWindow: {
    env: "AGGREGATE_IDEMPOTENCY_WINDOW",
    yaml: "idempotency_window",
    description: "recent command ids remembered per aggregate, 1..10000 (default 100)",
  },
  programTimeoutMs: {
    env: "AGGREGATE_PROGRAM_TIMEOUT_MS",
    yaml: "program_timeout_ms",
    description: "default time limit of one program call in ms, 1..60000 (default 100)",
  },
  programMemoryMb: {
    env: "AGGREGATE_PROGRAM_MEMORY_MB",
    yaml: "program_memory_mb",
    description: "default memory limit of a program sandbox in MB, 1..1024 (default 32)",
  },
  programMaxTimeoutMs: {
    env: "AGGREGATE_PROGRAM_MAX_TIMEOUT_MS",
    yaml: "program_max_timeout_ms",
    description: "the most a manifest's limits.timeout_ms may ask for, 1..60000 (default 10000)",
  },
  programMaxMemoryMb: {
    env: "AGGREGATE_PROGRAM_MAX_MEMORY_MB",
    yaml: "program_max_memory_mb",
    description: "the most a manifest's limits.memory_mb may ask for, 1..1024 (default 256)",
  },
  programPoisonAfter: {
    env: "AGGREGATE_PROGRAM_POISON_AFTER",
    yaml: "program_poison_after",
    description:
      "limit failures in a row after which an aggregate is refused for a cool-down, 0..1000 (default 3; 0 = never)",
  },
  programPoisonCooldownMs: {
    env: "AGGREGATE_PROGRAM_POISON_COOLDOWN_MS",
    yaml: "program_poison_cooldown_ms",
    description:
      "how long a poisoned aggregate is refused without running, in ms, 0..86400000 (default 60000)",
  },
  sandboxThreads: {
    env: "AGGREGATE_SANDBOX_THREADS",
    yaml: "sandbox_threads",
    description:
      "worker threads running the programs, 0..64 (default 2; 0 = in the main thread, no watchdog)",
  },
  sandboxGraceMs: {
    env: "AGGREGATE_SANDBOX_GRACE_MS",
    yaml: "sandbox_grace_ms",
    description:
      "how long past a call's deadline the watchdog waits before stopping its thread, 10..60000 (default 500)",
  },
  specs: {
    env: "AGGREGATE_SPECS",
    yaml: "specs",
    description: "decider specs at start-up: enforce (a failure stops start-up), warn (default) or off",
  },
  shutdownTimeoutMs: {
    env: "AGGREGATE_SHUTDOWN_TIMEOUT_MS",
    yaml: "shutdown_timeout_ms",
    description: "how long SIGTERM waits for in-flight commands in ms, 100..600000 (default 10000)",
  },
  requestTimeoutMs: {
    env: "AGGREGATE_REQUEST_TIMEOUT_MS",
    yaml: "request_timeout_ms",
    description: "budget of one JetStream API call in ms, 100..600000 (default 5000)",
  },
  query: {
    env: "AGGREGATE_QUERY",
    yaml: "query",
    description: "run the read model and the aggregate.<type>.query endpoints: true (default) or false",
  },
  queryUrl: {
    env: "AGGREGATE_QUERY_URL",
    yaml: "query_url",
    description:
      "PostgreSQL URL of a shared read model; unset = a SQLite file under the storage path; never logged",
  },
  queryCursorSecret: {
    env: "AGGREGATE_QUERY_CURSOR_SECRET",
    yaml: "query_cursor_secret",
    description:
      "key that signs query cursors, at least 16 characters (default: a random key kept in the read model); never logged",
  },
  queryWaitMs: {
    env: "AGGREGATE_QUERY_WAIT_MS",
    yaml: "query_wait_ms",
    description: "the longest a query waits for its min_stream_seq before 503, 0..60000 ms (default 5000)",
  },
  watchTtlMs: {
    env: "AGGREGATE_WATCH_TTL_MS",
    yaml: "watch_ttl_ms",
    description:
      "how long a watch lives without a renewal, 1000..3600000 ms (default 30000); abandoned watches are removed",
  },
  watchMaxPerTenant: {
    env: "AGGREGATE_WATCH_MAX_PER_TENANT",
    yaml: "watch_max_per_tenant",
    description: "watches one tenant may hold per aggregate type on one replica, 1..100000 (default 100)",
  },
  metricsTenantLabels: {
    env: "AGGREGATE_METRICS_TENANT_LABELS",
    yaml: "metrics_tenant_labels",
    description:
      "label command metrics by tenant: true (default) or false for deployments with very many tenants",
  },
  pool: {
    env: "AGGREGATE_POOL",
    yaml: "pool",
    description: "the worker pool this worker belongs to (default `default`); see Tenant pools",
  },
  placementBucket: {
    env: "AGGREGATE_PLACEMENT_BUCKET",
    yaml: "placement_bucket",
    description: "KV bucket of the tenant placement table (default TENANT_PLACEMENT)",
  },
  placementFile: {
    env: "AGGREGATE_PLACEMENT_FILE",
    yaml: "placement_file",
    description: "placement table file (JSON/YAML), used only when the bucket cannot be read at start",
  },
} as const satisfies Record<ConfigField, ConfigVar>;

/** The variable that names the YAML file, and the file read from the working directory without it. */
export const CONFIG_FILE = {
  env: "AGGREGATE_CONFIG",
  defaultName: "aggregate.yaml",
  description: "YAML configuration file (default ./aggregate.yaml if present; must exist when set)",
} as const;

/**
 * How a raw value is read before validation.
 * - `int`: env text must be decimal digits with an optional `-`; anything else stays text and fails validation.
 * - `list`: text is split on commas and trimmed; empty means unset.
 * - `optional`: empty means unset.
 * - `text`: taken as is (empty is a value, which validation may refuse).
 */
export type FieldKind = "bool" | "int" | "list" | "optional" | "text";

export const FIELD_KINDS = {
  natsUrls: "list",
  natsCreds: "optional",
  natsUser: "optional",
  natsPassword: "optional",
  storagePath: "text",
  functionsDir: "text",
  snapshotThreshold: "int",
  maxRetries: "int",
  multiTenancy: "text",
  defaultTenant: "text",
  httpPort: "int",
  adminToken: "optional",
  loggerSocket: "optional",
  logLevel: "text",
  streamName: "text",
  bucketName: "text",
  streamReplicas: "int",
  duplicateWindowMs: "int",
  cacheSize: "int",
  idempotencyWindow: "int",
  programTimeoutMs: "int",
  programMemoryMb: "int",
  programMaxTimeoutMs: "int",
  programMaxMemoryMb: "int",
  programPoisonAfter: "int",
  programPoisonCooldownMs: "int",
  sandboxThreads: "int",
  sandboxGraceMs: "int",
  specs: "text",
  shutdownTimeoutMs: "int",
  requestTimeoutMs: "int",
  query: "bool",
  queryUrl: "optional",
  queryCursorSecret: "optional",
  queryWaitMs: "int",
  watchTtlMs: "int",
  watchMaxPerTenant: "int",
  metricsTenantLabels: "bool",
  pool: "text",
  placementBucket: "text",
  placementFile: "optional",
} as const satisfies Record<ConfigField, FieldKind>;

/** Settings whose values are never printed, in errors or logs. */
export const SECRET_FIELDS: ReadonlySet<ConfigField> = new Set<ConfigField>([
  "natsPassword",
  "adminToken",
  "queryUrl",
  "queryCursorSecret",
]);

/** All settings, in table order. */
export const CONFIG_FIELDS = Object.keys(CONFIG_ENV_VARS) as ConfigField[];

import * as v from "valibot";
import { TenantId } from "../contract/index.ts";
import { DEFAULT_BUCKET, DEFAULT_PLACEMENT_BUCKET, DEFAULT_POOL, DEFAULT_STREAM } from "../naming/index.ts";
import { isNatsServerAddress, redactUrlCredentials } from "./nats-url.ts";

/**
 * The service's configuration: rules and defaults. Every message here is written to be printed
 * after `<key>=<value>: `, and none of them repeats the value, so that a secret can never leak
 * through a valibot default message (those include the received value).
 */

/** Pino log levels accepted by `AGGREGATE_LOG_LEVEL`. */
export const LogLevel = {
  Fatal: "fatal",
  Error: "error",
  Warn: "warn",
  Info: "info",
  Debug: "debug",
  Trace: "trace",
  Silent: "silent",
} as const;
export type LogLevel = (typeof LogLevel)[keyof typeof LogLevel];

/** Whether a request must carry `x-tenant-id` (CONTRACT.md §2). */
export const MultiTenancy = {
  /** A request without a tenant header is served as the default tenant. */
  Optional: "optional",
  /** A request without a tenant header is refused with 400. */
  Required: "required",
} as const;
export type MultiTenancy = (typeof MultiTenancy)[keyof typeof MultiTenancy];

const STREAM_NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** The placement table's pool name rule (shared/placement), repeated here to keep config free of it. */
const POOL_NAME_RE = /^[a-z][a-z0-9-]{0,30}[a-z0-9]$|^[a-z]$/;

// eslint-disable-next-line no-control-regex
const WHITESPACE_OR_CONTROL_RE = /[\s\u0000-\u001f\u007f]/;

const integer = (min: number, max: number) => {
  const message = `must be an integer from ${min} to ${max}`;
  return v.pipe(
    v.number(message),
    v.check((n) => Number.isSafeInteger(n) && n >= min && n <= max, message),
  );
};

const nonEmptyString = (what: string) =>
  v.pipe(v.string(`must be ${what}`), v.nonEmpty(`must be ${what}, not empty`));

const optionalString = (what: string) => v.optional(nonEmptyString(what));

const resourceName = (what: string) =>
  v.pipe(
    v.string(`must be a ${what} name`),
    v.regex(STREAM_NAME_RE, `must be a ${what} name matching ^[A-Za-z0-9_-]{1,64}$`),
  );

const ADDRESS_RULE = "a nats://, tls://, ws:// or wss:// URL or host:port";

const NatsUrls = v.pipe(
  v.array(
    v.string("every entry must be a string"),
    `must be a comma-separated string or a list, each ${ADDRESS_RULE}`,
  ),
  v.minLength(1, "must name at least one server"),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    for (const entry of dataset.value) {
      if (!isNatsServerAddress(entry)) {
        addIssue({ message: `entry ${JSON.stringify(redactUrlCredentials(entry))} is not ${ADDRESS_RULE}` });
      }
    }
  }),
  v.readonly(),
);

/** What start-up does with the decider specs of `functions/<type>/specs` (`AGGREGATE_SPECS`). */
export const SpecsMode = {
  /** Run them; any failure stops start-up. */
  Enforce: "enforce",
  /** Run them; failures are logged as warnings. */
  Warn: "warn",
  /** Do not run them. */
  Off: "off",
} as const;
export type SpecsMode = (typeof SpecsMode)[keyof typeof SpecsMode];

const LOG_LEVELS = Object.values(LogLevel);
const SPECS_MODES = Object.values(SpecsMode);
const MULTI_TENANCY = Object.values(MultiTenancy);

/**
 * The validated, frozen configuration. Built only by `loadConfig`: defaults < YAML file <
 * environment. Paths are absolute. Field docs name the environment variable; the YAML key is
 * its snake_case name (see `CONFIG_ENV_VARS`).
 */
export const Config = v.pipe(
  v.object({
    /**
     * `AGGREGATE_NATS_URL`: the NATS servers to connect to, each a `nats://`, `tls://`, `ws://` or
     * `wss://` URL or `host:port`. `undefined` means: start an embedded nats-server with JetStream
     * (data under `storagePath`) and use it.
     */
    natsUrls: v.undefinedable(NatsUrls),
    /** `AGGREGATE_NATS_CREDS`: a NATS credentials file (JWT + seed), as an absolute path. */
    natsCreds: optionalString("a file path"),
    /** `AGGREGATE_NATS_USER`: NATS user name; set together with `natsPassword` or not at all. */
    natsUser: optionalString("a user name"),
    /** `AGGREGATE_NATS_PASSWORD`: NATS password; a secret, never logged. */
    natsPassword: optionalString("a password"),
    /** `AGGREGATE_STORAGE_PATH`: local data directory (embedded server's store), absolute. Default `./.data`. */
    storagePath: v.optional(nonEmptyString("a directory path"), "./.data"),
    /** `AGGREGATE_FUNCTIONS_DIR`: directory holding one folder per aggregate type, absolute. Default `./functions`. */
    functionsDir: v.optional(nonEmptyString("a directory path"), "./functions"),
    /** `AGGREGATE_SNAPSHOT_THRESHOLD`: events between snapshots unless a manifest overrides it; 1..1_000_000, default 100. */
    snapshotThreshold: v.optional(integer(1, 1_000_000), 100),
    /** `AGGREGATE_MAX_RETRIES`: retries of a command after a version conflict; 0..100, default 10. */
    maxRetries: v.optional(integer(0, 100), 10),
    /** `AGGREGATE_MULTI_TENANCY`: `optional` (default) or `required` (requests without `x-tenant-id` get 400). */
    multiTenancy: v.optional(
      v.picklist(MULTI_TENANCY, `must be one of ${MULTI_TENANCY.join(", ")}`),
      MultiTenancy.Optional,
    ),
    /**
     * `AGGREGATE_DEFAULT_TENANT`: tenant used when the header is absent; `""` (default) is the
     * default tenant. Must satisfy the tenant id rule (so never `_`).
     */
    defaultTenant: v.optional(v.pipe(v.string("must be a tenant id"), TenantId), ""),
    /** `AGGREGATE_HTTP_PORT`: port of /health, /ready, /metrics and /admin; 0 = any free port; default 9090. */
    httpPort: v.optional(integer(0, 65_535), 9090),
    /**
     * `AGGREGATE_ADMIN_TOKEN`: bearer token for `/admin/*`, at least 16 characters, no whitespace;
     * admin endpoints are off when unset. A secret, never logged.
     */
    adminToken: v.optional(
      v.pipe(
        v.string("must be a string"),
        v.minLength(16, "must be at least 16 characters long"),
        v.check(
          (s) => !WHITESPACE_OR_CONTROL_RE.test(s),
          "must not contain whitespace or control characters",
        ),
      ),
    ),
    /** `AGGREGATE_LOGGER_SOCKET`: unix socket to which JSON log lines are also written; kept as given. */
    loggerSocket: optionalString("a socket path"),
    /** `AGGREGATE_LOG_LEVEL`: pino level; default `info`. */
    logLevel: v.optional(v.picklist(LOG_LEVELS, `must be one of ${LOG_LEVELS.join(", ")}`), LogLevel.Info),
    /** `AGGREGATE_STREAM`: JetStream stream holding the events; default `AGGREGATE_EVENTS`. */
    streamName: v.optional(resourceName("stream"), DEFAULT_STREAM),
    /** `AGGREGATE_BUCKET`: KV bucket holding the snapshots; default `AGGREGATE_SNAPSHOTS`. */
    bucketName: v.optional(resourceName("bucket"), DEFAULT_BUCKET),
    /** `AGGREGATE_STREAM_REPLICAS`: replicas of the stream and bucket when the service creates them; 1..5, default 1. */
    streamReplicas: v.optional(integer(1, 5), 1),
    /** `AGGREGATE_DUPLICATE_WINDOW_MS`: the stream's duplicate window; 1000..86_400_000 ms, default 120000. */
    duplicateWindowMs: v.optional(integer(1000, 86_400_000), 120_000),
    /** `AGGREGATE_CACHE_SIZE`: aggregates kept in memory per worker; 0 = no cache; 0..10_000_000, default 100_000. */
    cacheSize: v.optional(integer(0, 10_000_000), 100_000),
    /** `AGGREGATE_IDEMPOTENCY_WINDOW`: recent command ids remembered per aggregate; 1..10_000, default 100. */
    idempotencyWindow: v.optional(integer(1, 10_000), 100),
    /** `AGGREGATE_PROGRAM_TIMEOUT_MS`: default time limit of one decide/apply call; 1..60000 ms, default 100. */
    programTimeoutMs: v.optional(integer(1, 60_000), 100),
    /** `AGGREGATE_PROGRAM_MEMORY_MB`: default memory limit of one program sandbox; 1..1024 MB, default 32. */
    programMemoryMb: v.optional(integer(1, 1024), 32),
    /** `AGGREGATE_PROGRAM_MAX_TIMEOUT_MS`: the most a manifest's `limits.timeout_ms` may ask for; 1..60000 ms, default 10000. */
    programMaxTimeoutMs: v.optional(integer(1, 60_000), 10_000),
    /** `AGGREGATE_PROGRAM_MAX_MEMORY_MB`: the most a manifest's `limits.memory_mb` may ask for; 1..1024 MB, default 256. */
    programMaxMemoryMb: v.optional(integer(1, 1024), 256),
    /** `AGGREGATE_PROGRAM_POISON_AFTER`: limit failures in a row after which an aggregate is refused for a cool-down; 0 = never; 0..1000, default 3. */
    programPoisonAfter: v.optional(integer(0, 1000), 3),
    /** `AGGREGATE_PROGRAM_POISON_COOLDOWN_MS`: how long a poisoned aggregate is refused without running; 0..86_400_000 ms, default 60000. */
    programPoisonCooldownMs: v.optional(integer(0, 86_400_000), 60_000),
    /**
     * `AGGREGATE_SANDBOX_THREADS`: worker threads running the programs, each with a watchdog;
     * 0 = run them in the main thread (no watchdog); 0..64, default 2.
     */
    sandboxThreads: v.optional(integer(0, 64), 2),
    /** `AGGREGATE_SANDBOX_GRACE_MS`: how long past a call's deadline the watchdog waits before stopping its thread; 10..60000 ms, default 500. */
    sandboxGraceMs: v.optional(integer(10, 60_000), 500),
    /** `AGGREGATE_SPECS`: run the decider specs at start-up: `enforce` (a failure stops start-up), `warn` (default) or `off`. */
    specs: v.optional(v.picklist(SPECS_MODES, `must be one of ${SPECS_MODES.join(", ")}`), SpecsMode.Warn),
    /** `AGGREGATE_SHUTDOWN_TIMEOUT_MS`: how long SIGTERM waits for in-flight commands; 100..600000 ms, default 10000. */
    shutdownTimeoutMs: v.optional(integer(100, 600_000), 10_000),
    /** `AGGREGATE_REQUEST_TIMEOUT_MS`: budget of one JetStream API call; 100..600000 ms, default 5000. */
    requestTimeoutMs: v.optional(integer(100, 600_000), 5000),
    /** `AGGREGATE_QUERY`: run the read model and the `aggregate.<type>.query` endpoints; default true. */
    query: v.optional(v.boolean("must be true or false"), true),
    /** `AGGREGATE_QUERY_URL`: PostgreSQL URL of a shared read model; unset = a SQLite file under the storage path. A secret (may hold a password), never logged. */
    queryUrl: v.optional(
      v.pipe(
        v.string("must be a postgres:// URL"),
        v.regex(/^postgres(ql)?:\/\/\S+$/, "must be a postgres:// or postgresql:// URL"),
      ),
    ),
    /** `AGGREGATE_QUERY_CURSOR_SECRET`: key that signs query cursors, at least 16 characters; default: a random key kept in the read model. A secret. */
    queryCursorSecret: v.optional(
      v.pipe(v.string("must be a string"), v.minLength(16, "must be at least 16 characters long")),
    ),
    /** `AGGREGATE_QUERY_WAIT_MS`: the longest a query waits for its `min_stream_seq` before 503; 0..60000 ms, default 5000. */
    queryWaitMs: v.optional(integer(0, 60_000), 5000),
    /** `AGGREGATE_WATCH_TTL_MS`: how long a watch lives without a renewal (then it is removed and told `end`/`expired`); 1000..3600000 ms, default 30000. */
    watchTtlMs: v.optional(integer(1_000, 3_600_000), 30_000),
    /** `AGGREGATE_WATCH_MAX_PER_TENANT`: watches one tenant may hold per aggregate type on one replica (more: 503); 1..100000, default 100. */
    watchMaxPerTenant: v.optional(integer(1, 100_000), 100),
    /**
     * `AGGREGATE_POOL`: the worker pool this worker belongs to; it answers the tenants the
     * placement table gives this pool. Lower-case letters, digits and `-`, at most 32; not `all`.
     * Default `default`.
     */
    pool: v.optional(
      v.pipe(
        v.string("must be a pool name"),
        v.regex(
          POOL_NAME_RE,
          "must be a pool name matching ^[a-z][a-z0-9-]*[a-z0-9]$, at most 32 characters",
        ),
        v.check((p) => p !== "all", "must not be `all` (it addresses every pool in admin subjects)"),
      ),
      DEFAULT_POOL,
    ),
    /** `AGGREGATE_PLACEMENT_BUCKET`: KV bucket of the tenant placement table; default `TENANT_PLACEMENT`. */
    placementBucket: v.optional(resourceName("bucket"), DEFAULT_PLACEMENT_BUCKET),
    /**
     * `AGGREGATE_PLACEMENT_FILE`: a placement table (JSON or YAML, the `infra/swarm/pools.yaml`
     * format) used only when the placement bucket cannot be read at start; absolute path.
     */
    placementFile: optionalString("a file path"),
    /** `AGGREGATE_METRICS_TENANT_LABELS`: label command metrics by tenant; turn off with very many tenants; default true. */
    metricsTenantLabels: v.optional(v.boolean("must be true or false"), true),
  }),
  v.forward(
    v.partialCheck(
      [["programTimeoutMs"], ["programMaxTimeoutMs"]],
      (c) => c.programTimeoutMs <= c.programMaxTimeoutMs,
      "the default program timeout must not be above AGGREGATE_PROGRAM_MAX_TIMEOUT_MS",
    ),
    ["programTimeoutMs"],
  ),
  v.forward(
    v.partialCheck(
      [["programMemoryMb"], ["programMaxMemoryMb"]],
      (c) => c.programMemoryMb <= c.programMaxMemoryMb,
      "the default program memory must not be above AGGREGATE_PROGRAM_MAX_MEMORY_MB",
    ),
    ["programMemoryMb"],
  ),
  v.forward(
    v.partialCheck(
      [["natsUser"], ["natsPassword"]],
      (c) => c.natsUser === undefined || c.natsPassword !== undefined,
      "a NATS user needs a password as well",
    ),
    ["natsUser"],
  ),
  v.forward(
    v.partialCheck(
      [["natsUser"], ["natsPassword"]],
      (c) => c.natsPassword === undefined || c.natsUser !== undefined,
      "a NATS password needs a user as well",
    ),
    ["natsPassword"],
  ),
  v.readonly(),
);
export type Config = v.InferOutput<typeof Config>;

/** The name of one configuration setting. */
export type ConfigField = keyof Config;

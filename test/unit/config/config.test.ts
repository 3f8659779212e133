import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  CONFIG_ENV_VARS,
  ConfigError,
  describeConfig,
  loadConfig,
  type Config,
} from "../../../shared/config/index.ts";

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "aggregate-config-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function writeYaml(text: string, name = "aggregate.yaml", inDir = dir): string {
  const path = join(inDir, name);
  writeFileSync(path, text);
  return path;
}

/** The ConfigError `fn` throws; fails the test when it throws nothing or something else. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  expect.fail("expected a ConfigError, nothing was thrown");
}

function load(env: Record<string, string | undefined> = {}): Config {
  return loadConfig({ env, cwd: dir });
}

const DEFAULTS = {
  natsUrls: undefined,
  natsCreds: undefined,
  natsUser: undefined,
  natsPassword: undefined,
  snapshotThreshold: 100,
  maxRetries: 10,
  multiTenancy: "optional",
  defaultTenant: "",
  httpPort: 9090,
  adminToken: undefined,
  loggerSocket: undefined,
  logLevel: "info",
  streamName: "AGGREGATE_EVENTS",
  bucketName: "AGGREGATE_SNAPSHOTS",
  streamReplicas: 1,
  duplicateWindowMs: 120_000,
  cacheSize: 100_000,
  idempotencyWindow: 100,
  programTimeoutMs: 100,
  programMemoryMb: 32,
  programMaxTimeoutMs: 10_000,
  programMaxMemoryMb: 256,
  programPoisonAfter: 3,
  programPoisonCooldownMs: 60_000,
  sandboxThreads: 2,
  sandboxGraceMs: 500,
  specs: "warn",
  shutdownTimeoutMs: 10_000,
  requestTimeoutMs: 5000,
  query: true,
  queryUrl: undefined,
  queryCursorSecret: undefined,
  queryWaitMs: 5000,
  watchTtlMs: 30_000,
  watchMaxPerTenant: 100,
  metricsTenantLabels: true,
  pool: "default",
  placementBucket: "TENANT_PLACEMENT",
  placementFile: undefined,
};

describe("loadConfig", () => {
  it("returns the documented defaults when neither a file nor the environment sets anything", () => {
    expect(load()).toStrictEqual({
      ...DEFAULTS,
      storagePath: join(dir, ".data"),
      functionsDir: join(dir, "functions"),
    });
  });

  it("lets the environment override the YAML file and the YAML file override the defaults", () => {
    writeYaml(
      [
        "snapshot_threshold: 5",
        "http_port: 8080",
        "log_level: debug",
        "multi_tenancy: required",
        "nats_url: [nats://yaml:4222]",
      ].join("\n"),
    );
    const config = load({ AGGREGATE_HTTP_PORT: "7070", AGGREGATE_NATS_URL: "nats://env:4222" });
    expect(config.httpPort).toBe(7070);
    expect(config.natsUrls).toStrictEqual(["nats://env:4222"]);
    expect(config.snapshotThreshold).toBe(5);
    expect(config.logLevel).toBe("debug");
    expect(config.multiTenancy).toBe("required");
    expect(config.maxRetries).toBe(DEFAULTS.maxRetries);
  });

  it("reads the file named by AGGREGATE_CONFIG instead of ./aggregate.yaml", () => {
    writeYaml("http_port: 1111");
    const other = mkdtempSync(join(tmpdir(), "aggregate-config-other-"));
    try {
      const path = writeYaml("http_port: 2222", "custom.yaml", other);
      expect(load({ AGGREGATE_CONFIG: path }).httpPort).toBe(2222);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  it("splits comma-separated NATS URLs, trimming blanks, and accepts every address form", () => {
    const config = load({
      AGGREGATE_NATS_URL:
        "nats://a:4222, tls://b:4443 ,ws://c,wss://d:443/path,localhost:4222,[::1]:4222,10.0.0.1:4222",
    });
    expect(config.natsUrls).toStrictEqual([
      "nats://a:4222",
      "tls://b:4443",
      "ws://c",
      "wss://d:443/path",
      "localhost:4222",
      "[::1]:4222",
      "10.0.0.1:4222",
    ]);
  });

  it("accepts nats_url in YAML as a list or as a comma-separated string", () => {
    writeYaml("nats_url:\n  - nats://a:4222\n  - b:4222\n");
    expect(load().natsUrls).toStrictEqual(["nats://a:4222", "b:4222"]);
    writeYaml("nats_url: nats://a:4222,b:4222\n");
    expect(load().natsUrls).toStrictEqual(["nats://a:4222", "b:4222"]);
  });

  it("treats an empty variable as unset for optional settings, and literally for the others", () => {
    writeYaml("admin_token: yaml-token-0123456789\nnats_url: nats://yaml:4222\ndefault_tenant: acme\n");
    const config = load({ AGGREGATE_ADMIN_TOKEN: "", AGGREGATE_NATS_URL: "", AGGREGATE_DEFAULT_TENANT: "" });
    expect(config.adminToken).toBe("yaml-token-0123456789");
    expect(config.natsUrls).toStrictEqual(["nats://yaml:4222"]);
    expect(config.defaultTenant).toBe("");
    expect(load({ AGGREGATE_NATS_URL: "" }).natsUrls).toStrictEqual(["nats://yaml:4222"]);
  });

  it("resolves relative paths against the given cwd and keeps absolute ones", () => {
    const absolute = join(tmpdir(), "elsewhere", "fns");
    const config = load({
      AGGREGATE_STORAGE_PATH: "data/store",
      AGGREGATE_FUNCTIONS_DIR: absolute,
      AGGREGATE_NATS_CREDS: "secrets/user.creds",
    });
    expect(config.storagePath).toBe(join(dir, "data", "store"));
    expect(config.functionsDir).toBe(absolute);
    expect(config.natsCreds).toBe(join(dir, "secrets", "user.creds"));
  });

  it("resolves a relative AGGREGATE_CONFIG against the given cwd", () => {
    mkdirSync(join(dir, "conf"));
    writeYaml("max_retries: 3", "svc.yaml", join(dir, "conf"));
    expect(load({ AGGREGATE_CONFIG: "conf/svc.yaml" }).maxRetries).toBe(3);
  });

  it("returns a deeply frozen object: mutation throws in strict mode", () => {
    const config = load({ AGGREGATE_NATS_URL: "nats://a:4222" });
    expect(Object.isFrozen(config)).toBe(true);
    expect(() => {
      (config as { httpPort: number }).httpPort = 1;
    }).toThrow(TypeError);
    expect(() => {
      (config.natsUrls as string[]).push("nats://b:4222");
    }).toThrow(TypeError);
    expect(config.httpPort).toBe(9090);
    expect(config.natsUrls).toStrictEqual(["nats://a:4222"]);
  });

  it("accepts a NATS user together with its password", () => {
    const config = load({ AGGREGATE_NATS_USER: "svc", AGGREGATE_NATS_PASSWORD: "pw" });
    expect(config.natsUser).toBe("svc");
    expect(config.natsPassword).toBe("pw");
  });
});

describe("ConfigError", () => {
  // Each entry: the variable, a value it must refuse, and a word the reason must contain.
  const invalid: [string, string, string][] = [
    ["AGGREGATE_NATS_URL", "http://a:80", "nats://"],
    ["AGGREGATE_NATS_URL", "localhost", "host:port"],
    ["AGGREGATE_NATS_URL", "nats://a:4222,,b:4222", 'entry ""'],
    ["AGGREGATE_NATS_URL", "a:70000", "host:port"],
    ["AGGREGATE_STORAGE_PATH", "", "not empty"],
    ["AGGREGATE_FUNCTIONS_DIR", "", "not empty"],
    ["AGGREGATE_SNAPSHOT_THRESHOLD", "0", "1 to 1000000"],
    ["AGGREGATE_SNAPSHOT_THRESHOLD", "1000001", "1 to 1000000"],
    ["AGGREGATE_SNAPSHOT_THRESHOLD", "10abc", "integer"],
    ["AGGREGATE_SNAPSHOT_THRESHOLD", "1e3", "integer"],
    ["AGGREGATE_SNAPSHOT_THRESHOLD", "", "integer"],
    ["AGGREGATE_SNAPSHOT_THRESHOLD", " 10", "integer"],
    ["AGGREGATE_SNAPSHOT_THRESHOLD", "1.5", "integer"],
    ["AGGREGATE_MAX_RETRIES", "101", "0 to 100"],
    ["AGGREGATE_MAX_RETRIES", "-1", "0 to 100"],
    ["AGGREGATE_MULTI_TENANCY", "sometimes", "optional, required"],
    ["AGGREGATE_DEFAULT_TENANT", "_", "tenant id"],
    ["AGGREGATE_DEFAULT_TENANT", "a.b", "tenant id"],
    ["AGGREGATE_DEFAULT_TENANT", "-x", "tenant id"],
    ["AGGREGATE_HTTP_PORT", "65536", "0 to 65535"],
    ["AGGREGATE_HTTP_PORT", "0x10", "integer"],
    ["AGGREGATE_LOG_LEVEL", "verbose", "info"],
    ["AGGREGATE_LOG_LEVEL", "", "info"],
    ["AGGREGATE_STREAM", "a.b", "stream name"],
    ["AGGREGATE_STREAM", "x".repeat(65), "stream name"],
    ["AGGREGATE_BUCKET", "a b", "bucket name"],
    ["AGGREGATE_STREAM_REPLICAS", "0", "1 to 5"],
    ["AGGREGATE_STREAM_REPLICAS", "6", "1 to 5"],
    ["AGGREGATE_DUPLICATE_WINDOW_MS", "999", "1000 to"],
    ["AGGREGATE_CACHE_SIZE", "10000001", "0 to 10000000"],
    ["AGGREGATE_IDEMPOTENCY_WINDOW", "0", "1 to 10000"],
    ["AGGREGATE_IDEMPOTENCY_WINDOW", "10001", "1 to 10000"],
    ["AGGREGATE_PROGRAM_TIMEOUT_MS", "60001", "1 to 60000"],
    ["AGGREGATE_PROGRAM_MEMORY_MB", "1025", "1 to 1024"],
    ["AGGREGATE_SHUTDOWN_TIMEOUT_MS", "abc", "integer"],
    ["AGGREGATE_REQUEST_TIMEOUT_MS", "-5", "integer"],
  ];

  it.each(invalid)("reports %s=%j with the variable, the quoted value and the rule", (name, value, word) => {
    const error = configError(() => load({ [name]: value }));
    const line = `${name}=${JSON.stringify(value)}: `;
    expect(error.message).toContain(line);
    const problem = error.problems.find((p) => p.key === name);
    expect(problem?.value).toBe(JSON.stringify(value));
    expect(problem?.reason).toContain(word);
  });

  it("does not treat an empty optional variable as an error", () => {
    expect(load({ AGGREGATE_LOGGER_SOCKET: "" }).loggerSocket).toBeUndefined();
  });

  it("reports every problem at once, one per line", () => {
    const error = configError(() =>
      load({
        AGGREGATE_HTTP_PORT: "x",
        AGGREGATE_MAX_RETRIES: "1000",
        AGGREGATE_LOG_LEVEL: "loud",
        AGGREGATE_DEFAULT_TENANT: "a.b",
      }),
    );
    expect(error.problems.map((p) => p.key)).toStrictEqual([
      "AGGREGATE_MAX_RETRIES",
      "AGGREGATE_DEFAULT_TENANT",
      "AGGREGATE_HTTP_PORT",
      "AGGREGATE_LOG_LEVEL",
    ]);
    const lines = error.message.split("\n");
    expect(lines).toHaveLength(5);
    expect(lines[0]).toBe("invalid configuration (4 problems):");
    expect(lines[1]).toBe('  AGGREGATE_MAX_RETRIES="1000": must be an integer from 0 to 100');
  });

  it("names the YAML key and file for a value from the file, showing its YAML type", () => {
    const path = writeYaml('snapshot_threshold: "100"\nmulti_tenancy: 3\nnats_url: 42\n');
    const error = configError(() => load());
    expect(error.message).toContain(
      `${path}: snapshot_threshold="100": must be an integer from 1 to 1000000`,
    );
    expect(error.message).toContain(`${path}: multi_tenancy=3: must be one of optional, required`);
    expect(error.message).toContain(`${path}: nats_url=42: `);
    expect(error.problems).toHaveLength(3);
    expect(error.problems.every((p) => p.file === path)).toBe(true);
  });

  it("reports problems of the file and of the environment together", () => {
    const path = writeYaml("http_port: -1\n");
    const error = configError(() => load({ AGGREGATE_MAX_RETRIES: "x" }));
    expect(error.message).toContain(`${path}: http_port=-1: `);
    expect(error.message).toContain('AGGREGATE_MAX_RETRIES="x": ');
  });

  it("cuts a long value to 100 characters", () => {
    const value = "a".repeat(100) + "TAIL" + "b".repeat(400);
    const error = configError(() => load({ AGGREGATE_STREAM: value }));
    expect(error.message).toContain(`AGGREGATE_STREAM="${"a".repeat(100)}"…: `);
    expect(error.message).not.toContain("TAIL");
  });

  it("keeps a value with a newline on one line", () => {
    const error = configError(() => load({ AGGREGATE_STREAM: "a\nb" }));
    expect(error.message.split("\n")).toHaveLength(2);
    expect(error.message).toContain('AGGREGATE_STREAM="a\\nb": ');
  });

  it("never prints the NATS password or the admin token", () => {
    const password = "hunter2-very-secret";
    const token = "tok\tshort";
    const error = configError(() =>
      load({ AGGREGATE_NATS_PASSWORD: password, AGGREGATE_ADMIN_TOKEN: token }),
    );
    expect(error.message).toContain(
      "AGGREGATE_NATS_PASSWORD=<redacted>: a NATS password needs a user as well",
    );
    expect(error.message).toContain("AGGREGATE_ADMIN_TOKEN=<redacted>: must be at least 16 characters long");
    expect(error.message).not.toContain("hunter2");
    expect(error.message).not.toContain("tok");
    expect(JSON.stringify(error.problems)).not.toContain("hunter2");
  });

  it("never prints secrets from the YAML file, whatever their type", () => {
    const path = writeYaml("admin_token: 123456789\nnats_password: 987654321\n");
    const error = configError(() => load());
    expect(error.message).toContain(`${path}: admin_token=<redacted>: `);
    expect(error.message).toContain(`${path}: nats_password=<redacted>: `);
    expect(error.message).not.toMatch(/123456789|987654321/);
  });

  it("hides credentials inside NATS URLs", () => {
    const error = configError(() =>
      load({ AGGREGATE_NATS_URL: "nats://svc:s3cret@a:4222,nats://t0ken@b:x" }),
    );
    expect(error.message).not.toMatch(/s3cret|t0ken/);
    expect(error.message).toContain("nats://svc:<redacted>@a:4222,nats://<redacted>@b:x");
  });

  it("refuses a NATS user without a password", () => {
    const error = configError(() => load({ AGGREGATE_NATS_USER: "svc" }));
    expect(error.message).toContain('AGGREGATE_NATS_USER="svc": a NATS user needs a password as well');
    expect(error.problems).toHaveLength(1);
  });

  it("names an unknown YAML key and the file, and suggests the intended key", () => {
    const path = writeYaml("snapshot_treshold: 10\nhttpPort: 1\nwhatever: 1\n");
    const error = configError(() => load());
    expect(error.message).toContain(
      `${path}: snapshot_treshold: unknown key, did you mean "snapshot_threshold"?`,
    );
    expect(error.message).toContain(`${path}: httpPort: unknown key, did you mean "http_port"?`);
    expect(error.message.split("\n")).toContain(`  ${path}: whatever: unknown key`);
    expect(error.problems).toHaveLength(3);
  });

  it("refuses an AGGREGATE_CONFIG that points to a missing file", () => {
    const missing = join(dir, "missing.yaml");
    const error = configError(() => load({ AGGREGATE_CONFIG: missing }));
    expect(error.message).toContain(`AGGREGATE_CONFIG=${JSON.stringify(missing)}: file not found`);
  });

  it("reports a YAML syntax error or a document that is not a mapping with the file", () => {
    const path = writeYaml("http_port: [1\n");
    expect(configError(() => load()).message).toContain(`${path}: invalid YAML: `);
    writeYaml("- a\n- b\n");
    expect(configError(() => load()).message).toContain(`${path}: must be a mapping of settings`);
  });

  it("rejects _ and a.b as default tenant but accepts a valid id", () => {
    for (const tenant of ["_", "a.b"]) {
      const error = configError(() => load({ AGGREGATE_DEFAULT_TENANT: tenant }));
      expect(error.problems[0]?.key).toBe("AGGREGATE_DEFAULT_TENANT");
      expect(error.problems[0]?.value).toBe(JSON.stringify(tenant));
    }
    const path = writeYaml("default_tenant: _\n");
    expect(configError(() => load()).message).toContain(`${path}: default_tenant="_": tenant id`);
    expect(load({ AGGREGATE_DEFAULT_TENANT: "acme-1" }).defaultTenant).toBe("acme-1");
  });
});

describe("describeConfig", () => {
  it("shows every setting under its YAML key with secrets and URL credentials redacted", () => {
    const config = load({
      AGGREGATE_NATS_URL: "nats://svc:s3cret@a:4222,b:4222",
      AGGREGATE_NATS_USER: "svc",
      AGGREGATE_NATS_PASSWORD: "hunter2",
      AGGREGATE_ADMIN_TOKEN: "0123456789abcdef-token",
    });
    const described = describeConfig(config);
    expect(described).toMatchObject({
      nats_url: ["nats://svc:<redacted>@a:4222", "b:4222"],
      nats_user: "svc",
      nats_password: "<redacted>",
      admin_token: "<redacted>",
      http_port: 9090,
      logger_socket: null,
      storage_path: join(dir, ".data"),
    });
    expect(Object.keys(described).sort()).toStrictEqual(
      Object.values(CONFIG_ENV_VARS)
        .map((v) => v.yaml)
        .sort(),
    );
    expect(JSON.stringify(described)).not.toMatch(/hunter2|s3cret|0123456789abcdef/);
  });

  it("shows an unset NATS URL as null (embedded server)", () => {
    expect(describeConfig(load()).nats_url).toBeNull();
  });
});

describe("CONFIG_ENV_VARS", () => {
  it("names a distinct AGGREGATE_ variable and snake_case YAML key for every setting", () => {
    const entries = Object.entries(CONFIG_ENV_VARS);
    expect(Object.keys(CONFIG_ENV_VARS).sort()).toStrictEqual(Object.keys(load()).sort());
    expect(new Set(entries.map(([, v]) => v.env)).size).toBe(entries.length);
    for (const [, spec] of entries) {
      expect(spec.env).toMatch(/^AGGREGATE_[A-Z_]+$/);
      expect(spec.yaml).toMatch(/^[a-z]+(_[a-z]+)*$/);
      expect(spec.description).not.toContain("\n");
    }
  });

  // A valid, non-default value for every setting, as env text and as YAML.
  const samples: { [F in keyof Config]-?: [env: string, yaml: unknown, expected: unknown] } = {
    natsUrls: ["nats://a:1,b:2", ["nats://a:1", "b:2"], ["nats://a:1", "b:2"]],
    natsCreds: ["/c/u.creds", "/c/u.creds", "/c/u.creds"],
    natsUser: ["u", "u", "u"],
    natsPassword: ["p", "p", "p"],
    storagePath: ["/s", "/s", "/s"],
    functionsDir: ["/f", "/f", "/f"],
    snapshotThreshold: ["7", 7, 7],
    maxRetries: ["0", 0, 0],
    multiTenancy: ["required", "required", "required"],
    defaultTenant: ["acme", "acme", "acme"],
    httpPort: ["0", 0, 0],
    adminToken: ["0123456789abcdef", "0123456789abcdef", "0123456789abcdef"],
    loggerSocket: ["/run/l.sock", "/run/l.sock", "/run/l.sock"],
    logLevel: ["trace", "trace", "trace"],
    streamName: ["S-1", "S-1", "S-1"],
    bucketName: ["B_1", "B_1", "B_1"],
    streamReplicas: ["3", 3, 3],
    duplicateWindowMs: ["1000", 1000, 1000],
    cacheSize: ["0", 0, 0],
    idempotencyWindow: ["10000", 10000, 10000],
    programTimeoutMs: ["60000", 60000, 60000],
    programMemoryMb: ["1024", 1024, 1024],
    programMaxTimeoutMs: ["60000", 60000, 60000],
    programMaxMemoryMb: ["1024", 1024, 1024],
    programPoisonAfter: ["0", 0, 0],
    programPoisonCooldownMs: ["1000", 1000, 1000],
    sandboxThreads: ["0", 0, 0],
    sandboxGraceMs: ["10", 10, 10],
    specs: ["enforce", "enforce", "enforce"],
    shutdownTimeoutMs: ["100", 100, 100],
    requestTimeoutMs: ["600000", 600000, 600000],
    query: ["false", false, false],
    queryUrl: ["postgres://u@h/db", "postgres://u@h/db", "postgres://u@h/db"],
    queryCursorSecret: ["0123456789abcdef", "0123456789abcdef", "0123456789abcdef"],
    queryWaitMs: ["0", 0, 0],
    watchTtlMs: ["1000", 1000, 1000],
    watchMaxPerTenant: ["100000", 100000, 100000],
    metricsTenantLabels: ["false", false, false],
    pool: ["big-1", "big-1", "big-1"],
    placementBucket: ["P_1", "P_1", "P_1"],
    placementFile: ["/p/placement.json", "/p/placement.json", "/p/placement.json"],
  };
  const fields = Object.keys(samples) as (keyof Config)[];

  it("wires every variable to its own field", () => {
    const env = Object.fromEntries(fields.map((f) => [CONFIG_ENV_VARS[f].env, samples[f][0]]));
    const config = load(env);
    for (const f of fields) expect([f, config[f]]).toStrictEqual([f, samples[f][2]]);
  });

  it("wires every YAML key to its own field", () => {
    writeYaml(
      JSON.stringify(Object.fromEntries(fields.map((f) => [CONFIG_ENV_VARS[f].yaml, samples[f][1]]))),
    );
    const config = load();
    for (const f of fields) expect([f, config[f]]).toStrictEqual([f, samples[f][2]]);
  });
});

describe("program limits", () => {
  it("refuses a default program limit above its cap, naming both settings", () => {
    expect(() =>
      loadConfig({
        env: { AGGREGATE_PROGRAM_TIMEOUT_MS: "2000", AGGREGATE_PROGRAM_MAX_TIMEOUT_MS: "1000" },
        cwd: "/tmp",
      }),
    ).toThrow(/AGGREGATE_PROGRAM_TIMEOUT_MS=.*must not be above AGGREGATE_PROGRAM_MAX_TIMEOUT_MS/);
    expect(() => loadConfig({ env: { AGGREGATE_PROGRAM_MAX_MEMORY_MB: "16" }, cwd: "/tmp" })).toThrow(
      /AGGREGATE_PROGRAM_MEMORY_MB.*must not be above AGGREGATE_PROGRAM_MAX_MEMORY_MB/,
    );
  });
});

describe("boolean settings", () => {
  it("reads true/false/1/0 from the environment and refuses anything else", () => {
    expect(
      loadConfig({ env: { AGGREGATE_METRICS_TENANT_LABELS: "0" }, cwd: "/tmp" }).metricsTenantLabels,
    ).toBe(false);
    expect(
      loadConfig({ env: { AGGREGATE_METRICS_TENANT_LABELS: "true" }, cwd: "/tmp" }).metricsTenantLabels,
    ).toBe(true);
    expect(loadConfig({ env: {}, cwd: "/tmp" }).metricsTenantLabels).toBe(true);
    expect(() => loadConfig({ env: { AGGREGATE_METRICS_TENANT_LABELS: "yes" }, cwd: "/tmp" })).toThrow(
      /AGGREGATE_METRICS_TENANT_LABELS="yes": must be true or false/,
    );
  });
});

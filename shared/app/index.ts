/**
 * Wires the service: the only place that creates connections and singletons. Everything it
 * builds is handed to the modules that need it (STYLE.md "Dependencies passed in").
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect, credsAuthenticator } from "@nats-io/transport-node";
import { readFile } from "node:fs/promises";
import type { Logger as PinoLogger } from "pino";
import {
  createCommandHandler,
  type AggregateRef,
  type AggregateTypeRuntime,
  type CommandHandler,
} from "../aggregate/index.ts";
import { describeConfig, loadConfig, SpecsMode, type Config } from "../config/index.ts";
import { parseTenantId } from "../contract/index.ts";
import { createEventLog, ensureEventStream } from "../event-log/index.ts";
import { functionDefaults, loadFunctions, type FunctionDefinition } from "../functions/index.ts";
import { startOpsServer, type HttpReply, type OpsServer, type Route } from "../http/index.ts";
import { createMetrics, type Metrics } from "../observability/index.ts";
import {
  openPgStore,
  openSqliteStore,
  registerQueryMetrics,
  startQueryService,
  type QueryService,
} from "../query/index.ts";
import { createTenantGate, type TenantGate } from "../tenancy/index.ts";
import { startNatsServer, type NatsServer } from "../nats-server/index.ts";
import { compileProgramFile, createSandbox, type Sandbox } from "../sandbox/index.ts";
import { formatFailure, runAllSpecs, specCounts } from "../specs/index.ts";
import { startAggregateServices, type AggregateServices, type PoolRouting } from "../service/index.ts";
import { pooledUuidv7 } from "./uuid.ts";
import { createSnapshotStore, openSnapshotBucket } from "../snapshot-store/index.ts";
import { AdminError, startAdminService } from "../admin/index.ts";
import {
  answeringPool,
  decideOwnership,
  OwnershipReason,
  type OwnershipDecision,
} from "../placement/index.ts";
import {
  startPlacementSource,
  type PlacementSource,
  type PlacementStatus,
} from "../placement-store/index.ts";

export interface App extends AsyncDisposable {
  readonly natsUrl: string;
  readonly httpPort: number;
  readonly types: readonly string[];
  readonly handler: CommandHandler;
  readonly services: AggregateServices;
  readonly nc: NatsConnection;
  readonly metrics: Metrics;
  readonly gate: TenantGate;
  /** The worker pool (`AGGREGATE_POOL`). */
  readonly pool: string;
  /** The live placement table (KV, watched). */
  readonly placement: PlacementSource;
  /** Stops taking commands, finishes those in flight, drains NATS, stops what it started. Idempotent. */
  stop(): Promise<void>;
}

export interface StartOptions {
  readonly config: Config;
  readonly log: PinoLogger;
  /** Service version for `$SRV.INFO`. */
  readonly version: string;
  /** Re-reads the configuration for `POST /admin/reload`; the environment and ./aggregate.yaml by default. */
  readonly reloadConfig?: () => Config;
}

export async function startApp({
  config,
  log,
  version,
  reloadConfig = () => loadConfig(),
}: StartOptions): Promise<App> {
  const cleanups: Array<() => Promise<unknown>> = [];
  let phase: "starting" | "ready" | "stopping" = "starting";
  try {
    log.info({ config: describeConfig(config) }, "starting");

    // The operations port comes first, so that an orchestrator sees a live process that is
    // not yet ready (503) while start-up runs, instead of a refused connection.
    const metrics = createMetrics({ tenantLabels: config.metricsTenantLabels });
    const gate = createTenantGate();
    const connection = { connected: false };
    const view: {
      handler?: CommandHandler;
      query?: QueryService;
      storage?: ReturnType<typeof storageProbe>;
      placement?: PlacementSource;
      types: string[];
    } = { types: [] };
    let live = config;
    /** `POST /admin/reload` and `aggregate-admin.*.reload`: the settings that can change live, and the placement table. */
    const reload = async () => {
      const next = reloadConfig();
      const report = diffConfig(live, next);
      if (next.logLevel !== live.logLevel) log.level = next.logLevel;
      live = next;
      const placement = view.placement ? placementSummary(await view.placement.reload()) : undefined;
      return { ...report, ...(placement ? { placement } : {}) };
    };
    const ops: OpsServer = await startOpsServer(
      config.httpPort,
      {
        // Liveness: 200 while the process can serve at all, also through a short NATS reconnect,
        // so that a brief outage does not make Swarm restart every replica.
        "GET /health": () => ({
          status: phase === "stopping" ? 503 : 200,
          body: {
            status: phase === "ready" ? (connection.connected ? "ok" : "degraded") : phase,
            nats_connected: connection.connected,
            storage_ready: view.storage?.lastOk() ?? false,
            aggregates_cached: view.handler?.cachedAggregates ?? 0,
            types: view.types,
          },
        }),
        "GET /ready": async () => {
          const storageOk =
            connection.connected && view.storage !== undefined && (await view.storage.check());
          const ok = phase === "ready" && connection.connected && storageOk;
          return {
            status: ok ? 200 : 503,
            body: {
              status: ok ? "ready" : phase === "ready" ? "unavailable" : phase,
              nats_connected: connection.connected,
              storage_ready: storageOk,
              ...(view.query ? { projections: view.query.status() } : {}),
              types: view.types,
            },
          };
        },
        "GET /metrics": async () => ({
          status: 200,
          body: await metrics.text(),
          contentType: metrics.contentType,
        }),
        ...adminRoutes({
          token: config.adminToken,
          gate,
          drainTimeoutMs: config.shutdownTimeoutMs,
          pool: config.pool,
          placement: () => (view.placement ? placementSummary(view.placement.status()) : undefined),
          reload,
        }),
      },
      (err) => log.error({ err }, "http handler failed"),
    );
    cleanups.push(() => ops.close());
    log.info({ http_port: ops.port }, "http listening");

    let embedded: NatsServer | undefined;
    let servers = config.natsUrls;
    if (servers === undefined) {
      embedded = await startNatsServer({ storeDir: path.join(config.storagePath, "nats") });
      const server = embedded;
      cleanups.push(() => server.stop());
      servers = [embedded.url];
      log.info({ url: embedded.url, store: embedded.storeDir }, "embedded nats-server started");
    }

    const nc = await connect({
      servers: [...servers],
      name: `aggregate-${process.pid}`,
      noAsyncTraces: true,
      maxReconnectAttempts: -1,
      // Under an orchestrator NATS may come up after the workers: wait for it (not ready meanwhile).
      waitOnFirstConnect: true,
      ...(config.natsCreds
        ? { authenticator: credsAuthenticator(await readFile(config.natsCreds)) }
        : config.natsUser !== undefined
          ? { user: config.natsUser, pass: config.natsPassword }
          : {}),
    });
    cleanups.push(async () => {
      if (!nc.isClosed()) await nc.drain();
    });
    connection.connected = true;
    void watchStatus(nc, log, connection);

    await ensureEventStream(nc, config.streamName, {
      replicas: config.streamReplicas,
      duplicateWindowMs: config.duplicateWindowMs,
    });
    const kv = await openSnapshotBucket(nc, config.bucketName, { replicas: config.streamReplicas });

    // Tenant pools: the placement table, watched, decides which tenants this pool answers.
    // Decisions are cached per tenant until the table changes (they are on every request).
    const owned = new Map<string, OwnershipDecision>();
    const placementLog = log.child({ component: "placement" });
    const placement = await startPlacementSource({
      nc,
      bucket: config.placementBucket,
      replicas: config.streamReplicas,
      file: config.placementFile,
      log: placementLog,
      timeoutMs: config.requestTimeoutMs,
      onChange: (status) => {
        owned.clear();
        if (status.table && !Object.hasOwn(status.table.pools, config.pool)) {
          placementLog.warn(
            { pool: config.pool, pools: Object.keys(status.table.pools) },
            "this worker's pool is not in the placement table: it answers only requests forwarded to it",
          );
        }
      },
    });
    cleanups.push(() => placement.stop());
    view.placement = placement;
    const decision = (tenant: string): OwnershipDecision => {
      let known = owned.get(tenant);
      if (known === undefined) {
        known = decideOwnership(placement.table(), tenant, config.pool);
        if (owned.size >= 100_000) owned.clear();
        owned.set(tenant, known);
      }
      return known;
    };
    const routing: PoolRouting = {
      pool: config.pool,
      owns: (tenant) => decision(tenant).serve,
      paused: (tenant) => decision(tenant).reason === OwnershipReason.Paused,
      owner: (tenant) => {
        const table = placement.table();
        return table ? answeringPool(table, tenant) : config.pool;
      },
    };

    const sandbox: Sandbox = createSandbox({
      threads: config.sandboxThreads,
      graceMs: config.sandboxGraceMs,
      poisonAfter: config.programPoisonAfter,
      poisonCoolDownMs: config.programPoisonCooldownMs,
      log: log.child({ component: "sandbox" }),
    });
    cleanups.push(() => sandbox.close());
    const functions = await loadFunctions(config.functionsDir, functionDefaults(config), compileProgramFile);
    const types = new Map<string, AggregateTypeRuntime>();
    for (const fn of functions) {
      types.set(fn.type, {
        program: await sandbox.load(fn.source),
        initialState: fn.initialState,
        snapshotThreshold: fn.snapshotThreshold,
        compatibleApply: fn.manifest.compatible_apply,
      });
    }
    if (config.specs !== SpecsMode.Off) await checkSpecs(functions, types, config.specs, log);

    const uuidv7 = pooledUuidv7();
    const handler = createCommandHandler({
      eventLog: createEventLog({ nc, stream: config.streamName, timeoutMs: config.requestTimeoutMs }),
      snapshots: createSnapshotStore({ kv, log: log.child({ component: "snapshots" }) }),
      types,
      env: { uuidv7: () => uuidv7(), now: () => Date.now(), sleep: (ms) => sleep(ms), random: Math.random },
      log: log.child({ component: "handler" }),
      maxRetries: config.maxRetries,
      cacheSize: config.cacheSize,
      idempotencyWindow: config.idempotencyWindow,
      observer: metrics.observer,
    });

    const commandLog = log.child({ component: "command" });
    const services = await startAggregateServices({
      nc,
      handler,
      types: functions.map((fn) => typeInfo(fn)),
      policy: {
        multiTenancy: config.multiTenancy,
        defaultTenant: config.defaultTenant,
        newId: () => uuidv7(),
      },
      log: log.child({ component: "service" }),
      version,
      gate,
      routing,
      onOutcome: (o) => {
        metrics.recordOutcome(o);
        // One line per command is the default; skip building it when nobody would read it.
        if (!commandLog.isLevelEnabled(o.error && o.error.status >= 500 ? "error" : "info")) return;
        const line = {
          endpoint: o.endpoint,
          tenant_id: o.tenant_id,
          aggregate_type: o.aggregate_type,
          aggregate_id: o.aggregate_id,
          command_id: o.command_id,
          correlation_id: o.correlation_id,
          trace_id: o.traceparent?.slice(3, 35),
          version: o.version,
          outcome: o.outcome,
          duration_ms: Math.round(o.durationMs * 1000) / 1000,
        };
        if (o.error && o.error.status >= 500) commandLog.error({ ...line, err: o.error }, "command failed");
        else if (o.error) commandLog.info({ ...line, error: o.error.message }, "command refused");
        else commandLog.info(line, o.endpoint === "submit" ? "command handled" : "state read");
      },
    });
    metrics.setGaugeSources({
      inFlight: () => services.inFlight,
      cachedAggregates: () => handler.cachedAggregates,
    });
    cleanups.push(async () => {
      const finished = await services.stop(config.shutdownTimeoutMs);
      if (!finished)
        log.warn({ in_flight: services.inFlight }, "shutdown deadline passed with commands in flight");
      await handler.flush();
    });

    // The read model: a projector per type folding the event stream into a queryable store,
    // and the `aggregate.<type>.query` endpoints (joining the types' services).
    if (config.query) {
      const store = config.queryUrl
        ? await openPgStore({ url: config.queryUrl, log: log.child({ component: "query" }) })
        : openSqliteStore({ file: path.join(config.storagePath, "read-model.sqlite") });
      cleanups.push(() => store.close());
      const query = await startQueryService({
        nc,
        js: jetstream(nc, { timeout: config.requestTimeoutMs }),
        jsm: await jetstreamManager(nc, { timeout: config.requestTimeoutMs }),
        stream: config.streamName,
        store,
        types: functions.map((fn) => ({
          type: fn.type,
          program: types.get(fn.type)!.program,
          initialState: fn.initialState,
          queryFields: fn.manifest.query_fields,
          // Commits this worker made are folded already: take the state from its cache.
          knownState: (tenant: string, id: string, version: number, seq: number) =>
            handler.knownState(
              { tenant_id: tenant, aggregate_type: fn.type, aggregate_id: id } as AggregateRef,
              version,
              seq,
            ),
        })),
        policy: {
          multiTenancy: config.multiTenancy,
          defaultTenant: config.defaultTenant,
          newId: () => uuidv7(),
        },
        log: log.child({ component: "query" }),
        services: services.services,
        version,
        cursorSecret:
          config.queryCursorSecret === undefined ? undefined : Buffer.from(config.queryCursorSecret),
        maxWaitMs: config.queryWaitMs,
        watch: { ttlMs: config.watchTtlMs, maxPerTenant: config.watchMaxPerTenant },
      });
      cleanups.push(() => query.stop());
      registerQueryMetrics(metrics.registry, () => query.status());
      view.query = query;
    }

    // Admin over NATS: every replica answers (no queue group); off without an admin token.
    if (config.adminToken !== undefined) {
      const admin = await startAdminService({
        nc,
        pool: config.pool,
        version,
        token: config.adminToken,
        log: log.child({ component: "admin" }),
        handlers: {
          status: (body) => {
            const tenant = tenantOf(body, false);
            const status = placementSummary(placement.status());
            const tenants = gate.tenants();
            return {
              placement: status,
              in_flight: services.inFlight,
              draining: gate.draining(),
              ...(tenant === undefined
                ? { tenants }
                : {
                    tenant_id: tenant,
                    ownership: decideOwnership(placement.table(), tenant, config.pool),
                    tenant_in_flight: tenants.find((t) => t.tenant_id === tenant)?.in_flight ?? 0,
                  }),
            };
          },
          reload,
          drain: async (body) => {
            const tenant = tenantOf(body, true)!;
            const timeout = (body as { timeout_ms?: unknown }).timeout_ms;
            const ms =
              typeof timeout === "number" && Number.isInteger(timeout) && timeout >= 0 && timeout <= 600_000
                ? timeout
                : config.shutdownTimeoutMs;
            const drained = await gate.drain(tenant, ms);
            const inFlight = gate.tenants().find((t) => t.tenant_id === tenant)?.in_flight ?? 0;
            return { tenant_id: tenant, draining: true, drained, in_flight: inFlight };
          },
          undrain: (body) => {
            const tenant = tenantOf(body, true)!;
            return { tenant_id: tenant, draining: false, was_draining: gate.undrain(tenant) };
          },
        },
      });
      cleanups.push(() => admin.stop());
    }

    const storage = storageProbe(nc, config);
    view.storage = storage;
    view.handler = handler;
    view.types = functions.map((fn) => fn.type);

    // The server must have our subscriptions before anyone is told we are ready; otherwise a
    // client acting on the ready line can still meet "no responders".
    await nc.flush();
    phase = "ready";
    const natsUrl = servers.join(",");
    log.info(
      {
        types: functions.map((fn) => fn.type),
        nats_url: natsUrl,
        http_port: ops.port,
        embedded_nats: embedded !== undefined,
      },
      "ready",
    );

    let stopped: Promise<void> | undefined;
    const stop = () => {
      stopped ??= (async () => {
        phase = "stopping";
        await runCleanups(cleanups, log);
        log.info({}, "stopped");
      })();
      return stopped;
    };
    return {
      natsUrl,
      httpPort: ops.port,
      types: functions.map((fn) => fn.type),
      handler,
      services,
      nc,
      metrics,
      gate,
      pool: config.pool,
      placement,
      stop,
      [Symbol.asyncDispose]: stop,
    };
  } catch (err) {
    await runCleanups(cleanups, log);
    throw err;
  }
}

/**
 * Runs every type's decider specs (functions/<type>/specs) in the sandbox just loaded. With
 * `enforce` a failing (or unreadable) spec stops start-up, naming it; with `warn` each failure
 * is logged with its diff and the service starts.
 */
async function checkSpecs(
  functions: readonly FunctionDefinition[],
  types: ReadonlyMap<string, AggregateTypeRuntime>,
  mode: SpecsMode,
  log: PinoLogger,
): Promise<void> {
  const results = await runAllSpecs(
    functions.map((fn) => ({
      type: fn.type,
      dir: fn.dir,
      initialState: fn.initialState,
      program: types.get(fn.type)!.program,
    })),
  );
  const { passed, failed } = specCounts(results);
  const problems: string[] = [];
  for (const type of results) {
    if (type.loadError !== undefined) {
      problems.push(`${type.type}: ${type.loadError}`);
      log.warn({ aggregate_type: type.type, error: type.loadError }, "decider specs cannot be read");
    }
    for (const result of type.results.filter((r) => !r.passed)) {
      problems.push(`${type.type}: ${result.file} #${result.index} "${result.name}"`);
      log.warn(
        {
          aggregate_type: type.type,
          spec: result.name,
          file: result.file,
          index: result.index,
          diff: formatFailure(result),
        },
        "decider spec failed",
      );
    }
  }
  log.info({ passed, failed, mode }, "decider specs run");
  if (failed > 0 && mode === SpecsMode.Enforce) {
    throw new Error(`decider specs failed (AGGREGATE_SPECS=enforce): ${problems.join("; ")}`);
  }
}

function typeInfo(fn: FunctionDefinition) {
  return {
    type: fn.type,
    description: fn.manifest.description,
    metadata: {
      program: fn.source.decide.hash.slice(0, 12),
      snapshot_threshold: String(fn.snapshotThreshold),
    },
  };
}

/** Cleanups run newest first: services stop before the connection drains, before the server stops. */
async function runCleanups(cleanups: Array<() => Promise<unknown>>, log: PinoLogger): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) {
    try {
      await cleanup();
    } catch (err) {
      log.warn({ err }, "cleanup step failed");
    }
  }
}

async function watchStatus(
  nc: NatsConnection,
  log: PinoLogger,
  connection: { connected: boolean },
): Promise<void> {
  for await (const s of nc.status()) {
    if (s.type === "disconnect") connection.connected = false;
    if (s.type === "reconnect") connection.connected = true;
    if (s.type === "disconnect" || s.type === "reconnect" || s.type === "error") {
      log.warn(
        { nats_status: s.type, server: "server" in s ? s.server : undefined },
        "nats connection status",
      );
    }
  }
}

/** Whether the stream and the bucket answer; cached briefly so probes do not hammer JetStream. */
function storageProbe(nc: NatsConnection, config: Config) {
  let last = { at: 0, ok: true };
  return {
    lastOk: () => last.ok,
    async check(): Promise<boolean> {
      if (Date.now() - last.at < 2_000) return last.ok;
      let ok = true;
      try {
        const jsm = await jetstreamManager(nc, { timeout: 2_000, checkAPI: false });
        await jsm.streams.info(config.streamName);
        await jsm.streams.info(`KV_${config.bucketName}`);
      } catch {
        ok = false;
      }
      last = { at: Date.now(), ok };
      return ok;
    },
  };
}

/** The tenant id of an admin request body; undefined when absent and not required. */
function tenantOf(body: unknown, required: boolean): string | undefined {
  const tenant = (body as { tenant_id?: unknown } | null)?.tenant_id;
  if (tenant === undefined && !required) return undefined;
  if (typeof tenant !== "string" || parseTenantId(tenant) === undefined) {
    throw new AdminError(
      400,
      "InvalidTenantId",
      'tenant_id must be a valid tenant id ("" for the default tenant)',
    );
  }
  return tenant;
}

/** The placement status without the whole table (which can hold many tenants). */
function placementSummary(status: PlacementStatus) {
  return {
    origin: status.origin,
    revision: status.revision,
    updates: status.updates,
    ignored: status.ignored,
    pools: status.table ? Object.keys(status.table.pools) : [],
    default_pools: status.table?.default_pools ?? [],
    tenants_placed: status.table ? Object.keys(status.table.tenants).length : 0,
  };
}

interface AdminOptions {
  readonly token: string | undefined;
  readonly gate: TenantGate;
  readonly drainTimeoutMs: number;
  readonly pool: string;
  readonly placement: () => unknown;
  readonly reload: () => Promise<unknown>;
}

/** `/admin/*`: only with `Authorization: Bearer <AGGREGATE_ADMIN_TOKEN>`; without a token configured, never. */
function adminRoutes(options: AdminOptions): Record<string, Route> {
  const expected = options.token === undefined ? undefined : digest(options.token);
  const authorized = (req: IncomingMessage): boolean => {
    if (!expected) return false;
    const header = req.headers.authorization ?? "";
    const match = /^Bearer (.+)$/.exec(header);
    // Comparing fixed-length digests keeps the comparison constant-time whatever the input length.
    return match !== null && timingSafeEqual(digest(match[1]!), expected);
  };
  const guard =
    (route: (body: string) => Promise<HttpReply> | HttpReply): Route =>
    (req, body) =>
      authorized(req)
        ? route(body)
        : {
            status: 401,
            body: {
              error: {
                code: "Unauthorized",
                message: expected
                  ? "a valid bearer token is required"
                  : "admin endpoints are off: AGGREGATE_ADMIN_TOKEN is not set",
              },
            },
          };
  const tenantFrom = (body: string): { tenant: string; timeoutMs?: number } | HttpReply => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return { status: 400, body: { error: { code: "ValidationError", message: "the body must be JSON" } } };
    }
    const tenant = (parsed as { tenant_id?: unknown } | null)?.tenant_id;
    const timeout = (parsed as { timeout_ms?: unknown }).timeout_ms;
    if (typeof tenant !== "string" || parseTenantId(tenant) === undefined) {
      return {
        status: 400,
        body: {
          error: {
            code: "InvalidTenantId",
            message: 'tenant_id must be a valid tenant id ("" for the default tenant)',
          },
        },
      };
    }
    if (
      timeout !== undefined &&
      (typeof timeout !== "number" || !Number.isInteger(timeout) || timeout < 0 || timeout > 600_000)
    ) {
      return {
        status: 400,
        body: { error: { code: "ValidationError", message: "timeout_ms must be an integer 0..600000" } },
      };
    }
    return timeout === undefined ? { tenant } : { tenant, timeoutMs: timeout };
  };
  return {
    "GET /admin/tenants": guard(() => ({
      status: 200,
      body: {
        tenants: options.gate.tenants(),
        draining: options.gate.draining(),
        pool: options.pool,
        placement: options.placement() ?? null,
      },
    })),
    "POST /admin/drain": guard(async (body) => {
      const r = tenantFrom(body);
      if ("status" in r) return r;
      const drained = await options.gate.drain(r.tenant, r.timeoutMs ?? options.drainTimeoutMs);
      const inFlight = options.gate.tenants().find((t) => t.tenant_id === r.tenant)?.in_flight ?? 0;
      return {
        status: drained ? 200 : 504,
        body: { tenant_id: r.tenant, draining: true, drained, in_flight: inFlight },
      };
    }),
    "POST /admin/undrain": guard((body) => {
      const r = tenantFrom(body);
      if ("status" in r) return r;
      return {
        status: 200,
        body: { tenant_id: r.tenant, draining: false, was_draining: options.gate.undrain(r.tenant) },
      };
    }),
    "POST /admin/reload": guard(async () => {
      try {
        return { status: 200, body: (await options.reload()) as object };
      } catch (err) {
        return {
          status: 400,
          body: { error: { code: "ConfigError", message: err instanceof Error ? err.message : String(err) } },
        };
      }
    }),
  };
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

/** Settings `POST /admin/reload` applies without a restart. */
const LIVE_SETTINGS = new Set(["log_level"]);

function diffConfig(before: Config, after: Config) {
  const a = describeConfig(before);
  const b = describeConfig(after);
  const changed: Record<string, { from: unknown; to: unknown }> = {};
  for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (JSON.stringify(a[key]) !== JSON.stringify(b[key])) changed[key] = { from: a[key], to: b[key] };
  }
  const keys = Object.keys(changed);
  return {
    changed,
    applied: keys.filter((k) => LIVE_SETTINGS.has(k)),
    requires_restart: keys.filter((k) => !LIVE_SETTINGS.has(k)),
  };
}

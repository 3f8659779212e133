/**
 * One NATS micro service per aggregate type (`aggregate-<type>`, CONTRACT.md §2), so that
 * `nats micro ls/info/stats` and any `$SRV.PING` client see it. Every endpoint handler goes
 * through `serve`, the one async-safe wrapper: @nats-io/services only catches synchronous
 * throws, so an async handler that rejects would otherwise leave the caller to time out.
 */
import { headers as natsHeaders, Match, type MsgHdrs, type NatsConnection } from "@nats-io/nats-core";
import { Svcm, type Service, type ServiceMsg } from "@nats-io/services";
import {
  StreamError,
  Unavailable,
  headerSafe,
  isAggregateError,
  type AggregateError,
  type AggregateType,
  type ErrorCode,
  type TenantId,
} from "../contract/index.ts";
import type { CommandHandler, Logger } from "../aggregate/index.ts";
import {
  endpointSubject,
  ForwardedHeader,
  poolEndpointSubject,
  poolForwardSubject,
  poolQueueGroup,
  serviceName,
} from "../naming/index.ts";
import { parseGet, parseSubmit, resolveTenant, type RequestHeaders, type RequestPolicy } from "./request.ts";

export interface AggregateTypeInfo {
  readonly type: AggregateType;
  readonly description?: string;
  /** Shown in `$SRV.INFO` (string values only). */
  readonly metadata?: Record<string, string>;
}

/** What happened to one request, for logs and metrics. */
export interface RequestOutcome {
  readonly endpoint: "submit" | "get";
  readonly aggregate_type: AggregateType;
  readonly tenant_id?: string;
  readonly aggregate_id?: string;
  readonly command_id?: string;
  readonly correlation_id?: string;
  readonly traceparent?: string;
  readonly version?: number;
  /** `ok`, `duplicate`, or the error code. */
  readonly outcome: "ok" | "duplicate" | ErrorCode;
  readonly durationMs: number;
  readonly error?: AggregateError;
}

/**
 * Tenant pools: which tenants this worker's pool answers. Every pool subscribes the shared
 * subjects in its own queue group (each pool receives each request once); a worker drops,
 * silently, a request whose tenant another pool owns, so exactly one pool answers. A pool's own
 * subjects (`aggregate.<type>.submit.<pool>`) serve what this pool owns and forward the rest,
 * once, to the owning pool's subject.
 */
/** The subject a request came on: the shared endpoint, this pool's own, or forwarded by a pool. */
const Via = { Shared: "shared", Own: "own", Forwarded: "forwarded" } as const;
type Via = (typeof Via)[keyof typeof Via];

export interface PoolRouting {
  readonly pool: string;
  /** Whether this pool answers the tenant now (the placement table's decision). */
  owns(tenant: TenantId): boolean;
  /**
   * Whether the tenant is paused (`draining`) with this pool as its target: no pool takes its
   * commands, so this one, and only this one, answers 503 instead of leaving the caller to time out.
   */
  paused(tenant: TenantId): boolean;
  /** The pool answering the tenant now; undefined while it is paused. */
  owner(tenant: TenantId): string | undefined;
}

export interface AggregateServicesOptions {
  readonly nc: NatsConnection;
  readonly handler: CommandHandler;
  readonly types: readonly AggregateTypeInfo[];
  readonly policy: RequestPolicy;
  readonly log: Logger;
  /** Service version (semver), shown in `$SRV.INFO`. */
  readonly version: string;
  /** Admits commands per tenant (drains); `leave` is called when an admitted command is done. */
  readonly gate?: {
    enter(tenant: string, aggregateId: string): AggregateError | undefined;
    leave(tenant: string): void;
  };
  /** Called once per request after the reply is sent. */
  readonly onOutcome?: (outcome: RequestOutcome) => void;
  /** Wall-clock source for durations; performance.now by default. */
  readonly now?: () => number;
  /** Tenant pools; without it every request is served (queue group `q`). */
  readonly routing?: PoolRouting;
}

export interface AggregateServices {
  readonly services: readonly Service[];
  /** Requests being handled right now. */
  readonly inFlight: number;
  /** Per-type counters (also in `$SRV.STATS` endpoint data). */
  stats(type: string): EndpointCounters | undefined;
  /** Stops taking requests, then waits (up to `timeoutMs`) for the ones in flight. True when all finished. */
  stop(timeoutMs: number): Promise<boolean>;
}

export interface EndpointCounters {
  in_flight: number;
  requests: number;
  ok: number;
  duplicates: number;
  errors: number;
  conflicts: number;
  errors_by_code: Record<string, number>;
  /** Requests dropped because another pool owns their tenant (each pool receives every request). */
  not_owner: number;
  /** Requests on this pool's own subject forwarded to the owning pool's. */
  forwarded: number;
}

const encoder = new TextEncoder();

export async function startAggregateServices(options: AggregateServicesOptions): Promise<AggregateServices> {
  const { nc, handler, policy, log } = options;
  const now = options.now ?? (() => performance.now());
  const counters = new Map<string, EndpointCounters>();
  let inFlight = 0;
  let stopping = false;
  const idle: Array<() => void> = [];

  const routing = options.routing;

  /**
   * Whether this worker handles `msg` (the placement decision, before any work or reply). The
   * tenant comes from the header alone; a request whose header is invalid is answered (with the
   * 400) by the pool of the default tenant, so that it too gets exactly one reply.
   */
  const admit = (
    type: AggregateType,
    endpoint: "submit" | "get",
    msg: ServiceMsg,
    via: Via,
  ): boolean | AggregateError => {
    if (!routing) return true;
    const c = counters.get(type)!;
    let tenant: TenantId;
    try {
      tenant = resolveTenant(headerView(msg.headers), policy);
    } catch {
      tenant = policy.defaultTenant;
    }
    if (routing.owns(tenant)) return true;
    // Nobody applies the tenant's commands while it is paused, so this reply races no success.
    if (routing.paused(tenant)) {
      return new Unavailable("the tenant is paused while it moves between pools; retry shortly");
    }
    // Forwarded by a pool that saw this one as the owner: served wherever it lands, so that a
    // request travels at most once even while two pools' tables disagree.
    if (via === Via.Forwarded) return true;
    if (via === Via.Shared) {
      // Another pool answers it; any reply from here could race that pool's.
      c.not_owner++;
      return false;
    }
    // On this pool's own subject: sent by a gateway whose table is older than ours.
    const owner = routing.owner(tenant);
    if (owner === undefined || owner === routing.pool) {
      c.not_owner++;
      return false;
    }
    c.forwarded++;
    forward(msg, poolForwardSubject(type, endpoint, owner), routing.pool);
    return false;
  };

  const forward = (msg: ServiceMsg, subject: string, from: string): void => {
    const h = natsHeaders();
    if (msg.headers)
      for (const k of msg.headers.keys()) for (const v of msg.headers.values(k)) h.append(k, v);
    h.set(ForwardedHeader, from);
    try {
      nc.publish(subject, msg.data, { headers: h, ...(msg.reply ? { reply: msg.reply } : {}) });
    } catch (err) {
      log.warn({ err, subject }, "could not forward a request to its pool");
    }
  };

  const serve =
    (
      type: AggregateType,
      endpoint: "submit" | "get",
      work: (msg: ServiceMsg, known: KnownIds) => Promise<unknown>,
      via: Via = Via.Shared,
    ) =>
    (err: Error | null, msg: ServiceMsg): void => {
      if (err) {
        log.error({ err, aggregate_type: type, endpoint }, "endpoint subscription failed");
        return;
      }
      const admitted = admit(type, endpoint, msg, via);
      if (admitted === false) return;
      inFlight++;
      const c = counters.get(type)!;
      c.in_flight++;
      c.requests++;
      const task = admitted === true ? work : (): Promise<unknown> => Promise.reject(admitted);
      void run(type, endpoint, msg, task).finally(() => {
        inFlight--;
        c.in_flight--;
        if (inFlight === 0) for (const resolve of idle.splice(0)) resolve();
      });
    };

  async function run(
    type: AggregateType,
    endpoint: "submit" | "get",
    msg: ServiceMsg,
    work: (msg: ServiceMsg, known: KnownIds) => Promise<unknown>,
  ): Promise<void> {
    const started = now();
    const c = counters.get(type)!;
    // Filled in as soon as the request is parsed, so failures are logged with what was known.
    const known: KnownIds = {};
    let outcome: Omit<RequestOutcome, "durationMs">;
    try {
      if (stopping) throw new Unavailable("the service is shutting down");
      const result = (await work(msg, known)) as Record<string, unknown>;
      respond(msg, encoder.encode(JSON.stringify(result)));
      const duplicate = result["duplicate"] === true;
      if (duplicate) c.duplicates++;
      else c.ok++;
      outcome = {
        endpoint,
        aggregate_type: type,
        ...known,
        version: result["version"] as number,
        outcome: duplicate ? "duplicate" : "ok",
      };
    } catch (e) {
      const error = toAggregateError(e);
      if (!isAggregateError(e)) log.error({ err: e, aggregate_type: type, endpoint }, "unexpected error");
      c.errors++;
      c.errors_by_code[error.name] = (c.errors_by_code[error.name] ?? 0) + 1;
      if (error.name === "VersionConflict") c.conflicts++;
      replyError(msg, error, log);
      outcome = { endpoint, aggregate_type: type, outcome: error.name, error, ...known };
    }
    try {
      options.onOutcome?.({ ...outcome, durationMs: now() - started });
    } catch (hookErr) {
      log.warn({ err: hookErr }, "outcome hook failed");
    }
  }

  const svcm = new Svcm(nc);
  const services: Service[] = [];
  for (const info of options.types) {
    const type = info.type;
    counters.set(type, {
      in_flight: 0,
      requests: 0,
      ok: 0,
      duplicates: 0,
      errors: 0,
      conflicts: 0,
      errors_by_code: {},
      not_owner: 0,
      forwarded: 0,
    });
    const service = await svcm.add({
      name: serviceName(type),
      version: options.version,
      description: info.description ?? `Commands for aggregates of type ${type}`,
      metadata: { aggregate_type: type, ...info.metadata, ...(routing ? { pool: routing.pool } : {}) },
      statsHandler: () => {
        const c = counters.get(type)!;
        return Promise.resolve({
          ...c,
          errors_by_code: { ...c.errors_by_code },
          cached_aggregates: handler.cachedAggregates,
          ...(routing ? { pool: routing.pool } : {}),
        });
      },
    });
    const submit = async (msg: ServiceMsg, known: KnownIds) => {
      const command = parseSubmit(type, headerView(msg.headers), msg.data, policy);
      Object.assign(known, {
        tenant_id: command.tenant_id,
        aggregate_id: command.aggregate_id,
        command_id: command.command_id,
        correlation_id: command.correlation_id,
        traceparent: command.traceparent,
      });
      const gate = options.gate;
      if (!gate) return handler.submit(command);
      const refused = gate.enter(command.tenant_id, command.aggregate_id);
      if (refused) throw refused;
      try {
        return await handler.submit(command);
      } finally {
        gate.leave(command.tenant_id);
      }
    };
    const get = (msg: ServiceMsg) => handler.get(parseGet(type, headerView(msg.headers), msg.data, policy));
    // Without routing the library's default group (`q`) applies, as before pools existed.
    const queue = routing ? { queue: poolQueueGroup(type, routing.pool) } : {};
    service.addEndpoint("submit", {
      subject: endpointSubject(type, "submit"),
      metadata: { description: "handle one command" },
      ...queue,
      handler: serve(type, "submit", submit),
    });
    service.addEndpoint("get", {
      subject: endpointSubject(type, "get"),
      metadata: { description: "current state of one aggregate" },
      ...queue,
      handler: serve(type, "get", get),
    });
    if (routing) {
      service.addEndpoint("submit-pool", {
        subject: poolEndpointSubject(type, "submit", routing.pool),
        metadata: { description: `handle one command (pool ${routing.pool})`, pool: routing.pool },
        ...queue,
        handler: serve(type, "submit", submit, Via.Own),
      });
      service.addEndpoint("submit-forwarded", {
        subject: poolForwardSubject(type, "submit", routing.pool),
        metadata: {
          description: `commands other pools forwarded (pool ${routing.pool})`,
          pool: routing.pool,
        },
        ...queue,
        handler: serve(type, "submit", submit, Via.Forwarded),
      });
      service.addEndpoint("get-pool", {
        subject: poolEndpointSubject(type, "get", routing.pool),
        metadata: {
          description: `current state of one aggregate (pool ${routing.pool})`,
          pool: routing.pool,
        },
        ...queue,
        handler: serve(type, "get", get, Via.Own),
      });
      service.addEndpoint("get-forwarded", {
        subject: poolForwardSubject(type, "get", routing.pool),
        metadata: {
          description: `state reads other pools forwarded (pool ${routing.pool})`,
          pool: routing.pool,
        },
        ...queue,
        handler: serve(type, "get", get, Via.Forwarded),
      });
    }
    services.push(service);
  }

  return {
    services,
    get inFlight() {
      return inFlight;
    },
    stats: (type) => counters.get(type),
    async stop(timeoutMs) {
      stopping = true;
      await Promise.all(services.map((s) => s.stop().catch(() => null)));
      if (inFlight === 0) return true;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const finished = await Promise.race([
        new Promise<boolean>((resolve) => idle.push(() => resolve(true))),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), timeoutMs);
        }),
      ]);
      clearTimeout(timer);
      return finished;
    },
  };
}

/**
 * The error reply of CONTRACT.md §2: `Nats-Service-Error-Code`, a one-line `Nats-Service-Error`
 * and the JSON body `{"error": {"code", "message"}}`. Never throws: a lost reply is logged.
 */
export function replyError(msg: ServiceMsg, error: AggregateError, log: Logger): void {
  try {
    msg.respondError(error.status, headerSafe(error.message), encoder.encode(JSON.stringify(error.toJSON())));
  } catch (respondErr) {
    log.warn({ err: respondErr }, "could not send the error reply");
  }
}

function respond(msg: ServiceMsg, data: Uint8Array): void {
  // A request published without a reply subject is handled, but there is no one to tell.
  if (msg.reply) msg.respond(data);
}

/** Header values looked up case-insensitively: gateways differ in how they spell names. */
function headerView(h: MsgHdrs | undefined): RequestHeaders | undefined {
  if (!h) return undefined;
  return { values: (name) => (h.has(name, Match.IgnoreCase) ? h.values(name, Match.IgnoreCase) : []) };
}

/** The ids of a request, as far as they are known (and valid). */
interface KnownIds {
  tenant_id?: string;
  aggregate_id?: string;
  command_id?: string;
  correlation_id?: string;
  traceparent?: string | undefined;
}

function toAggregateError(e: unknown): AggregateError {
  if (isAggregateError(e)) return e;
  return new StreamError(`internal error: ${e instanceof Error ? e.message : String(e)}`, {}, { cause: e });
}

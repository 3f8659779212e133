/**
 * One NATS micro service per aggregate type (`aggregate-<type>`, CONTRACT.md §2), so that
 * `nats micro ls/info/stats` and any `$SRV.PING` client see it. Every endpoint handler goes
 * through `serve`, the one async-safe wrapper: @nats-io/services only catches synchronous
 * throws, so an async handler that rejects would otherwise leave the caller to time out.
 */
import { Match, type MsgHdrs, type NatsConnection } from "@nats-io/nats-core";
import { Svcm, type Service, type ServiceMsg } from "@nats-io/services";
import {
  StreamError,
  Unavailable,
  headerSafe,
  isAggregateError,
  type AggregateError,
  type AggregateType,
  type ErrorCode,
} from "../contract/index.ts";
import type { CommandHandler, Logger } from "../aggregate/index.ts";
import { endpointSubject, serviceName } from "../naming/index.ts";
import { parseGet, parseSubmit, type RequestHeaders, type RequestPolicy } from "./request.ts";

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
}

const encoder = new TextEncoder();

export async function startAggregateServices(options: AggregateServicesOptions): Promise<AggregateServices> {
  const { nc, handler, policy, log } = options;
  const now = options.now ?? (() => performance.now());
  const counters = new Map<string, EndpointCounters>();
  let inFlight = 0;
  let stopping = false;
  const idle: Array<() => void> = [];

  const serve =
    (
      type: AggregateType,
      endpoint: "submit" | "get",
      work: (msg: ServiceMsg, known: KnownIds) => Promise<unknown>,
    ) =>
    (err: Error | null, msg: ServiceMsg): void => {
      if (err) {
        log.error({ err, aggregate_type: type, endpoint }, "endpoint subscription failed");
        return;
      }
      inFlight++;
      const c = counters.get(type)!;
      c.in_flight++;
      c.requests++;
      void run(type, endpoint, msg, work).finally(() => {
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
    });
    const service = await svcm.add({
      name: serviceName(type),
      version: options.version,
      description: info.description ?? `Commands for aggregates of type ${type}`,
      metadata: { aggregate_type: type, ...info.metadata },
      statsHandler: () => {
        const c = counters.get(type)!;
        return Promise.resolve({
          ...c,
          errors_by_code: { ...c.errors_by_code },
          cached_aggregates: handler.cachedAggregates,
        });
      },
    });
    service.addEndpoint("submit", {
      subject: endpointSubject(type, "submit"),
      metadata: { description: "handle one command" },
      handler: serve(type, "submit", async (msg, known) => {
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
      }),
    });
    service.addEndpoint("get", {
      subject: endpointSubject(type, "get"),
      metadata: { description: "current state of one aggregate" },
      handler: serve(type, "get", async (msg) =>
        handler.get(parseGet(type, headerView(msg.headers), msg.data, policy)),
      ),
    });
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

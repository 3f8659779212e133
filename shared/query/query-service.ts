/**
 * `aggregate.<type>.query` (CONTRACT.md §2): a filtered, sorted, keyset-paginated list of the
 * caller's tenant's aggregates, read from the projected read model. The tenant comes from
 * `x-tenant-id` only; the body cannot name one.
 */
import {
  Match,
  headers as natsHeaders,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from "@nats-io/nats-core";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { Svcm, type Service, type ServiceMsg } from "@nats-io/services";
import * as v from "valibot";
import {
  StorageError,
  TenantAccessDenied,
  Unavailable,
  ValidationError,
  headerSafe,
  isAggregateError,
  type AggregateError,
  type AggregateType,
  type TenantId,
} from "../contract/index.ts";
import type { Logger } from "../aggregate/index.ts";
import {
  endpointSubject,
  serviceName,
  watchControlSubject,
  watchControlSubjects,
  watchForwardSubject,
  watchPrefix,
  watchSubject,
  WatchVerb,
} from "../naming/index.ts";
import type { AggregateProgram } from "../sandbox/index.ts";
import {
  parseJsonBody,
  replyError,
  resolveTenant,
  type RequestHeaders,
  type RequestPolicy,
} from "../service/index.ts";
import { decodeCursor, encodeCursor, type CursorScope } from "./cursor.ts";
import { parseFilter } from "./filter.ts";
import { compilePredicate } from "./predicate.ts";
import { startProjector, type KnownState, type Projector, type ProjectorStatus } from "./projector.ts";
import { createWatchHub, EndReason, type WatchHub } from "./watch-hub.ts";
import type { FieldType, Keyset, QueryFields, SortKey } from "./sql.ts";
import type { ReadModelStore } from "./store.ts";

/** The most items one page may hold. */
export const MAX_PAGE = 500;
const DEFAULT_PAGE = 50;
const MAX_SORT_KEYS = 4;

/** Body of `aggregate.<type>.query`. Unknown keys (a `tenant_id` among them) are refused. */
export const QueryRequest = v.strictObject({
  /** CEL-subset filter; empty or absent matches every aggregate. */
  filter: v.optional(v.string("filter must be a string"), ""),
  /** Declared query fields, `-` prefix for descending; the aggregate id breaks ties. */
  sort: v.optional(v.pipe(v.array(v.string()), v.maxLength(MAX_SORT_KEYS, "at most 4 sort keys")), []),
  limit: v.optional(
    v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(MAX_PAGE, `limit must be 1..${MAX_PAGE}`)),
    DEFAULT_PAGE,
  ),
  /** `next_cursor` of the previous page. */
  cursor: v.optional(v.nullable(v.pipe(v.string(), v.nonEmpty()))),
  /** Wait until the read model holds every commit up to this stream sequence (read-your-writes). */
  min_stream_seq: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  /** Also count every match (`total`); costs a scan of the matches, so only on request. */
  count: v.optional(v.boolean("count must be true or false"), false),
});
export type QueryRequest = v.InferOutput<typeof QueryRequest>;

/** The longest `deliver_to` subject, and its most tokens. */
const MAX_DELIVER_TO = 255;
const MAX_DELIVER_TOKENS = 16;
const SUBJECT_TOKEN_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** Body of `aggregate.<type>.watch`. Unknown keys (a `tenant_id` among them) are refused. */
export const WatchRequest = v.strictObject({
  /** CEL-subset filter; empty or absent matches every aggregate. */
  filter: v.optional(v.string("filter must be a string"), ""),
  /**
   * Where notifications go: a subject under `tenant.<caller's tenant>.watch.`. Subscribe to it
   * before sending the request, and nothing sent after the initial result can be missed.
   * Default `tenant.<tenant>.watch.<type>.<subscription id>`.
   */
  deliver_to: v.optional(
    v.pipe(
      v.string("deliver_to must be a string"),
      v.maxLength(MAX_DELIVER_TO, `deliver_to is longer than ${MAX_DELIVER_TO} characters`),
    ),
  ),
  /** Initial matches in the reply at most (by aggregate id); the rest through `next_cursor`. */
  limit: v.optional(
    v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(MAX_PAGE, `limit must be 1..${MAX_PAGE}`)),
    MAX_PAGE,
  ),
});
export type WatchRequest = v.InferOutput<typeof WatchRequest>;

/** Reply of `aggregate.<type>.watch`. */
export interface WatchReply {
  readonly subscription_id: string;
  /** The subject the notifications are published on. */
  readonly deliver_to: string;
  /** The initial result holds every commit of the type up to this stream sequence, and no later one. */
  readonly stream_seq: number;
  /** The watch ends unless renewed within this many milliseconds. */
  readonly ttl_ms: number;
  readonly renew_subject: string;
  readonly cancel_subject: string;
  readonly items: QueryItem[];
  /** More matches: continue with `aggregate.<type>.query` and the same filter. Null when none. */
  readonly next_cursor: string | null;
}

/** One item of a query reply. */
export interface QueryItem {
  readonly aggregate_id: string;
  readonly version: number;
  readonly state: unknown;
}

export interface QueryReply {
  readonly items: QueryItem[];
  /** Null on the last page. */
  readonly next_cursor: string | null;
  /** Every match of the filter, when the request asked for `count`. */
  readonly total?: number;
}

/** One queryable aggregate type. */
export interface QueryTypeDefinition {
  readonly type: AggregateType;
  readonly program: AggregateProgram;
  /** JSON text of the initial state. */
  readonly initialState: string;
  /** The manifest's `query_fields`. */
  readonly queryFields: Readonly<Record<string, FieldType>>;
  /** States this process already folded (see ProjectorOptions.knownState). */
  readonly knownState?: KnownState;
}

export interface QueryServiceOptions {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly stream: string;
  readonly types: readonly QueryTypeDefinition[];
  readonly store: ReadModelStore;
  readonly policy: RequestPolicy;
  readonly log: Logger;
  /**
   * The `aggregate-<type>` services (AggregateServices.services): the `query` endpoint joins the
   * type's service, as CONTRACT.md §2 lists it. A type without one gets its own service
   * `aggregate-<type>-query` on the same subject. An endpoint cannot leave a running service
   * (@nats-io/services closes the whole service when one endpoint's subscription ends): once this
   * query service is stopped, a joined endpoint answers 503 until the type's service stops.
   */
  readonly services?: readonly Service[];
  /** Service version for a service created here. */
  readonly version?: string;
  /** MAC key of cursors; by default a random secret kept in the store (shared through PostgreSQL). */
  readonly cursorSecret?: Buffer;
  /** The longest a query waits for `min_stream_seq` before 503; default 5000 ms. */
  readonly maxWaitMs?: number;
  /** Live watches; by default 30 s TTL, 100 per tenant and replica. */
  readonly watch?: {
    readonly ttlMs?: number;
    readonly maxPerTenant?: number;
  };
  /** How often a running projector checks the stream's identity; default 5000 ms. */
  readonly identityCheckMs?: number;
  /** How often a replica without the projector lock retries it; default 2000 ms. */
  readonly lockRetryMs?: number;
  /** Called once per query after the reply is sent. */
  readonly onOutcome?: (o: {
    aggregate_type: string;
    tenant_id?: string;
    outcome: string;
    durationMs: number;
  }) => void;
}

export interface QueryService extends AsyncDisposable {
  /** Per-type projection status, for `/ready` detail and metrics. */
  status(): ProjectorStatus[];
  /** Live watches held by this replica. */
  watches(): number;
  /** Stops the endpoints and the projectors; does not close the store. */
  stop(): Promise<void>;
}

const encoder = new TextEncoder();

export async function startQueryService(options: QueryServiceOptions): Promise<QueryService> {
  const { store, log, nc } = options;
  const secret = options.cursorSecret ?? (await store.secret());
  const maxWaitMs = options.maxWaitMs ?? 5_000;
  const ttlMs = options.watch?.ttlMs ?? 30_000;
  const projectors = new Map<string, Projector>();
  const hubs = new Map<string, WatchHub>();
  const forwards = new Map<string, Subscription>();
  const ownServices: Service[] = [];
  let stopped = false;
  let svcm: Svcm | undefined;
  try {
    for (const def of options.types) {
      const fields: QueryFields = new Map(Object.entries(def.queryFields));
      await store.prepareType(def.type, fields);
      const hub = createWatchHub({
        type: def.type,
        publish: (subject, data) => nc.publish(subject, data),
        ttlMs,
        maxPerTenant: options.watch?.maxPerTenant ?? 100,
        log,
      });
      hubs.set(def.type, hub);
      const typeCtx: TypeContext = { type: def.type, fields, hub, holding: false };
      const projector = await startProjector({
        js: options.js,
        jsm: options.jsm,
        stream: options.stream,
        type: def.type,
        program: def.program,
        initialState: def.initialState,
        store,
        log,
        ...(def.knownState === undefined ? {} : { knownState: def.knownState }),
        ...(options.identityCheckMs === undefined ? {} : { identityCheckMs: options.identityCheckMs }),
        ...(options.lockRetryMs === undefined ? {} : { lockRetryMs: options.lockRetryMs }),
        listener: {
          changes: (list) => hub.listener.changes(list),
          interrupted: (reason) => hub.listener.interrupted(reason),
          holding: (on) => {
            typeCtx.holding = on;
            if (store.dialect === "postgres") forwardWhileHolding(typeCtx, on);
          },
        },
      });
      typeCtx.projector = projector;
      projectors.set(def.type, projector);
      const handler = (err: Error | null, msg: ServiceMsg): void => {
        if (err) {
          log.error({ err, aggregate_type: def.type }, "query endpoint subscription failed");
          return;
        }
        void answer(def.type, fields, projector, msg);
      };
      const watchHandler = (err: Error | null, msg: ServiceMsg): void => {
        if (err) {
          log.error({ err, aggregate_type: def.type }, "watch endpoint subscription failed");
          return;
        }
        void answerWatch(typeCtx, msg, false);
      };
      let service = options.services?.find((s) => s.info().name === serviceName(def.type));
      if (!service) {
        svcm ??= new Svcm(options.nc);
        service = await svcm.add({
          name: `${serviceName(def.type)}-query`,
          version: options.version ?? "0.0.0",
          description: `Queries over aggregates of type ${def.type}`,
          metadata: { aggregate_type: def.type },
        });
        ownServices.push(service);
      }
      service.addEndpoint("query", {
        subject: endpointSubject(def.type, "query"),
        metadata: { description: "filtered list of aggregates of the caller's tenant" },
        handler,
      });
      service.addEndpoint("watch", {
        subject: endpointSubject(def.type, "watch"),
        metadata: { description: "live enter/update/leave notifications for a filter" },
        handler: watchHandler,
      });
    }
  } catch (err) {
    for (const hub of hubs.values()) hub.stop();
    await Promise.all([...projectors.values()].map((p) => p.stop()));
    throw err;
  }

  /**
   * PostgreSQL: one replica projects a type and only it sees the changes, so only it can hold
   * watches; the others forward watch requests to it on this subject.
   */
  function forwardWhileHolding(ctx: TypeContext, on: boolean): void {
    forwards.get(ctx.type)?.unsubscribe();
    forwards.delete(ctx.type);
    if (!on || stopped) return;
    forwards.set(
      ctx.type,
      nc.subscribe(watchForwardSubject(ctx.type as AggregateType), {
        queue: "q",
        callback: (err, msg) => {
          if (!err) void answerWatch(ctx, msg, true);
        },
      }),
    );
  }

  async function answerWatch(ctx: TypeContext, msg: Msg, forwarded: boolean): Promise<void> {
    const started = performance.now();
    let tenant: string | undefined;
    let outcome = "ok";
    try {
      if (stopped) throw new Unavailable("the query service is stopped");
      tenant = resolveTenant(headerView(msg.headers), options.policy);
      const request = parseWatchBody(msg.data);
      if (store.dialect === "postgres" && !ctx.holding) {
        if (forwarded) throw new Unavailable(`this replica no longer projects ${ctx.type}; retry`);
        await forward(ctx, msg);
      } else {
        await openWatch(ctx, tenant as TenantId, request, msg);
      }
    } catch (e) {
      const error: AggregateError = isAggregateError(e)
        ? e
        : new StorageError("the read model failed", {}, { cause: e });
      if (!isAggregateError(e)) log.error({ err: e, aggregate_type: ctx.type }, "watch failed");
      outcome = error.name;
      errorReply(msg, error);
    }
    options.onOutcome?.({
      aggregate_type: ctx.type,
      ...(tenant === undefined ? {} : { tenant_id: tenant }),
      outcome,
      durationMs: performance.now() - started,
    });
  }

  /** Relays a watch request to the replica that projects the type, and its reply back. */
  async function forward(ctx: TypeContext, msg: Msg): Promise<void> {
    let reply: Msg;
    try {
      reply = await nc.request(watchForwardSubject(ctx.type as AggregateType), msg.data, {
        timeout: maxWaitMs,
        ...(msg.headers ? { headers: msg.headers } : {}),
      });
    } catch (err) {
      throw new Unavailable(`no replica projects ${ctx.type} right now; retry`, {}, { cause: err });
    }
    if (msg.reply) msg.respond(reply.data, reply.headers ? { headers: reply.headers } : {});
  }

  async function openWatch(ctx: TypeContext, tenant: TenantId, request: WatchRequest, msg: Msg) {
    const type = ctx.type as AggregateType;
    const filter = parseFilter(request.filter);
    const id = options.policy.newId();
    const subject = request.deliver_to ?? watchSubject(tenant, type, id);
    checkDeliverTo(subject, tenant);
    let control: Subscription | undefined;
    // Registered before the initial result is read: see watch-hub.ts for why nothing is lost.
    ctx.hub.open({
      id,
      tenant,
      subject,
      predicate: compilePredicate(filter),
      onEnd: () => control?.unsubscribe(),
    });
    let reply: WatchReply;
    try {
      const snapshot = await store.snapshot(
        { tenant, type, filter, sort: [], limit: request.limit + 1 },
        ctx.fields,
      );
      const page = snapshot.rows.slice(0, request.limit);
      const last = page.at(-1);
      const scope: CursorScope = { tenant, type, filter: request.filter, sort: [] };
      reply = {
        subscription_id: id,
        deliver_to: subject,
        stream_seq: snapshot.checkpoint,
        ttl_ms: ttlMs,
        renew_subject: watchControlSubject(type, id, WatchVerb.Renew),
        cancel_subject: watchControlSubject(type, id, WatchVerb.Cancel),
        items: page.map((r) => ({ aggregate_id: r.id, version: r.version, state: r.state })),
        next_cursor:
          snapshot.rows.length > request.limit && last
            ? encodeCursor(secret, scope, { values: last.keys, id: last.id })
            : null,
      };
      control = nc.subscribe(watchControlSubjects(type, id), {
        callback: (err, m) => {
          if (!err) controlWatch(ctx, id, m);
        },
      });
      // The watch may have ended while the initial result was read (shutdown, rebuild).
      if (!ctx.hub.get(id)) throw new Unavailable("the watch ended before it started; watch again");
    } catch (err) {
      ctx.hub.end(id, EndReason.Cancelled, true);
      // If the watch ended during the snapshot, its onEnd ran before `control` existed.
      control?.unsubscribe();
      throw err;
    }
    // Reply, then the buffered changes, on one connection: the client gets them in this order.
    if (msg.reply) msg.respond(encoder.encode(JSON.stringify(reply)));
    ctx.hub.go(id, reply.stream_seq);
    log.debug({ aggregate_type: type, tenant_id: tenant, subscription_id: id, subject }, "watch started");
  }

  /** `renew` and `cancel` of one watch; only this replica subscribes to them. */
  function controlWatch(ctx: TypeContext, id: string, msg: Msg): void {
    try {
      const tenant = resolveTenant(headerView(msg.headers), options.policy);
      const verb = msg.subject.slice(msg.subject.lastIndexOf(".") + 1);
      const watch = ctx.hub.get(id);
      if (!watch) throw new Unavailable("the watch has ended");
      if (watch.tenant !== tenant) throw new TenantAccessDenied("the watch belongs to another tenant");
      if (verb === WatchVerb.Renew) {
        const renewed = ctx.hub.renew(id, tenant)!;
        respondJson(msg, { subscription_id: id, expires_in_ms: renewed.expiresAt - Date.now() });
      } else if (verb === WatchVerb.Cancel) {
        ctx.hub.end(id, EndReason.Cancelled);
        respondJson(msg, { subscription_id: id, cancelled: true });
      } else {
        throw new ValidationError(`unknown watch verb ${JSON.stringify(verb)}: renew or cancel`);
      }
    } catch (e) {
      errorReply(msg, isAggregateError(e) ? e : new StorageError("the watch failed", {}, { cause: e }));
    }
  }

  function errorReply(msg: Msg, error: AggregateError): void {
    if (!msg.reply) return;
    try {
      const h = natsHeaders();
      h.set("Nats-Service-Error-Code", String(error.status));
      h.set("Nats-Service-Error", headerSafe(error.message));
      msg.respond(encoder.encode(JSON.stringify(error.toJSON())), { headers: h });
    } catch (err) {
      log.warn({ err }, "could not send the error reply");
    }
  }

  async function answer(
    type: string,
    fields: QueryFields,
    projector: Projector,
    msg: ServiceMsg,
  ): Promise<void> {
    const started = performance.now();
    let tenant: string | undefined;
    let outcome = "ok";
    try {
      // An endpoint joined to the type's service lives as long as that service does.
      if (stopped) throw new Unavailable("the query service is stopped");
      tenant = resolveTenant(headerView(msg.headers), options.policy);
      const reply = await runQuery(type, tenant, fields, projector, parseBody(msg.data));
      if (msg.reply) msg.respond(encoder.encode(JSON.stringify(reply)));
    } catch (e) {
      const error: AggregateError = isAggregateError(e)
        ? e
        : new StorageError("the read model failed", {}, { cause: e });
      if (!isAggregateError(e)) log.error({ err: e, aggregate_type: type }, "query failed");
      outcome = error.name;
      replyError(msg, error, log);
    }
    options.onOutcome?.({
      aggregate_type: type,
      ...(tenant === undefined ? {} : { tenant_id: tenant }),
      outcome,
      durationMs: performance.now() - started,
    });
  }

  async function runQuery(
    type: string,
    tenant: string,
    fields: QueryFields,
    projector: Projector,
    request: QueryRequest,
  ): Promise<QueryReply> {
    const filter = parseFilter(request.filter);
    const sort = request.sort.map((text): SortKey => {
      const descending = text.startsWith("-");
      const dotted = descending || text.startsWith("+") ? text.slice(1) : text;
      const fieldType = fields.get(dotted);
      if (fieldType === undefined) {
        const declared = [...fields.keys()].join(", ") || "none";
        throw new ValidationError(
          `cannot sort on ${JSON.stringify(dotted)}: only declared query_fields can be sorted on (${declared})`,
        );
      }
      return { path: dotted.split("."), type: fieldType, descending };
    });
    if (new Set(sort.map((k) => k.path.join("."))).size !== sort.length) {
      throw new ValidationError("a field appears twice in sort");
    }
    const scope: CursorScope = { tenant, type, filter: request.filter, sort: request.sort };
    const plan = (after: Keyset | undefined) => ({
      tenant,
      type,
      filter,
      sort,
      after,
      limit: request.limit + 1,
    });
    const after = request.cursor ? decodeCursor(secret, scope, request.cursor, sort.length) : undefined;
    if (request.min_stream_seq !== undefined && request.min_stream_seq > 0) {
      const caughtUp = await projector.waitFor(request.min_stream_seq, maxWaitMs);
      if (!caughtUp) {
        throw new Unavailable(
          `the read model has not reached stream sequence ${request.min_stream_seq} within ${maxWaitMs} ms`,
        );
      }
    }
    // One row more than asked tells whether another page exists without a count.
    const rows = await store.query(plan(after), fields);
    const page = rows.slice(0, request.limit);
    const last = page.at(-1);
    return {
      items: page.map((r) => ({ aggregate_id: r.id, version: r.version, state: r.state })),
      next_cursor:
        rows.length > request.limit && last
          ? encodeCursor(secret, scope, { values: last.keys, id: last.id })
          : null,
      ...(request.count ? { total: await store.count(plan(undefined), fields) } : {}),
    };
  }

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      stopped = true;
      for (const sub of forwards.values()) sub.unsubscribe();
      forwards.clear();
      // Watch clients are told (`end`, `shutdown`) while the connection still works.
      for (const hub of hubs.values()) hub.stop();
      await Promise.all(ownServices.map((s) => s.stop().catch(() => null)));
      await Promise.all([...projectors.values()].map((p) => p.stop()));
    })();
    return stopping;
  };
  return {
    status: () => [...projectors.values()].map((p) => p.status()),
    watches: () => [...hubs.values()].reduce((n, h) => n + h.size(), 0),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** What the watch handlers of one type share. */
interface TypeContext {
  readonly type: string;
  readonly fields: QueryFields;
  readonly hub: WatchHub;
  /** Whether this replica projects the type (and so sees its changes). */
  holding: boolean;
  projector?: Projector;
}

/**
 * A delivery subject must lie under the caller's tenant's watch prefix: NATS then lets only that
 * tenant's readers subscribe to it, and it can never be a subject of the events stream.
 */
function checkDeliverTo(subject: string, tenant: TenantId): void {
  const prefix = watchPrefix(tenant);
  const tokens = subject.split(".");
  if (
    !subject.startsWith(prefix) ||
    subject.length === prefix.length ||
    tokens.length > MAX_DELIVER_TOKENS ||
    !tokens.every((t) => SUBJECT_TOKEN_RE.test(t))
  ) {
    throw new ValidationError(
      `deliver_to must be a subject under ${prefix} (tokens of A-Z a-z 0-9 _ -, at most ${MAX_DELIVER_TOKENS} tokens)`,
    );
  }
}

function respondJson(msg: Msg, body: unknown): void {
  if (msg.reply) msg.respond(encoder.encode(JSON.stringify(body)));
}

function parseWatchBody(data: Uint8Array): WatchRequest {
  return parseJson(data, WatchRequest, "watch");
}

function parseBody(data: Uint8Array): QueryRequest {
  return parseJson(data, QueryRequest, "query");
}

function parseJson<S extends v.GenericSchema>(data: Uint8Array, schema: S, what: string): v.InferOutput<S> {
  // Every field of a query or watch is optional: an empty body asks for everything.
  return parseJsonBody(schema, data, what, {});
}

function headerView(h: MsgHdrs | undefined): RequestHeaders | undefined {
  if (!h) return undefined;
  return { values: (name) => (h.has(name, Match.IgnoreCase) ? h.values(name, Match.IgnoreCase) : []) };
}

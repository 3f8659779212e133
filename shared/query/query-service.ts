/**
 * `aggregate.<type>.query` (CONTRACT.md §2): a filtered, sorted, keyset-paginated list of the
 * caller's tenant's aggregates, read from the projected read model. The tenant comes from
 * `x-tenant-id` only; the body cannot name one.
 */
import { Match, type MsgHdrs, type NatsConnection } from "@nats-io/nats-core";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { Svcm, type Service, type ServiceMsg } from "@nats-io/services";
import * as v from "valibot";
import {
  StorageError,
  Unavailable,
  ValidationError,
  isAggregateError,
  type AggregateError,
  type AggregateType,
} from "../contract/index.ts";
import type { Logger } from "../aggregate/index.ts";
import { endpointSubject, serviceName } from "../naming/index.ts";
import type { AggregateProgram } from "../sandbox/index.ts";
import { replyError, resolveTenant, type RequestHeaders, type RequestPolicy } from "../service/index.ts";
import { decodeCursor, encodeCursor, type CursorScope } from "./cursor.ts";
import { parseFilter } from "./filter.ts";
import { startProjector, type Projector, type ProjectorStatus } from "./projector.ts";
import type { FieldType, QueryFields, SortKey } from "./sql.ts";
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
});
export type QueryRequest = v.InferOutput<typeof QueryRequest>;

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
}

/** One queryable aggregate type. */
export interface QueryTypeDefinition {
  readonly type: AggregateType;
  readonly program: AggregateProgram;
  /** JSON text of the initial state. */
  readonly initialState: string;
  /** The manifest's `query_fields`. */
  readonly queryFields: Readonly<Record<string, FieldType>>;
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
  /** Stops the endpoints and the projectors; does not close the store. */
  stop(): Promise<void>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export async function startQueryService(options: QueryServiceOptions): Promise<QueryService> {
  const { store, log } = options;
  const secret = options.cursorSecret ?? (await store.secret());
  const maxWaitMs = options.maxWaitMs ?? 5_000;
  const projectors = new Map<string, Projector>();
  const ownServices: Service[] = [];
  let stopped = false;
  let svcm: Svcm | undefined;
  try {
    for (const def of options.types) {
      const fields: QueryFields = new Map(Object.entries(def.queryFields));
      await store.prepareType(def.type, fields);
      const projector = await startProjector({
        js: options.js,
        jsm: options.jsm,
        stream: options.stream,
        type: def.type,
        program: def.program,
        initialState: def.initialState,
        store,
        log,
      });
      projectors.set(def.type, projector);
      const handler = (err: Error | null, msg: ServiceMsg): void => {
        if (err) {
          log.error({ err, aggregate_type: def.type }, "query endpoint subscription failed");
          return;
        }
        void answer(def.type, fields, projector, msg);
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
    }
  } catch (err) {
    await Promise.all([...projectors.values()].map((p) => p.stop()));
    throw err;
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
    const rows = await store.query({ tenant, type, filter, sort, after, limit: request.limit + 1 }, fields);
    const page = rows.slice(0, request.limit);
    const last = page.at(-1);
    return {
      items: page.map((r) => ({ aggregate_id: r.id, version: r.version, state: r.state })),
      next_cursor:
        rows.length > request.limit && last
          ? encodeCursor(secret, scope, { values: last.keys, id: last.id })
          : null,
    };
  }

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      stopped = true;
      await Promise.all(ownServices.map((s) => s.stop().catch(() => null)));
      await Promise.all([...projectors.values()].map((p) => p.stop()));
    })();
    return stopping;
  };
  return {
    status: () => [...projectors.values()].map((p) => p.status()),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

function parseBody(data: Uint8Array): QueryRequest {
  let json: unknown = {};
  if (data.length > 0) {
    try {
      json = JSON.parse(decoder.decode(data));
    } catch (err) {
      throw new ValidationError(`the request body is not valid JSON: ${(err as Error).message}`);
    }
  }
  const result = v.safeParse(QueryRequest, json);
  if (!result.success) {
    const problems = result.issues.slice(0, 5).map((issue) => {
      const path = v.getDotPath(issue);
      return path ? `${path}: ${issue.message}` : issue.message;
    });
    throw new ValidationError(`invalid query: ${problems.join("; ")}`, { issues: problems });
  }
  return result.output;
}

function headerView(h: MsgHdrs | undefined): RequestHeaders | undefined {
  if (!h) return undefined;
  return { values: (name) => (h.has(name, Match.IgnoreCase) ? h.values(name, Match.IgnoreCase) : []) };
}

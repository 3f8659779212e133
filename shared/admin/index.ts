/**
 * The admin endpoints over NATS: a micro service `aggregate-admin` whose endpoints have NO queue
 * group, so a request reaches every replica and each one answers (collect them with
 * `adminRequest`, or `nats req --replies=0`). Subjects are `aggregate-admin.<target>.<verb>`,
 * where the target is a pool name (that pool's replicas) or `all` (every replica).
 *
 * Protection, two layers: NATS permissions (only the admin user may publish on
 * `aggregate-admin.>`; workers may only subscribe; nats-config/accounts.conf), and the bearer
 * token of the HTTP admin routes in an `Authorization` header. Without `AGGREGATE_ADMIN_TOKEN`
 * the service is not started at all, as the HTTP admin routes are off.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { hostname } from "node:os";
import { errors, headers as natsHeaders, type Msg, type NatsConnection } from "@nats-io/nats-core";
import { Svcm, type Service, type ServiceMsg } from "@nats-io/services";
import type { Logger } from "../aggregate/index.ts";
import { ADMIN_SERVICE, adminSubject, AdminVerb } from "../naming/index.ts";

/** An admin handler's failure: the numeric code goes to `Nats-Service-Error-Code`. */
export class AdminError extends Error {
  override readonly name = "AdminError";
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export type AdminHandler = (body: unknown) => Promise<Record<string, unknown>> | Record<string, unknown>;

export interface AdminServiceOptions {
  readonly nc: NatsConnection;
  readonly pool: string;
  readonly version: string;
  /** The bearer token every request must carry (`Authorization: Bearer <token>`). */
  readonly token: string;
  readonly log: Logger;
  readonly handlers: Readonly<Record<AdminVerb, AdminHandler>>;
}

const encoder = new TextEncoder();
const digest = (text: string) => createHash("sha256").update(text).digest();

/** Identifies the replica in every admin reply. */
export function replicaIdentity(pool: string): { pool: string; host: string; pid: number } {
  return { pool, host: hostname(), pid: process.pid };
}

export async function startAdminService(options: AdminServiceOptions): Promise<Service> {
  const { nc, pool, log } = options;
  const expected = digest(options.token);
  const service = await new Svcm(nc).add({
    name: ADMIN_SERVICE,
    version: options.version,
    description: "Admin endpoints of the aggregate workers; every replica answers (no queue group)",
    metadata: { pool },
    // No queue group: every replica receives every admin request.
    queue: "",
  });
  const identity = replicaIdentity(pool);

  const handle =
    (verb: AdminVerb) =>
    (err: Error | null, msg: ServiceMsg): void => {
      if (err) {
        log.error({ err, verb }, "admin endpoint subscription failed");
        return;
      }
      void (async () => {
        try {
          const auth = /^Bearer (.+)$/.exec(msg.headers?.get("Authorization") ?? "");
          if (!auth || !timingSafeEqual(digest(auth[1]!), expected)) {
            throw new AdminError(401, "Unauthorized", "a valid bearer token is required");
          }
          let body: unknown = {};
          if (msg.data.length > 0) {
            try {
              body = JSON.parse(new TextDecoder().decode(msg.data));
            } catch {
              throw new AdminError(400, "ValidationError", "the body must be JSON");
            }
          }
          const result = await options.handlers[verb](body);
          log.info({ verb, subject: msg.subject }, "admin request handled");
          msg.respond(encoder.encode(JSON.stringify({ ...identity, ...result })));
        } catch (e) {
          const error =
            e instanceof AdminError
              ? e
              : new AdminError(500, "AdminError", e instanceof Error ? e.message : String(e));
          if (!(e instanceof AdminError)) log.error({ err: e, verb }, "admin request failed");
          try {
            msg.respondError(
              error.status,
              error.message.replace(/[\r\n]+/g, " "),
              encoder.encode(
                JSON.stringify({ ...identity, error: { code: error.code, message: error.message } }),
              ),
            );
          } catch (respondErr) {
            log.warn({ err: respondErr }, "could not send the admin error reply");
          }
        }
      })();
    };

  for (const target of ["all", pool]) {
    for (const verb of Object.values(AdminVerb)) {
      service.addEndpoint(`${target === "all" ? "all" : "pool"}-${verb}`, {
        subject: adminSubject(target, verb),
        metadata: { target },
        handler: handle(verb),
      });
    }
  }
  return service;
}

/** One replica's answer to an admin request. */
export interface AdminReply {
  /** The numeric error code, undefined on success. */
  readonly status: number | undefined;
  readonly body: Record<string, unknown>;
}

export interface AdminRequestOptions {
  readonly token: string;
  /** How long to collect replies; replicas that have not answered by then are not counted. */
  readonly maxWaitMs?: number;
  /** Stop as soon as this many replies arrived. */
  readonly expect?: number;
}

/**
 * Sends an admin request to every replica of `target` (a pool or `all`) and collects the
 * replies until `expect` of them arrived or `maxWaitMs` passed.
 */
export async function adminRequest(
  nc: NatsConnection,
  target: string,
  verb: AdminVerb,
  body: unknown,
  options: AdminRequestOptions,
): Promise<AdminReply[]> {
  const h = natsHeaders();
  h.set("Authorization", `Bearer ${options.token}`);
  const replies: AdminReply[] = [];
  const it = await nc.requestMany(adminSubject(target, verb), JSON.stringify(body ?? {}), {
    headers: h,
    maxWait: options.maxWaitMs ?? 1_000,
    ...(options.expect ? { strategy: "count" as const, maxMessages: options.expect } : {}),
  });
  try {
    for await (const m of it) replies.push(decodeReply(m));
  } catch (err) {
    // No replica subscribed at all: nobody to answer, which the caller sees as zero replies.
    if (!(err instanceof errors.NoRespondersError)) throw err;
  }
  return replies;
}

function decodeReply(m: Msg): AdminReply {
  const code = m.headers?.get("Nats-Service-Error-Code");
  let body: Record<string, unknown>;
  try {
    body = m.json<Record<string, unknown>>();
  } catch {
    body = { raw: m.string() };
  }
  return { status: code ? Number(code) : undefined, body };
}

export interface HandoverCheck {
  readonly token: string;
  /** The bucket revision of the `handover` write. */
  readonly revision: number;
  readonly tenant: string;
  /** The pool the tenant leaves. */
  readonly from: string;
  /** The pool the tenant goes to. */
  readonly to: string;
  readonly timeoutMs: number;
  /** How long each round waits for replies: replicas slower than this are not counted. */
  readonly replyWaitMs?: number;
}

/**
 * Step 2 of a move: asks every replica (`aggregate-admin.all.status`) until every replica of the
 * two pools concerned has applied `revision` and the replicas of the `from` pool have none of the
 * tenant's commands in flight. (Other pools answer the tenant under neither revision, so their
 * view does not matter.) Resolves undefined when confirmed, or the last reason why not after
 * `timeoutMs`.
 */
export async function confirmHandover(nc: NatsConnection, check: HandoverCheck): Promise<string | undefined> {
  const deadline = Date.now() + check.timeoutMs;
  for (;;) {
    const replies = await adminRequest(
      nc,
      "all",
      AdminVerb.Status,
      { tenant_id: check.tenant },
      { token: check.token, maxWaitMs: check.replyWaitMs ?? 500 },
    );
    const problems: string[] = [];
    const concerned = replies.filter((r) => r.body["pool"] === check.from || r.body["pool"] === check.to);
    if (!replies.some((r) => r.body["pool"] === check.to)) {
      problems.push(`no replica of pool ${check.to} answered aggregate-admin.all.status`);
    }
    for (const r of concerned) {
      const b = r.body as {
        pool?: string;
        host?: string;
        pid?: number;
        placement?: { revision?: number; origin?: string };
        tenant_in_flight?: number;
        error?: { message?: string };
      };
      const who = `${b.pool}@${b.host}:${b.pid}`;
      if (r.status !== undefined) problems.push(`${who}: ${b.error?.message ?? `error ${r.status}`}`);
      else if ((b.placement?.revision ?? 0) < check.revision)
        problems.push(`${who} is at revision ${b.placement?.revision} (${b.placement?.origin})`);
      else if (b.pool === check.from && (b.tenant_in_flight ?? 0) > 0)
        problems.push(`${who} has ${b.tenant_in_flight} command(s) of the tenant in flight`);
    }
    if (problems.length === 0) return undefined;
    if (Date.now() >= deadline) return problems.join("; ");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export { AdminVerb } from "../naming/index.ts";

/**
 * Load generator child process: acts like a gateway. It sends `aggregate.<type>.submit`-style
 * requests (a fresh command id each, `x-tenant-id` set) with a bounded number in flight, times
 * each one with `performance.now()`, and counts error replies (`Nats-Service-Error-Code`) and
 * timeouts. Started by run.ts with `fork`; talks to it over IPC (see lib/protocol.ts).
 */
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { errors, headers as natsHeaders, type NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import type { DurationRun, FromChild, ListRun, RunResult, RunSpec, ToChild } from "./lib/protocol.ts";

let nc: NatsConnection | undefined;

function send(msg: FromChild): void {
  process.send?.(msg);
}

/** Growable Float64Array. */
class Samples {
  #buf = new Float64Array(4096);
  #n = 0;
  push(x: number): void {
    if (this.#n === this.#buf.length) {
      const next = new Float64Array(this.#buf.length * 2);
      next.set(this.#buf);
      this.#buf = next;
    }
    this.#buf[this.#n++] = x;
  }
  take(): Float64Array {
    return this.#buf.slice(0, this.#n);
  }
}

class Tally {
  ok = 0;
  completed = 0;
  timeouts = 0;
  unexpected = 0;
  readonly errors: Record<string, number> = {};
  readonly failures: Record<string, number> = {};
  readonly samples = new Map<string, Samples>();

  sample(label: string, ms: number): void {
    let s = this.samples.get(label);
    if (!s) this.samples.set(label, (s = new Samples()));
    s.push(ms);
  }

  result(elapsedMs: number): RunResult {
    const samples: Record<string, Float64Array> = {};
    for (const [label, s] of this.samples) samples[label] = s.take();
    return {
      ok: this.ok,
      completed: this.completed,
      errors: this.errors,
      timeouts: this.timeouts,
      failures: this.failures,
      unexpected: this.unexpected,
      elapsedMs,
      samples,
    };
  }
}

type Outcome =
  | { kind: "ok"; version: number | undefined }
  | { kind: "error"; code: string }
  | { kind: "timeout" }
  | { kind: "failure"; what: string };

function body(aggregateId: string): string {
  return `{"command_id":"${randomUUID()}","aggregate_id":"${aggregateId}","payload":{"type":"deposit","amount":1}}`;
}

async function request(
  conn: NatsConnection,
  spec: RunSpec,
  h: ReturnType<typeof natsHeaders>,
  aggregateId: string,
  wantVersion: boolean,
): Promise<Outcome> {
  try {
    const reply = await conn.request(spec.subject, body(aggregateId), {
      timeout: spec.timeoutMs,
      headers: h,
    });
    const code = reply.headers?.get("Nats-Service-Error-Code");
    if (code) return { kind: "error", code };
    return {
      kind: "ok",
      version: wantVersion ? (reply.json<{ version?: number }>().version ?? -1) : undefined,
    };
  } catch (err) {
    if (
      err instanceof errors.TimeoutError ||
      (err instanceof Error && err.cause instanceof errors.TimeoutError)
    ) {
      return { kind: "timeout" };
    }
    const what = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    return { kind: "failure", what };
  }
}

function count(t: Tally, o: Outcome): boolean {
  switch (o.kind) {
    case "ok":
      t.ok++;
      return true;
    case "error":
      t.errors[o.code] = (t.errors[o.code] ?? 0) + 1;
      return false;
    case "timeout":
      t.timeouts++;
      return false;
    case "failure":
      t.failures[o.what] = (t.failures[o.what] ?? 0) + 1;
      return false;
  }
}

function tenantHeaders(tenant: string): ReturnType<typeof natsHeaders> {
  const h = natsHeaders();
  h.set("x-tenant-id", tenant);
  return h;
}

async function runDuration(conn: NatsConnection, spec: DurationRun): Promise<RunResult> {
  const h = tenantHeaders(spec.tenant);
  const t = new Tally();
  const start = performance.now();
  const measureFrom = start + spec.warmupMs;
  const measureUntil = measureFrom + spec.durationMs;
  const slots = Math.max(1, Math.min(spec.inFlight, spec.aggregates.length));
  const slot = async (i: number) => {
    for (let j = i; ; j += slots) {
      if (j >= spec.aggregates.length) j = i;
      const sent = performance.now();
      if (sent >= measureUntil) return;
      const outcome = await request(conn, spec, h, spec.aggregates[j]!, false);
      const done = performance.now();
      // Errors and timeouts always count; successes only inside the window.
      if (outcome.kind !== "ok") {
        count(t, outcome);
        continue;
      }
      t.completed++;
      if (sent >= measureFrom && done <= measureUntil) {
        count(t, outcome);
        t.sample("all", done - sent);
      }
    }
  };
  await Promise.all(Array.from({ length: slots }, (_, i) => slot(i)));
  return t.result(spec.durationMs);
}

async function runList(conn: NatsConnection, spec: ListRun): Promise<RunResult> {
  const h = tenantHeaders(spec.tenant);
  const t = new Tally();
  let next = 0;
  const start = performance.now();
  const slot = async () => {
    for (;;) {
      const item = spec.items[next++];
      if (!item) return;
      const sent = performance.now();
      const outcome = await request(conn, spec, h, item.aggregateId, item.expectVersion !== undefined);
      const done = performance.now();
      if (count(t, outcome)) {
        t.completed++;
        t.sample(item.label, done - sent);
        if (
          outcome.kind === "ok" &&
          item.expectVersion !== undefined &&
          outcome.version !== item.expectVersion
        ) {
          t.unexpected++;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, spec.inFlight) }, () => slot()));
  return t.result(performance.now() - start);
}

process.on("message", (raw: ToChild) => {
  void (async () => {
    try {
      switch (raw.type) {
        case "connect":
          nc = await connect({
            servers: raw.natsUrl,
            noAsyncTraces: true,
            name: `bench-loadgen-${process.pid}`,
          });
          send({ type: "ready" });
          return;
        case "run": {
          if (!nc) throw new Error("run before connect");
          const result =
            raw.spec.mode === "duration" ? await runDuration(nc, raw.spec) : await runList(nc, raw.spec);
          send({ type: "result", id: raw.id, result });
          return;
        }
        case "exit":
          if (nc) await nc.drain().catch(() => undefined);
          process.disconnect();
          return;
      }
    } catch (err) {
      send({ type: "error", id: raw.type === "run" ? raw.id : undefined, message: String(err) });
    }
  })();
});
process.on("disconnect", () => process.exit(0));

/**
 * What this worker knows about its tenants: activity for `/admin/tenants`, and drains. A
 * draining tenant's new commands are refused with 503 Unavailable while its commands in flight
 * finish; `drain` resolves once none is left, so an operator knows when it is safe to move it.
 */
import { Unavailable, type AggregateError } from "../contract/index.ts";

/** Distinct aggregate ids remembered per tenant; beyond it the count is reported as capped. */
const AGGREGATES_PER_TENANT = 10_000;

export interface TenantActivity {
  readonly tenant_id: string;
  readonly aggregates_seen: number;
  readonly aggregates_seen_capped: boolean;
  readonly commands: number;
  readonly in_flight: number;
  readonly draining: boolean;
  /** ISO time of the last command. */
  readonly last_activity: string;
}

interface TenantState {
  aggregates: Set<string>;
  capped: boolean;
  commands: number;
  inFlight: number;
  lastActivity: number;
  waiters: Array<() => void>;
}

export interface TenantGate {
  /** Called when a command for `tenant` arrives: an error refuses it, otherwise `leave` must follow. */
  enter(tenant: string, aggregateId: string): AggregateError | undefined;
  leave(tenant: string): void;
  /** Refuses the tenant's new commands; resolves true once its in-flight ones finished, false on timeout. */
  drain(tenant: string, timeoutMs: number): Promise<boolean>;
  /** Accepts the tenant's commands again; true if it was draining. */
  undrain(tenant: string): boolean;
  isDraining(tenant: string): boolean;
  draining(): string[];
  tenants(): TenantActivity[];
}

export function createTenantGate(now: () => number = Date.now): TenantGate {
  const states = new Map<string, TenantState>();
  const draining = new Set<string>();

  const state = (tenant: string): TenantState => {
    let s = states.get(tenant);
    if (!s) {
      s = {
        aggregates: new Set(),
        capped: false,
        commands: 0,
        inFlight: 0,
        lastActivity: now(),
        waiters: [],
      };
      states.set(tenant, s);
    }
    return s;
  };

  return {
    enter(tenant, aggregateId) {
      if (draining.has(tenant)) {
        return new Unavailable(`tenant ${JSON.stringify(tenant)} is draining; retry later`, {
          tenant_id: tenant,
        });
      }
      const s = state(tenant);
      s.inFlight++;
      s.commands++;
      s.lastActivity = now();
      if (s.aggregates.size < AGGREGATES_PER_TENANT) s.aggregates.add(aggregateId);
      else if (!s.aggregates.has(aggregateId)) s.capped = true;
      return undefined;
    },
    leave(tenant) {
      const s = states.get(tenant);
      if (!s) return;
      s.inFlight--;
      if (s.inFlight === 0) for (const wake of s.waiters.splice(0)) wake();
    },
    async drain(tenant, timeoutMs) {
      draining.add(tenant);
      const s = states.get(tenant);
      if (!s || s.inFlight === 0) return true;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = await Promise.race([
        new Promise<boolean>((resolve) => s.waiters.push(() => resolve(true))),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), timeoutMs);
        }),
      ]);
      clearTimeout(timer);
      return done;
    },
    undrain: (tenant) => draining.delete(tenant),
    isDraining: (tenant) => draining.has(tenant),
    draining: () => [...draining].sort(),
    tenants: () =>
      [...states.entries()]
        .map(([tenant_id, s]) => ({
          tenant_id,
          aggregates_seen: s.aggregates.size,
          aggregates_seen_capped: s.capped,
          commands: s.commands,
          in_flight: s.inFlight,
          draining: draining.has(tenant_id),
          last_activity: new Date(s.lastActivity).toISOString(),
        }))
        .sort((a, b) => a.tenant_id.localeCompare(b.tenant_id)),
  };
}

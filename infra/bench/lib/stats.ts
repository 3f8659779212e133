/**
 * Small statistics helpers. Latency samples travel from the load generators to the parent as raw
 * `Float64Array`s (milliseconds, a few MB at most), so percentiles over several processes are
 * exact: merge the arrays, sort once, read the ranks.
 */

/** Concatenates sample arrays from several processes. */
export function mergeSamples(parts: readonly Float64Array[]): Float64Array {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Float64Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A sorted copy. */
export function sorted(samples: Float64Array | readonly number[]): Float64Array {
  return Float64Array.from(samples).sort();
}

/** Percentile (0..100) of an ascending array, nearest rank; NaN when empty. */
export function percentile(ascending: Float64Array, p: number): number {
  if (ascending.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * ascending.length);
  return ascending[Math.min(ascending.length - 1, Math.max(0, rank - 1))]!;
}

export interface LatencySummary {
  readonly count: number;
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

export function summarize(samples: Float64Array): LatencySummary {
  const s = sorted(samples);
  let sum = 0;
  for (const x of s) sum += x;
  return {
    count: s.length,
    mean: s.length ? sum / s.length : NaN,
    p50: percentile(s, 50),
    p90: percentile(s, 90),
    p99: percentile(s, 99),
    max: s.length ? s[s.length - 1]! : NaN,
  };
}

/** A value measured once per repetition, with its median and range. */
export interface Repeated {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly values: readonly number[];
}

export function repeated(values: readonly number[]): Repeated {
  const finite = values.filter((v) => Number.isFinite(v));
  const s = sorted(finite);
  const n = s.length;
  const median = n === 0 ? NaN : n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
  return { median, min: n ? s[0]! : NaN, max: n ? s[n - 1]! : NaN, values: [...values] };
}

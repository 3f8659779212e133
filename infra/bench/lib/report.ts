/** The printed table and the JSON result file. */
import type { Repeated } from "./stats.ts";

export type Verdict = "PASS" | "MISS" | "n/a";

/** One target of issue 6, with what this run measured. */
export interface TargetCheck {
  readonly name: string;
  /** Human text of the goal, e.g. "≥ 0.80". */
  readonly goal: string;
  /** The measured value the goal is checked against. */
  readonly value: number;
  readonly unit: string;
  readonly verdict: Verdict;
  /** What the value is made of, e.g. "3010 / 6902 req/s". */
  readonly detail: string;
}

export function check(
  name: string,
  value: number,
  goal: { op: "≥" | "≤" | "="; limit: number },
  unit: string,
  detail: string,
  applicable = true,
): TargetCheck {
  const ok =
    goal.op === "≥" ? value >= goal.limit : goal.op === "≤" ? value <= goal.limit : value === goal.limit;
  return {
    name,
    goal: `${goal.op} ${fmt(goal.limit)}${unit && unit !== "×" ? ` ${unit}` : ""}`,
    value,
    unit,
    verdict: !applicable || !Number.isFinite(value) ? "n/a" : ok ? "PASS" : "MISS",
    detail,
  };
}

export function fmt(x: number, digits?: number): string {
  if (!Number.isFinite(x)) return "–";
  const a = Math.abs(x);
  const d = digits ?? (Number.isInteger(x) || a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : a >= 1 ? 2 : 3);
  return x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
}

export function range(r: Repeated, digits?: number): string {
  return `${fmt(r.min, digits)}–${fmt(r.max, digits)}`;
}

export interface Row {
  readonly metric: string;
  readonly median: string;
  readonly range: string;
  readonly note?: string;
}

/** A plain-text table with aligned columns. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === 0 || i === cells.length - 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

/**
 * Compares two bench result files: every median (and memory figure) side by side with the
 * change, then the targets' verdicts.
 *
 *   npx tsx infra/bench/compare.ts infra/bench/results/<old>.json [infra/bench/results/latest.json]
 *
 * A change is flagged (!) when it exceeds the wider of the two runs' own min–max spreads, i.e. it
 * is larger than the noise either run saw between its repetitions.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fmt, table } from "./lib/report.ts";

interface Repeated {
  median: number;
  min: number;
  max: number;
}

interface TargetLike {
  name: string;
  value: number;
  verdict: string;
}

interface ResultFile {
  mode: string;
  startedAt: string;
  machine: Record<string, unknown>;
  scenarios: Record<string, unknown>;
  targets: TargetLike[];
}

function isRepeated(x: unknown): x is Repeated {
  return typeof x === "object" && x !== null && "median" in x && "min" in x && "max" in x;
}

/** Every Repeated (by path) and every plain number under memory, flattened. */
function flatten(x: unknown, prefix: string, out: Map<string, Repeated>): void {
  if (isRepeated(x)) {
    out.set(prefix, x);
    return;
  }
  if (Array.isArray(x)) {
    (x as unknown[]).forEach((item, i) => {
      const size =
        typeof item === "object" && item !== null ? (item as { cacheSize?: number }).cacheSize : undefined;
      const label = size === undefined ? String(i) : `cache ${String(size)}`;
      flatten(item, `${prefix}[${label}]`, out);
    });
    return;
  }
  if (typeof x === "object" && x !== null) {
    for (const [k, v] of Object.entries(x)) {
      if (k === "health" || k === "seed" || k === "profile") continue;
      if (typeof v === "number" && /Bytes$|cached$|PerSec$/.test(k)) {
        out.set(`${prefix}.${k}`, { median: v, min: v, max: v });
      } else flatten(v, prefix ? `${prefix}.${k}` : k, out);
    }
  }
}

async function load(file: string): Promise<ResultFile> {
  return JSON.parse(await readFile(file, "utf8")) as ResultFile;
}

async function main(): Promise<void> {
  const [aFile, bFile = path.join(import.meta.dirname, "results", "latest.json")] = process.argv.slice(2);
  if (!aFile) {
    console.error(
      "usage: npx tsx infra/bench/compare.ts <before.json> [after.json, default results/latest.json]",
    );
    process.exit(2);
  }
  const [a, b] = await Promise.all([load(aFile), load(bFile)]);
  console.log(
    `before: ${aFile} (${a.mode}, ${a.startedAt}, load ${JSON.stringify(a.machine["loadavgStart"])})`,
  );
  console.log(
    `after:  ${bFile} (${b.mode}, ${b.startedAt}, load ${JSON.stringify(b.machine["loadavgStart"])})`,
  );
  if (a.mode !== b.mode) console.log("! the runs used different modes (quick/full): data set sizes differ");

  const fa = new Map<string, Repeated>();
  const fb = new Map<string, Repeated>();
  flatten(a.scenarios, "", fa);
  flatten(b.scenarios, "", fb);
  const rows: string[][] = [];
  for (const key of new Set([...fa.keys(), ...fb.keys()])) {
    const x = fa.get(key);
    const y = fb.get(key);
    const change = x && y && x.median !== 0 ? (y.median - x.median) / Math.abs(x.median) : NaN;
    const spread = (r: Repeated | undefined) => (r ? r.max - r.min : 0);
    // Single values (memory) have no spread of their own: they are never flagged.
    const widest = Math.max(spread(x), spread(y));
    const noisy = !x || !y || widest === 0 || Math.abs(y.median - x.median) <= widest;
    rows.push([
      key,
      x ? fmt(x.median) : "–",
      y ? fmt(y.median) : "–",
      Number.isFinite(change) ? `${change >= 0 ? "+" : ""}${(change * 100).toFixed(1)}%` : "",
      noisy ? "" : "!",
    ]);
  }
  console.log(`\n${table(["metric", "before", "after", "change", ""], rows)}`);

  const targets = new Map<string, { a?: TargetLike; b?: TargetLike }>();
  for (const t of a.targets) targets.set(t.name, { a: t });
  for (const t of b.targets) targets.set(t.name, { ...targets.get(t.name), b: t });
  const trows = [...targets.entries()].map(([name, { a: ta, b: tb }]) => [
    name,
    ta ? `${fmt(ta.value)} ${ta.verdict}` : "–",
    tb ? `${fmt(tb.value)} ${tb.verdict}` : "–",
  ]);
  console.log(`\n${table(["target", "before", "after"], trows)}`);
}

await main();

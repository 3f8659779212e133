/**
 * Prints the functions with the most self time in a V8 CPU profile (`node --cpu-prof`), and the
 * self time per source file. Usage: npx tsx infra/bench/profile-top.ts <file.cpuprofile> [rows]
 */
import { readFile } from "node:fs/promises";
import path from "node:path";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface TopEntry {
  readonly name: string;
  readonly where: string;
  readonly selfMs: number;
  readonly share: number;
}

/**
 * Self time per function (name + file + line), per file and per area, from sample deltas. Shares
 * are of the busy time: idle samples are left out.
 */
export function topFunctions(
  profile: Profile,
  rows = 25,
): { functions: TopEntry[]; files: TopEntry[]; areas: TopEntry[]; busyMs: number; idleMs: number } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    // timeDeltas[i] is the time before sample i; attribute the next delta to sample i.
    const dt = (deltas[i + 1] ?? 0) / 1000;
    self.set(samples[i]!, (self.get(samples[i]!) ?? 0) + dt);
  }
  let idle = 0;
  for (const [id, ms] of self) if (byId.get(id)?.callFrame.functionName === "(idle)") idle += ms;
  const total = [...self.values()].reduce((a, b) => a + b, 0) - idle;
  const fn = new Map<string, { name: string; where: string; ms: number }>();
  const file = new Map<string, number>();
  const area = new Map<string, number>();
  for (const [id, ms] of self) {
    const n = byId.get(id);
    if (!n || n.callFrame.functionName === "(idle)") continue;
    const url = n.callFrame.url;
    const a = areaOf(n.callFrame.functionName, url);
    area.set(a, (area.get(a) ?? 0) + ms);
    const short = url ? shorten(url) : "(native)";
    const name = n.callFrame.functionName || "(anonymous)";
    const key = `${name}@${short}:${n.callFrame.lineNumber + 1}`;
    const e = fn.get(key) ?? { name, where: url ? `${short}:${n.callFrame.lineNumber + 1}` : "", ms: 0 };
    e.ms += ms;
    fn.set(key, e);
    file.set(short, (file.get(short) ?? 0) + ms);
  }
  const functions = [...fn.values()]
    .sort((a, b) => b.ms - a.ms)
    .slice(0, rows)
    .map((e) => ({ name: e.name, where: e.where, selfMs: e.ms, share: e.ms / total }));
  const files = [...file.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, rows)
    .map(([f, ms]) => ({ name: f, where: "", selfMs: ms, share: ms / total }));
  const areas = [...area.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([f, ms]) => ({ name: f, where: "", selfMs: ms, share: ms / total }));
  return { functions, files, areas, busyMs: total, idleMs: idle };
}

/** A coarse owner of a sample: which part of the stack the time belongs to. */
function areaOf(name: string, url: string): string {
  if (url.startsWith("wasm:")) return "QuickJS (wasm)";
  if (name === "(garbage collector)") return "garbage collector";
  if (name === "(program)") return "V8 (program)";
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1]!;
  if (url.startsWith("node:")) return "node internals";
  if (!url) return `native: ${name}`;
  const shared = /\/shared\/([^/]+)\//.exec(url);
  if (shared) return `shared/${shared[1]}`;
  return path.basename(url);
}

function shorten(url: string): string {
  const p = url.replace(/^file:\/\//, "");
  const nm = p.lastIndexOf("node_modules/");
  if (nm >= 0) return p.slice(nm + "node_modules/".length);
  const rel = path.relative(process.cwd(), p);
  return rel.startsWith("..") ? p : rel;
}

async function main(): Promise<void> {
  const [file, rowsArg] = process.argv.slice(2);
  if (!file) {
    console.error("usage: npx tsx infra/bench/profile-top.ts <file.cpuprofile> [rows]");
    process.exit(2);
  }
  const profile = JSON.parse(await readFile(file, "utf8")) as Profile;
  const { functions, files, areas, busyMs, idleMs } = topFunctions(profile, Number(rowsArg ?? 25));
  console.log(
    `busy ${busyMs.toFixed(0)} ms, idle ${idleMs.toFixed(0)} ms (shares below are of the busy time)`,
  );
  console.log("\nself time by area");
  for (const e of areas)
    console.log(
      `${(e.share * 100).toFixed(1).padStart(5)}%  ${e.selfMs.toFixed(0).padStart(7)} ms  ${e.name}`,
    );
  console.log("\nself time by function");
  for (const e of functions) {
    console.log(
      `${(e.share * 100).toFixed(1).padStart(5)}%  ${e.selfMs.toFixed(0).padStart(7)} ms  ${e.name}  ${e.where}`,
    );
  }
  console.log("\nself time by file");
  for (const e of files)
    console.log(
      `${(e.share * 100).toFixed(1).padStart(5)}%  ${e.selfMs.toFixed(0).padStart(7)} ms  ${e.name}`,
    );
}

if (import.meta.url === `file://${process.argv[1]}`) await main();

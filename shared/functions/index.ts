/**
 * The functions loader (CONTRACT.md §5): every folder of the functions directory is one
 * aggregate type, named by the folder and described by its `manifest.yaml`. Anything wrong
 * stops start-up with one line that names the file.
 */
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import * as v from "valibot";
import { parse as parseYaml } from "yaml";
import { jsonDepthExceeds, parseAggregateType, type AggregateType } from "../contract/index.ts";
import type { Config } from "../config/index.ts";
import type { CompiledModule, ProgramLimits, ProgramSource } from "../sandbox/types.ts";

/** `functions/<type>/manifest.yaml`. Unknown keys are refused so that a typo is not silently ignored. */
export const Manifest = v.strictObject({
  /** ES module exporting `decide(state, command, context)`. */
  decide: v.pipe(v.string(), v.minLength(1)),
  /** ES module exporting `apply(state, event)`; may be the same file as decide. */
  apply: v.pipe(v.string(), v.minLength(1)),
  description: v.optional(v.string()),
  initial_state: v.optional(
    v.custom<unknown>((x) => x !== undefined && !jsonDepthExceeds(x, 64), "initial_state must be JSON"),
    {},
  ),
  snapshot_threshold: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1_000_000))),
  /**
   * Content hashes (or unique prefixes of at least 12 hex digits) of earlier apply programs whose
   * snapshots this apply program can continue from. Without it, a snapshot made by another apply
   * version is not trusted and the aggregate is rebuilt from its events.
   */
  compatible_apply: v.optional(
    v.array(v.pipe(v.string(), v.regex(/^[0-9a-f]{12,64}$/, "must be 12 to 64 hex digits"))),
    [],
  ),
  /**
   * Fields of the state the query read model indexes, `dotted.path: number | string`: each gets
   * a typed index, and only these can be sorted on (issue 7; see shared/query).
   */
  query_fields: v.optional(
    v.record(
      v.pipe(
        v.string(),
        v.regex(
          /^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,7}$/,
          "must be a dotted field path",
        ),
      ),
      v.picklist(["number", "string"], "must be number or string"),
    ),
    {},
  ),
  limits: v.optional(
    v.strictObject({
      timeout_ms: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(60_000))),
      memory_mb: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1024))),
    }),
  ),
});
export type Manifest = v.InferOutput<typeof Manifest>;

/** The loader's defaults and caps as the service configures them. */
export function functionDefaults(config: Config): FunctionDefaults {
  return {
    snapshotThreshold: config.snapshotThreshold,
    timeoutMs: config.programTimeoutMs,
    memoryMb: config.programMemoryMb,
    maxTimeoutMs: config.programMaxTimeoutMs,
    maxMemoryMb: config.programMaxMemoryMb,
  };
}

export interface FunctionDefaults {
  readonly snapshotThreshold: number;
  readonly timeoutMs: number;
  readonly memoryMb: number;
  /** The most a manifest's `limits.timeout_ms` may ask for (AGGREGATE_PROGRAM_MAX_TIMEOUT_MS); none when absent. */
  readonly maxTimeoutMs?: number;
  /** The most a manifest's `limits.memory_mb` may ask for (AGGREGATE_PROGRAM_MAX_MEMORY_MB); none when absent. */
  readonly maxMemoryMb?: number;
}

/** One loaded aggregate type, ready for the sandbox. */
export interface FunctionDefinition {
  readonly type: AggregateType;
  readonly dir: string;
  readonly manifest: Manifest;
  readonly source: ProgramSource;
  /** JSON text of the initial state. */
  readonly initialState: string;
  readonly snapshotThreshold: number;
}

export class FunctionsError extends Error {
  override readonly name = "FunctionsError";
}

export type Compile = (file: string) => Promise<CompiledModule>;

/** Loads every aggregate type under `dir`. */
export async function loadFunctions(
  dir: string,
  defaults: FunctionDefaults,
  compile: Compile,
): Promise<FunctionDefinition[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    throw new FunctionsError(`functions directory ${dir} cannot be read: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const folders = entries
    .filter((e) => e.isDirectory() && !e.name.startsWith("."))
    .map((e) => e.name)
    .sort();
  if (folders.length === 0) {
    throw new FunctionsError(
      `functions directory ${dir} holds no aggregate type: add a folder with a manifest.yaml (see functions/bank-account)`,
    );
  }
  const loaded: FunctionDefinition[] = [];
  for (const folder of folders) loaded.push(await loadOne(path.join(dir, folder), folder, defaults, compile));
  return loaded;
}

async function loadOne(
  dir: string,
  folder: string,
  defaults: FunctionDefaults,
  compile: Compile,
): Promise<FunctionDefinition> {
  const type = parseAggregateType(folder);
  if (type === undefined) {
    throw new FunctionsError(
      `${dir}: folder name ${JSON.stringify(folder)} is not a valid aggregate type (^[A-Za-z][A-Za-z0-9_-]{0,63}$)`,
    );
  }
  const manifestFile = path.join(dir, "manifest.yaml");
  let text;
  try {
    text = await readFile(manifestFile, "utf8");
  } catch (err) {
    throw new FunctionsError(`${manifestFile}: cannot be read: ${(err as Error).message}`, { cause: err });
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new FunctionsError(`${manifestFile}: not valid YAML: ${oneLine((err as Error).message)}`, {
      cause: err,
    });
  }
  const parsed = v.safeParse(Manifest, raw);
  if (!parsed.success) {
    const problems = parsed.issues.map((i) => `${v.getDotPath(i) ?? "(root)"}: ${i.message}`).join("; ");
    throw new FunctionsError(`${manifestFile}: invalid manifest: ${problems}`);
  }
  const manifest = parsed.output;
  const limits: ProgramLimits = {
    timeoutMs: manifest.limits?.timeout_ms ?? defaults.timeoutMs,
    memoryMb: manifest.limits?.memory_mb ?? defaults.memoryMb,
  };
  const capped: Array<[key: string, value: number, cap: number | undefined, setting: string]> = [
    ["timeout_ms", limits.timeoutMs, defaults.maxTimeoutMs, "AGGREGATE_PROGRAM_MAX_TIMEOUT_MS"],
    ["memory_mb", limits.memoryMb, defaults.maxMemoryMb, "AGGREGATE_PROGRAM_MAX_MEMORY_MB"],
  ];
  for (const [key, value, cap, setting] of capped) {
    if (cap !== undefined && value > cap) {
      throw new FunctionsError(
        `${manifestFile}: limits.${key} ${value} is above the service's cap ${setting}=${cap}`,
      );
    }
  }
  const decide = await compileInside(dir, manifestFile, "decide", manifest.decide, compile);
  const apply =
    manifest.apply === manifest.decide
      ? decide
      : await compileInside(dir, manifestFile, "apply", manifest.apply, compile);
  return {
    type,
    dir,
    manifest,
    source: { name: type, decide, apply, limits },
    initialState: JSON.stringify(manifest.initial_state),
    snapshotThreshold: manifest.snapshot_threshold ?? defaults.snapshotThreshold,
  };
}

async function compileInside(
  dir: string,
  manifestFile: string,
  key: string,
  file: string,
  compile: Compile,
): Promise<CompiledModule> {
  const full = path.resolve(dir, file);
  const relative = path.relative(dir, full);
  if (relative.startsWith("..") || path.isAbsolute(relative)) {
    throw new FunctionsError(
      `${manifestFile}: ${key} must name a file inside ${dir}, not ${JSON.stringify(file)}`,
    );
  }
  const info = await stat(full).catch(() => undefined);
  if (!info?.isFile()) {
    throw new FunctionsError(`${manifestFile}: ${key} names ${full}, which does not exist`);
  }
  try {
    return await compile(full);
  } catch (err) {
    throw new FunctionsError(`${full}: ${oneLine((err as Error).message)}`, { cause: err });
  }
}

function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, " ").trim();
}

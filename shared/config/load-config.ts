import { readFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import * as v from "valibot";
import { parseDocument } from "yaml";
import { ConfigError, type ConfigProblem } from "./config-error.ts";
import {
  CONFIG_ENV_VARS,
  CONFIG_FIELDS,
  CONFIG_FILE,
  FIELD_KINDS,
  SECRET_FIELDS,
  type FieldKind,
} from "./fields.ts";
import { REDACTED, redactUrlCredentials } from "./nats-url.ts";
import { Config, type ConfigField } from "./schema.ts";

/** Where `loadConfig` reads from. Both default to the process's own; tests pass their own. */
export interface LoadConfigOptions {
  /** The environment; default `process.env`. Never written to. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** The directory relative paths are resolved against; default `process.cwd()`. */
  readonly cwd?: string;
}

/**
 * Reads the configuration once: defaults < YAML file < environment, validated as a whole,
 * deep-frozen. Throws a `ConfigError` listing every problem found.
 *
 * - The YAML file is `AGGREGATE_CONFIG` when set (it must then exist), else `<cwd>/aggregate.yaml`
 *   when present. Its keys are the snake_case setting names (`CONFIG_ENV_VARS[field].yaml`);
 *   an unknown key is an error. A key with an empty (null) value counts as absent.
 * - Environment values are text. Integers must be plain decimal (`"10abc"`, `"1e3"`, `" 10"` and
 *   `""` are errors). For the optional settings (NATS URL, creds, user, password, admin token,
 *   logger socket) and for `AGGREGATE_CONFIG`, an empty value is the same as an unset one, so
 *   the YAML value or the default applies: `FOO=` in a compose file does not switch anything on.
 *   Every other setting takes an empty value literally, so `AGGREGATE_DEFAULT_TENANT=` selects
 *   the empty default tenant and `AGGREGATE_LOG_LEVEL=` is an error.
 * - `nats_url` in YAML may be a list or a comma-separated string.
 * - `storagePath`, `functionsDir`, `natsCreds`, `placementFile` and the `AGGREGATE_CONFIG` path are resolved
 *   against `cwd` (also when they come from a YAML file elsewhere); `loggerSocket` is kept as given
 *   because unix socket paths have a short length limit.
 */
export function loadConfig(options: LoadConfigOptions = {}): Config {
  const env = options.env ?? process.env;
  const cwd = resolve(options.cwd ?? process.cwd());
  const problems: ConfigProblem[] = [];
  const file = readConfigFile(env, cwd, problems);

  const origins = new Map<ConfigField, Origin>();
  const input: Record<string, unknown> = {};
  for (const field of CONFIG_FIELDS) {
    const { env: name, yaml: key } = CONFIG_ENV_VARS[field];
    const kind = FIELD_KINDS[field];
    const text = env[name];
    const fromEnv = text === undefined ? undefined : decodeEnv(kind, text);
    if (fromEnv !== undefined) {
      input[field] = fromEnv;
      origins.set(field, { key: name, raw: text });
      continue;
    }
    const raw = file?.values.get(key);
    const fromFile = raw === undefined ? undefined : decodeYaml(kind, raw);
    if (fromFile !== undefined && file !== undefined) {
      input[field] = fromFile;
      origins.set(field, { key, raw, file: file.path });
      continue;
    }
    // Every key is present so that `natsUrls` (required, possibly undefined) validates.
    input[field] = undefined;
  }

  const result = v.safeParse(Config, input, { abortEarly: false });
  if (result.issues !== undefined) {
    for (const issue of result.issues) problems.push(describeIssue(issue, origins));
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(dedupe(problems));

  const config = result.output;
  return deepFreeze({
    ...config,
    storagePath: resolve(cwd, config.storagePath),
    functionsDir: resolve(cwd, config.functionsDir),
    natsCreds: config.natsCreds === undefined ? undefined : resolve(cwd, config.natsCreds),
    placementFile: config.placementFile === undefined ? undefined : resolve(cwd, config.placementFile),
  });
}

/** Where a setting's winning value came from, for error messages. */
interface Origin {
  /** The env var name or YAML key. */
  readonly key: string;
  /** The value as written, before decoding. */
  readonly raw: unknown;
  /** The YAML file; absent for the environment. */
  readonly file?: string;
}

interface ConfigFile {
  readonly path: string;
  /** Top-level YAML values by key; only known keys, nulls left out. */
  readonly values: ReadonlyMap<string, unknown>;
}

/** `undefined` means "unset": the next layer down applies. */
function decodeEnv(kind: FieldKind, text: string): unknown {
  switch (kind) {
    case "bool":
      return text === "true" || text === "1" ? true : text === "false" || text === "0" ? false : text;
    case "int":
      // Anything but plain decimal stays text; validation then reports it with the field's range.
      return /^-?[0-9]+$/.test(text) ? Number(text) : text;
    case "list":
      return text === "" ? undefined : splitList(text);
    case "optional":
      return text === "" ? undefined : text;
    case "text":
      return text;
  }
}

/** `undefined` means "unset". YAML values keep their type, so `"100"` is not an integer. */
function decodeYaml(kind: FieldKind, raw: unknown): unknown {
  if (raw === null) return undefined;
  switch (kind) {
    case "list":
      if (typeof raw === "string") return raw === "" ? undefined : splitList(raw);
      return raw;
    case "optional":
      return raw === "" ? undefined : raw;
    case "bool":
    case "int":
    case "text":
      return raw;
  }
}

function splitList(text: string): string[] {
  return text.split(",").map((entry) => entry.trim());
}

const YAML_KEYS: ReadonlyMap<string, ConfigField> = new Map(
  CONFIG_FIELDS.map((field) => [CONFIG_ENV_VARS[field].yaml, field]),
);

function readConfigFile(
  env: Readonly<Record<string, string | undefined>>,
  cwd: string,
  problems: ConfigProblem[],
): ConfigFile | undefined {
  const named = env[CONFIG_FILE.env];
  const explicit = named !== undefined && named !== "";
  const path = explicit ? resolve(cwd, named) : join(cwd, CONFIG_FILE.defaultName);

  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" && !explicit) return undefined;
    const reason = code === "ENOENT" ? "file not found" : `cannot read the file (${code ?? String(err)})`;
    problems.push(
      explicit
        ? {
            key: CONFIG_FILE.env,
            value: quote(named),
            reason: isAbsolute(named) ? reason : `${reason}: ${path}`,
          }
        : { file: path, reason },
    );
    return undefined;
  }

  const doc = parseDocument(text);
  if (doc.errors.length > 0) {
    for (const error of doc.errors) {
      problems.push({ file: path, reason: `invalid YAML: ${firstLine(error.message)}` });
    }
    return undefined;
  }
  let data: unknown;
  try {
    data = doc.toJS();
  } catch (err) {
    // e.g. too many alias expansions
    problems.push({
      file: path,
      reason: `invalid YAML: ${firstLine(err instanceof Error ? err.message : String(err))}`,
    });
    return undefined;
  }
  if (data === null || data === undefined) return { path, values: new Map() };
  if (typeof data !== "object" || Array.isArray(data)) {
    problems.push({ file: path, reason: "must be a mapping of settings (key: value)" });
    return undefined;
  }

  const values = new Map<string, unknown>();
  for (const [key, value] of Object.entries(data)) {
    if (YAML_KEYS.has(key)) {
      values.set(key, value);
    } else {
      const suggestion = suggestKey(key);
      problems.push({
        file: path,
        key: /^[\w.-]{1,100}$/.test(key) ? key : quote(key),
        reason: suggestion === undefined ? "unknown key" : `unknown key, did you mean "${suggestion}"?`,
      });
    }
  }
  return { path, values };
}

function describeIssue(
  issue: v.BaseIssue<unknown>,
  origins: ReadonlyMap<ConfigField, Origin>,
): ConfigProblem {
  const first = issue.path?.[0]?.key;
  const field = typeof first === "string" && first in CONFIG_ENV_VARS ? (first as ConfigField) : undefined;
  const origin = field === undefined ? undefined : origins.get(field);
  if (field === undefined || origin === undefined) {
    // A default failed its own rule or an issue without a field: a bug here, still reported.
    return { key: field === undefined ? "config" : CONFIG_ENV_VARS[field].env, reason: issue.message };
  }
  const value = SECRET_FIELDS.has(field)
    ? REDACTED
    : quote(field === "natsUrls" ? redactUrls(origin.raw) : origin.raw);
  return origin.file === undefined
    ? { key: origin.key, value, reason: issue.message }
    : { file: origin.file, key: origin.key, value, reason: issue.message };
}

function redactUrls(raw: unknown): unknown {
  if (typeof raw === "string") return raw.split(",").map(redactUrlCredentials).join(",");
  if (Array.isArray(raw))
    return (raw as unknown[]).map((entry: unknown) =>
      typeof entry === "string" ? redactUrlCredentials(entry) : entry,
    );
  return raw;
}

const MAX_SHOWN = 100;

/** A value as shown in an error: JSON, so strings are quoted and CR/LF cannot break the line; cut to 100 characters. */
function quote(value: unknown): string {
  if (typeof value === "string") {
    const chars = Array.from(value);
    return chars.length > MAX_SHOWN
      ? `${JSON.stringify(chars.slice(0, MAX_SHOWN).join(""))}…`
      : JSON.stringify(value);
  }
  let shown: string;
  try {
    shown = JSON.stringify(value) ?? String(value);
  } catch {
    shown = String(value);
  }
  const chars = Array.from(shown);
  return chars.length > MAX_SHOWN ? `${chars.slice(0, MAX_SHOWN).join("")}…` : shown;
}

function firstLine(text: string): string {
  return text.split("\n", 1)[0] ?? text;
}

function dedupe(problems: readonly ConfigProblem[]): ConfigProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const id = JSON.stringify([p.file, p.key, p.value, p.reason]);
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}

/** The YAML key an unknown key was probably meant to be: camelCase, env var names, small typos. */
function suggestKey(key: string): string | undefined {
  const normalized = key
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/-/g, "_")
    .toLowerCase()
    .replace(/^aggregate_/, "");
  if (YAML_KEYS.has(normalized)) return normalized;
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of YAML_KEYS.keys()) {
    const distance = editDistance(normalized, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

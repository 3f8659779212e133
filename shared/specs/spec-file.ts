/**
 * Decider specifications as data: `functions/<type>/specs/*.yaml` (or `.yml`, `.json`), each a
 * list of specs in the given / when / then form (Emmett's DeciderSpecification, written down):
 *
 * ```yaml
 * - name: a deposit adds to the balance
 *   given:                                  # events, as decide returns them; optional
 *     - { type: opened, initial_balance: 100 }
 *   when: { type: deposit, amount: 50 }     # the command's payload
 *   context: { tenant_id: acme }            # optional: decide's context fields
 *   then:                                   # the events decide returns ...
 *     - { type: deposited, amount: 50 }
 * - name: withdrawing more than the balance is refused
 *   given: [{ type: opened, initial_balance: 10 }]
 *   when: { type: withdraw, amount: 11 }
 *   then:
 *     error: { code: DecideError, message: insufficient funds }   # ... or the error it fails with
 * ```
 *
 * `then` may also be `{ events: [...], state: {...} }` to check the state after the events.
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import * as v from "valibot";
import { parse as parseYaml } from "yaml";
import { jsonDepthExceeds, type JsonObject } from "../contract/index.ts";

const isJsonObject = (x: unknown): x is JsonObject =>
  x !== null && typeof x === "object" && !Array.isArray(x) && !jsonDepthExceeds(x, 64);

const JsonObjectSchema = v.custom<JsonObject>(isJsonObject, "must be a JSON object");

/** An event as decide returns it: an object with a string `type`. */
const SpecEvent = v.custom<JsonObject>(
  (x) => isJsonObject(x) && typeof x["type"] === "string",
  "must be an event: an object with a string type",
);

/** The error codes a decide call can fail with. */
export const SpecErrorCode = {
  DecideError: "DecideError",
  ApplyError: "ApplyError",
  ProgramError: "ProgramError",
} as const;
export type SpecErrorCode = (typeof SpecErrorCode)[keyof typeof SpecErrorCode];
const ERROR_CODES = Object.values(SpecErrorCode);

/** The expected failure. `message` is compared exactly when given; so is `reason` (ProgramError). */
export const ExpectedError = v.strictObject({
  code: v.picklist(ERROR_CODES, `must be one of ${ERROR_CODES.join(", ")}`),
  message: v.optional(v.string()),
  reason: v.optional(v.string()),
});
export type ExpectedError = v.InferOutput<typeof ExpectedError>;

/** What the spec expects of the decide call. */
export const Then = v.union(
  [
    v.array(SpecEvent),
    v.strictObject({ error: ExpectedError }),
    v.strictObject({ events: v.array(SpecEvent), state: v.optional(JsonObjectSchema) }),
  ],
  "must be a list of events, { error: { code, message? } } or { events, state? }",
);
export type Then = v.InferOutput<typeof Then>;

/** decide's context fields a spec may set; the rest get fixed values (see run-specs.ts). */
export const SpecContext = v.strictObject({
  tenant_id: v.optional(v.string()),
  aggregate_id: v.optional(v.string()),
  command_id: v.optional(v.string()),
  version: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  metadata: v.optional(JsonObjectSchema),
});
export type SpecContext = v.InferOutput<typeof SpecContext>;

/** One specification. */
export const DeciderSpec = v.strictObject({
  name: v.pipe(v.string(), v.minLength(1, "must not be empty")),
  given: v.optional(v.array(SpecEvent), []),
  when: JsonObjectSchema,
  context: v.optional(SpecContext),
  then: Then,
});
export type DeciderSpec = v.InferOutput<typeof DeciderSpec>;

/** A spec with where it was written. */
export interface LoadedSpec {
  readonly spec: DeciderSpec;
  /** The file, relative to the type's folder (`specs/withdraw.yaml`). */
  readonly file: string;
  /** 1-based position in the file. */
  readonly index: number;
}

export class SpecFileError extends Error {
  override readonly name = "SpecFileError";
}

const SPEC_FILE = /\.(ya?ml|json)$/;

/** Every spec of one aggregate type's folder, files in name order; none when it has no `specs` folder. */
export async function loadSpecs(typeDir: string): Promise<LoadedSpec[]> {
  const dir = path.join(typeDir, "specs");
  let names: string[];
  try {
    names = (await readdir(dir)).filter((name) => SPEC_FILE.test(name)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new SpecFileError(`${dir}: cannot be read: ${(err as Error).message}`, { cause: err });
  }
  const loaded: LoadedSpec[] = [];
  for (const name of names) loaded.push(...(await loadSpecFile(path.join(dir, name), `specs/${name}`)));
  return loaded;
}

/** The specs of one file; throws SpecFileError naming the file (and the spec) on any problem. */
export async function loadSpecFile(file: string, shownAs = file): Promise<LoadedSpec[]> {
  let raw: unknown;
  try {
    raw = parseYaml(await readFile(file, "utf8"));
  } catch (err) {
    throw new SpecFileError(`${file}: not valid YAML/JSON: ${(err as Error).message.split("\n")[0]}`, {
      cause: err,
    });
  }
  if (!Array.isArray(raw)) throw new SpecFileError(`${file}: must be a list of specs`);
  return raw.map((entry: unknown, i) => {
    const parsed = v.safeParse(DeciderSpec, entry);
    if (!parsed.success) {
      const name = (entry as { name?: unknown } | null)?.name;
      const problems = parsed.issues.map((issue) => `${v.getDotPath(issue) ?? "(spec)"}: ${issue.message}`);
      throw new SpecFileError(
        `${file}: spec ${i + 1}${typeof name === "string" ? ` (${name})` : ""}: ${problems.join("; ")}`,
      );
    }
    return { spec: parsed.output, file: shownAs, index: i + 1 };
  });
}

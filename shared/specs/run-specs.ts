/**
 * Runs decider specs against a loaded program, in the sandbox the service uses: the given events
 * are folded into the type's initial state with `applyAll`, the command is decided with
 * `decide`, and the outcome is compared with `then` as JSON (key order does not matter).
 */
import { isAggregateError } from "../contract/index.ts";
import type { AggregateProgram, DecideContext } from "../sandbox/index.ts";
import { diffLines, formatValue, sameJson } from "./diff.ts";
import { loadSpecs, type DeciderSpec, type LoadedSpec } from "./spec-file.ts";

/** One aggregate type to check. */
export interface SpecTarget {
  readonly type: string;
  /** The type's folder (`functions/<type>`), which holds `specs/`. */
  readonly dir: string;
  /** JSON text of the initial state (the manifest's `initial_state`). */
  readonly initialState: string;
  readonly program: AggregateProgram;
}

/** The verdict on one spec. */
export interface SpecResult {
  readonly name: string;
  readonly file: string;
  readonly index: number;
  readonly passed: boolean;
  /** What `then` asked for and what happened, in the same shape. */
  readonly expected: unknown;
  readonly actual: unknown;
  /** Line diff of expected (`-`) against actual (`+`); empty when passed. */
  readonly diff: string;
}

/** The verdicts on one type's specs, or why they could not be read. */
export interface TypeSpecResults {
  readonly type: string;
  readonly results: readonly SpecResult[];
  readonly loadError?: string;
}

/** Runs the specs of every target, one type after another. */
export async function runAllSpecs(targets: readonly SpecTarget[]): Promise<TypeSpecResults[]> {
  const all: TypeSpecResults[] = [];
  for (const target of targets) {
    let specs: LoadedSpec[];
    try {
      specs = await loadSpecs(target.dir);
    } catch (err) {
      all.push({ type: target.type, results: [], loadError: (err as Error).message });
      continue;
    }
    all.push({ type: target.type, results: await runSpecs(target.program, target.initialState, specs) });
  }
  return all;
}

/** Runs `specs` against `program`, starting from `initialState` (JSON text). */
export async function runSpecs(
  program: AggregateProgram,
  initialState: string,
  specs: readonly LoadedSpec[],
): Promise<SpecResult[]> {
  const results: SpecResult[] = [];
  for (const loaded of specs) results.push(await runOne(program, initialState, loaded, results.length));
  return results;
}

async function runOne(
  program: AggregateProgram,
  initialState: string,
  { spec, file, index }: LoadedSpec,
  ordinal: number,
): Promise<SpecResult> {
  const expected = expectation(spec);
  let actual: unknown;
  let state = initialState;
  try {
    if (spec.given.length > 0) state = await program.applyAll(initialState, spec.given);
  } catch (err) {
    actual = { given: "could not be applied", error: describeError(err, true, true) };
    return verdict(spec, file, index, expected, actual);
  }
  try {
    const outcome = await program.decide(state, spec.when, context(spec, ordinal));
    const then = spec.then;
    actual =
      !Array.isArray(then) && "state" in then && then.state !== undefined
        ? { events: outcome.events, state: JSON.parse(outcome.state) as unknown }
        : { events: outcome.events };
  } catch (err) {
    const wanted = !Array.isArray(spec.then) && "error" in spec.then ? spec.then.error : undefined;
    actual = {
      error: describeError(
        err,
        wanted === undefined || wanted.message !== undefined,
        wanted?.reason !== undefined,
      ),
    };
  }
  return verdict(spec, file, index, expected, actual);
}

function verdict(
  spec: DeciderSpec,
  file: string,
  index: number,
  expected: unknown,
  actual: unknown,
): SpecResult {
  const passed = sameJson(expected, actual);
  return {
    name: spec.name,
    file,
    index,
    passed,
    expected,
    actual,
    diff: passed ? "" : diffLines(formatValue(expected), formatValue(actual)),
  };
}

/** `then` in the shape the actual outcome is reported in. */
function expectation(spec: DeciderSpec): unknown {
  const then = spec.then;
  if (Array.isArray(then)) return { events: then };
  if ("error" in then) return { error: then.error };
  return then.state === undefined ? { events: then.events } : { events: then.events, state: then.state };
}

/** The error as a spec writes it: its code, and its message and reason when the spec asks for them. */
function describeError(err: unknown, withMessage: boolean, withReason: boolean): Record<string, unknown> {
  if (!isAggregateError(err))
    return { code: "Error", message: err instanceof Error ? err.message : String(err) };
  const described: Record<string, unknown> = { code: err.code };
  if (withMessage) described["message"] = err.message;
  const reason = err.fields["reason"];
  if (withReason && typeof reason === "string") described["reason"] = reason;
  return described;
}

/**
 * decide's context: fixed, so a spec's outcome never depends on where it runs. `version` is the
 * number of given events (the aggregate's version before the command); each spec gets its own
 * aggregate id, so that one spec's failures never count against another's (poison detection).
 */
function context(spec: DeciderSpec, ordinal: number): DecideContext {
  return {
    tenant_id: spec.context?.tenant_id ?? "",
    aggregate_id:
      spec.context?.aggregate_id ?? `00000000-0000-4000-8000-${String(ordinal + 1).padStart(12, "0")}`,
    command_id: spec.context?.command_id ?? "00000000-0000-4000-9000-000000000001",
    version: spec.context?.version ?? spec.given.length,
    metadata: spec.context?.metadata ?? {},
  };
}

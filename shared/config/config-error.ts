/** One thing wrong with the configuration. Every field is safe to print: secrets are redacted. */
export interface ConfigProblem {
  /** The setting at fault: an environment variable (`AGGREGATE_HTTP_PORT`) or a YAML key (`http_port`). */
  readonly key?: string;
  /** The YAML file, when the problem is in it. */
  readonly file?: string;
  /** The offending value, JSON-quoted and cut to 100 characters; `<redacted>` for a secret. */
  readonly value?: string;
  /** What is wrong, e.g. `must be an integer from 0 to 65535`. */
  readonly reason: string;
}

/**
 * The configuration cannot be used. The message has one line per problem, so an operator fixes
 * everything in one round:
 *
 * ```text
 * invalid configuration (2 problems):
 *   AGGREGATE_HTTP_PORT="70000": must be an integer from 0 to 65535
 *   /srv/aggregate.yaml: snapshot_treshold: unknown key, did you mean "snapshot_threshold"?
 * ```
 */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  /** Every problem found, in the order they appear in the message. */
  readonly problems: readonly ConfigProblem[];

  constructor(problems: readonly ConfigProblem[]) {
    const count = problems.length === 1 ? "1 problem" : `${problems.length} problems`;
    super([`invalid configuration (${count}):`, ...problems.map((p) => `  ${formatProblem(p)}`)].join("\n"));
    this.problems = Object.freeze([...problems]);
  }
}

/** `file: key=value: reason`, leaving out the parts a problem does not have. */
export function formatProblem(problem: ConfigProblem): string {
  const parts: string[] = [];
  if (problem.file !== undefined) parts.push(problem.file);
  if (problem.key !== undefined) {
    parts.push(problem.value === undefined ? problem.key : `${problem.key}=${problem.value}`);
  }
  parts.push(problem.reason);
  return parts.join(": ");
}

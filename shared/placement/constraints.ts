/**
 * Docker Swarm placement constraints: generating them from pool definitions (the seed's
 * `ConstraintGenerator`) and checking their syntax before a stack file reaches `docker stack
 * deploy`, which only fails at deploy time, and a constraint that parses but never matches
 * (a typo'd label) leaves the service pending forever.
 */

/**
 * Swarm (docker/swarmkit `constraint.go`) accepts a whole attribute matching
 * `^[a-z_][a-z0-9\-_.]+$` (case-insensitive), so a label key is `[a-z0-9\-_.]+`. What we generate
 * is stricter (a key starts with a letter or `_`; a value is one token without spaces or regex
 * characters).
 */
const LABEL_KEY_RE = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
const SWARM_LABEL_KEY_RE = /^[A-Za-z0-9_.-]+$/;
const LABEL_VALUE_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/;
/** Values swarmkit itself accepts on the right-hand side. */
const SWARM_VALUE_RE = /^[A-Za-z0-9:\-_\s.*()?+[\]\\^$|/]+$/;

/** Node attributes a constraint may test (docs: "docker service create --constraint"). */
const FIXED_ATTRIBUTES = new Set([
  "node.id",
  "node.hostname",
  "node.role",
  "node.platform.os",
  "node.platform.arch",
]);
const LABEL_PREFIXES = ["node.labels.", "engine.labels."];

/** A tenant range label such as the seed's `tenant_range=a-m`. */
export interface TenantRange {
  readonly from: string;
  readonly to: string;
}

/** The node label value of a tenant range: `a-m`. */
export function tenantRangeLabel(range: TenantRange): string {
  const value = `${range.from}-${range.to}`;
  if (!LABEL_VALUE_RE.test(range.from) || !LABEL_VALUE_RE.test(range.to) || range.from > range.to) {
    throw new RangeError(`invalid tenant range ${JSON.stringify(range)}`);
  }
  return value;
}

/** `node.labels.<key>==<value>`, after checking that both are one safe token. */
export function nodeLabelConstraint(key: string, value: string): string {
  if (!LABEL_KEY_RE.test(key)) throw new RangeError(`invalid node label key ${JSON.stringify(key)}`);
  if (!LABEL_VALUE_RE.test(value)) throw new RangeError(`invalid node label value ${JSON.stringify(value)}`);
  return `node.labels.${key}==${value}`;
}

/** What a pool's workers need from a node: its labels, all of them (Swarm ANDs constraints). */
export interface ConstraintSource {
  readonly node_labels?: Readonly<Record<string, string>>;
  readonly tenant_range?: TenantRange;
  /** Extra constraints written by hand, e.g. `node.role==worker`; checked, not generated. */
  readonly constraints?: readonly string[];
}

/**
 * The placement constraints of a pool (the seed's `ConstraintGenerator.generate`): one
 * `node.labels.<key>==<value>` per label, sorted so that the generated stack file is stable,
 * then the hand-written ones. Throws when any of them would not parse in Swarm.
 */
export function generateConstraints(source: ConstraintSource): string[] {
  const labels: Record<string, string> = { ...source.node_labels };
  if (source.tenant_range) labels["tenant_range"] = tenantRangeLabel(source.tenant_range);
  const out = Object.keys(labels)
    .sort()
    .map((key) => nodeLabelConstraint(key, labels[key]!));
  for (const c of source.constraints ?? []) {
    const problem = checkConstraint(c);
    if (problem) throw new RangeError(problem);
    out.push(c);
  }
  return out;
}

/**
 * Checks one constraint the way Swarm parses it: `<attribute> == <value>` or `!=`, where the
 * attribute is `node.id|hostname|role|platform.os|platform.arch`, `node.labels.<key>` or
 * `engine.labels.<key>`. Returns a message naming the problem, or undefined when it is valid.
 * Catches the classic `node.labels.x=a` (a single `=`, which Swarm refuses at deploy time).
 */
export function checkConstraint(constraint: string): string | undefined {
  const ops = [...constraint.matchAll(/==|!=/g)];
  if (ops.length !== 1) {
    const hint =
      ops.length === 0 && /[^=!]=[^=]/.test(constraint) ? " (a single '=' is not an operator: use '==')" : "";
    return `constraint ${JSON.stringify(constraint)} must have exactly one operator, == or !=${hint}`;
  }
  const op = ops[0]!;
  const attribute = constraint.slice(0, op.index).trim();
  const value = constraint.slice(op.index + 2).trim();
  if (attribute.includes("=") || value.includes("=")) {
    return `constraint ${JSON.stringify(constraint)} has a stray '='`;
  }
  const prefix = LABEL_PREFIXES.find((p) => attribute.startsWith(p));
  if (prefix) {
    const key = attribute.slice(prefix.length);
    if (!SWARM_LABEL_KEY_RE.test(key))
      return `constraint ${JSON.stringify(constraint)}: invalid label key ${JSON.stringify(key)}`;
  } else if (!FIXED_ATTRIBUTES.has(attribute)) {
    return `constraint ${JSON.stringify(constraint)}: unknown attribute ${JSON.stringify(attribute)}`;
  }
  if (value === "" || !SWARM_VALUE_RE.test(value)) {
    return `constraint ${JSON.stringify(constraint)}: invalid value ${JSON.stringify(value)}`;
  }
  if (attribute === "node.role" && !["manager", "worker"].includes(value.toLowerCase())) {
    return `constraint ${JSON.stringify(constraint)}: node.role is manager or worker`;
  }
  return undefined;
}

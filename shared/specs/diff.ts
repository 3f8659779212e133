/**
 * Expected-versus-actual, readable: values are printed the same way on both sides (keys sorted
 * with `type` first, short objects on one line), so that a difference in value is a difference in
 * lines, and only real differences are marked.
 */

/** `value` as stable, indented text: equal JSON values give equal text whatever their key order. */
export function formatValue(value: unknown, indent = ""): string {
  const flat = formatFlat(value);
  if (flat.length + indent.length <= 80 || value === null || typeof value !== "object") return flat;
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[\n${value.map((item) => inner + formatValue(item, inner)).join(",\n")}\n${indent}]`;
  }
  const keys = sortedKeys(value as Record<string, unknown>);
  if (keys.length === 0) return "{}";
  const lines = keys.map(
    (key) => `${inner}${JSON.stringify(key)}: ${formatValue((value as Record<string, unknown>)[key], inner)}`,
  );
  return `{\n${lines.join(",\n")}\n${indent}}`;
}

function formatFlat(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? String(value);
  if (Array.isArray(value)) return `[${value.map(formatFlat).join(", ")}]`;
  const record = value as Record<string, unknown>;
  const keys = sortedKeys(record);
  if (keys.length === 0) return "{}";
  return `{ ${keys.map((key) => `${JSON.stringify(key)}: ${formatFlat(record[key])}`).join(", ")} }`;
}

function sortedKeys(record: Record<string, unknown>): string[] {
  return Object.keys(record)
    .filter((key) => record[key] !== undefined)
    .sort((a, b) => (a === "type" ? -1 : b === "type" ? 1 : a < b ? -1 : a > b ? 1 : 0));
}

/** Whether two JSON values are equal, whatever their key order. */
export function sameJson(a: unknown, b: unknown): boolean {
  return formatFlat(a) === formatFlat(b);
}

/**
 * A line diff of `expected` against `actual`: lines only in expected start with `- `, lines only
 * in actual with `+ `, common lines with two spaces. Longest common subsequence; the texts are
 * a few dozen lines.
 */
export function diffLines(expected: string, actual: string): string {
  const a = expected.split("\n");
  const b = actual.split("\n");
  const lcs: number[][] = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      out.push(`  ${a[i]}`);
      i++;
      j++;
    } else if (i < a.length && (j === b.length || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
      out.push(`- ${a[i]}`);
      i++;
    } else {
      out.push(`+ ${b[j]}`);
      j++;
    }
  }
  return out.join("\n");
}

/** The spec results as text for a terminal or a test failure: one line per spec, a diff per failure. */
import type { SpecResult, TypeSpecResults } from "./run-specs.ts";

/** Counts over all types; a type whose specs cannot be read counts as one failure. */
export function specCounts(all: readonly TypeSpecResults[]): { passed: number; failed: number } {
  let passed = 0;
  let failed = 0;
  for (const type of all) {
    if (type.loadError !== undefined) failed += 1;
    for (const result of type.results) {
      if (result.passed) passed += 1;
      else failed += 1;
    }
  }
  return { passed, failed };
}

/** The report: per type, `✓`/`✗` per spec with a diff under each failure, then `N passed, N failed`. */
export function formatSpecReport(all: readonly TypeSpecResults[]): string {
  const lines: string[] = [];
  for (const type of all) {
    lines.push(type.type);
    if (type.loadError !== undefined) lines.push(`  ✗ specs cannot be read: ${type.loadError}`);
    else if (type.results.length === 0) lines.push("  (no specs)");
    for (const result of type.results) {
      lines.push(`  ${result.passed ? "✓" : "✗"} ${result.name}  (${result.file} #${result.index})`);
      if (!result.passed) lines.push(indent(formatFailure(result), "      "));
    }
  }
  const { passed, failed } = specCounts(all);
  lines.push("", `${passed} passed, ${failed} failed`);
  return lines.join("\n");
}

/** One failure's diff with its legend. */
export function formatFailure(result: SpecResult): string {
  return `- expected\n+ actual\n\n${result.diff}`;
}

function indent(text: string, by: string): string {
  return text
    .split("\n")
    .map((line) => (line === "" ? line : by + line))
    .join("\n");
}

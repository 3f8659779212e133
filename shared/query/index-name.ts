import { createHash } from "node:crypto";

/** A safe, stable index name for a declared field: `qf_<hash of type and path>`. */
export function indexName(type: string, dotted: string): string {
  return `qf_${createHash("sha256").update(`${type}\u0000${dotted}`).digest("hex").slice(0, 24)}`;
}

import { describe, expect, it } from "vitest";
import { checkConstraint } from "../../../shared/placement/index.ts";

describe("Swarm constraint syntax check", () => {
  it.each([
    "node.labels.pool==big",
    "node.labels.tenant_range==a-m",
    "node.role==manager",
    "node.role != worker",
    "node.hostname==host-1",
    "node.platform.os==linux",
    "engine.labels.zone==eu",
  ])("accepts %s", (c) => {
    expect(checkConstraint(c)).toBeUndefined();
  });

  it.each([
    ["node.labels.x=a", "use '=='"],
    ["node.labels.x===a", "stray '='"],
    ["node.labels.x", "exactly one operator"],
    ["node.labels.x==a==b", "exactly one operator"],
    ["node.label.x==a", "unknown attribute"],
    ["node.labels.==a", "invalid label key"],
    ["node.labels.x==", "invalid value"],
    ["node.role==leader", "manager or worker"],
  ])("refuses %s", (c, message) => {
    expect(checkConstraint(c)).toContain(message);
  });
});

/**
 * Delay before retry `attempt` (1-based) after a version conflict: exponential with full jitter,
 * so replicas that collided do not collide again in lockstep.
 */
export function conflictBackoffMs(attempt: number, random: number, baseMs = 2, capMs = 250): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random * ceiling);
}

/**
 * Rendezvous (highest-random-weight) hashing: every candidate scores the key, the highest score
 * owns it. Adding a candidate moves only the keys it now wins (about 1/N of them) and removing
 * one moves only its own keys; weights scale a candidate's share. No ring, no virtual nodes.
 *
 * The score of a weighted candidate is `weight / -ln(u)` with `u` a uniform hash of
 * (candidate, key) in (0, 1): the logarithmic method, which gives each candidate a share
 * proportional to its weight and keeps the minimal-movement property.
 */

/** A candidate (a pool or a node) and its relative capacity. */
export interface WeightedCandidate {
  readonly id: string;
  /** Relative share, > 0; 1 when absent. */
  readonly weight?: number;
}

const TWO_POW_53 = 2 ** 53;

/**
 * A 53-bit string hash (cyrb53: two multiplicative 32-bit lanes mixed at the end). Stable across
 * processes and platforms, which placement needs: every gateway and worker must agree.
 */
export function hash53(text: string, seed = 0): number {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/** The score of `candidate` for `key`; the highest score owns the key. */
export function rendezvousScore(candidate: WeightedCandidate, key: string): number {
  const weight = candidate.weight ?? 1;
  if (!(weight > 0) || !Number.isFinite(weight)) {
    throw new RangeError(`weight of ${candidate.id} must be a positive finite number, got ${weight}`);
  }
  // u in (0, 1), never 0 or 1, so -ln(u) is finite and positive.
  const u = (hash53(`${candidate.id}\u0000${key}`) + 0.5) / TWO_POW_53;
  return weight / -Math.log(u);
}

/**
 * The candidates ordered by their score for `key`, owner first: the second is where the key goes
 * if the owner is removed. Ties (practically impossible) go to the smaller id so that every
 * caller agrees.
 */
export function rendezvousRank(key: string, candidates: readonly WeightedCandidate[]): string[] {
  return candidates
    .map((c) => ({ id: c.id, score: rendezvousScore(c, key) }))
    .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map((c) => c.id);
}

/** The owner of `key` among `candidates`; undefined when there are none. */
export function rendezvousOwner(key: string, candidates: readonly WeightedCandidate[]): string | undefined {
  let best: string | undefined;
  let bestScore = -Infinity;
  for (const c of candidates) {
    const score = rendezvousScore(c, key);
    if (score > bestScore || (score === bestScore && best !== undefined && c.id < best)) {
      best = c.id;
      bestScore = score;
    }
  }
  return best;
}

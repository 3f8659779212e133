/**
 * UUID v7 for event, command and correlation ids, with the random bits drawn from a pool.
 *
 * `uuid`'s own v7 asks the OS for 16 random bytes per id (`crypto.getRandomValues`); at two ids
 * per command that was 6 % of the service's main-thread time under load. Filling 4 KiB at a
 * time costs the same syscall once per 256 ids. The layout (48-bit Unix milliseconds, version,
 * variant) is still `uuid`'s: the pool only supplies the random bytes.
 */
import { getRandomValues } from "node:crypto";
import { v7 } from "uuid";

const POOL_BYTES = 4096;

export function pooledUuidv7(): () => string {
  const pool = new Uint8Array(POOL_BYTES);
  let next = POOL_BYTES;
  return () => {
    if (next + 16 > POOL_BYTES) {
      getRandomValues(pool);
      next = 0;
    }
    const random = pool.subarray(next, (next += 16));
    return v7({ random });
  };
}

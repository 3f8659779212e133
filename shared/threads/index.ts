/**
 * Starts a worker thread from one of this project's modules, from source (`npm start`, vitest)
 * or from the build. From source the entry is TypeScript: Node 20 does not apply an inherited
 * `--import tsx` to a worker's entry module, so a one-line entry registers tsx's loader in the
 * thread first and then imports it. From a build it is the plain `.js` file.
 */
import { Worker, type WorkerOptions } from "node:worker_threads";

/**
 * `entry` is the thread's module as a URL relative to the caller's `import.meta.url` with the
 * caller's own extension (`siblingModule("./worker", import.meta.url)`).
 */
export function startThread(entry: URL, options: WorkerOptions): Worker {
  if (!entry.pathname.endsWith(".ts")) return new Worker(entry, options);
  const tsx = import.meta.resolve("tsx/esm/api");
  const code = `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); });`;
  return new Worker(code, { ...options, eval: true });
}

/** `name` (without extension) beside the module `base`, as `.ts` when running from source, else `.js`. */
export function siblingModule(name: string, base: string): URL {
  return new URL(`${name}${base.endsWith(".ts") ? ".ts" : ".js"}`, base);
}

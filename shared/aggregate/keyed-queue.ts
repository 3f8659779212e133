/**
 * Runs tasks for the same key one after another and tasks for different keys concurrently.
 * Commands for one aggregate that reach one worker would only conflict with each other, so
 * they wait in line instead (ARCHITECTURE.md "One command, end to end").
 */
export class KeyedQueue {
  readonly #tails = new Map<string, Promise<unknown>>();

  /** Number of keys with work queued or running. */
  get activeKeys(): number {
    return this.#tails.size;
  }

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key);
    const result = previous === undefined ? task() : previous.then(task, task);
    // The tail never rejects, so a failed task does not poison the ones queued after it.
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return result;
  }
}

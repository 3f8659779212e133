/**
 * Aggregate programs in a pool of worker threads, each running the QuickJS sandbox
 * (quickjs-sandbox.ts) behind worker.ts. Same `Sandbox` interface as the in-thread sandbox.
 *
 * Why threads: QuickJS's interrupt handler cannot stop a single long built-in
 * (`Array.prototype.indexOf.call({length: 2**32 - 1}, 1)` runs for minutes inside one C call),
 * and only stopping the thread that runs it bounds that. A thread also gets a larger stack
 * (`resourceLimits.stackSizeMb`), so QuickJS's own stack budget can be four times the main
 * thread's and still be what trips first.
 *
 * What must stay true:
 * - Calls wait in one FIFO queue in this thread. The queue is handed out once per turn of the
 *   event loop (setImmediate), so the calls that one burst of NATS messages starts travel
 *   together: each idle thread gets an even share (at most MAX_BATCH) of the calls whose program
 *   it has loaded, as one message, runs them one after the other and answers with one message
 *   (worker-protocol.ts says why). A thread runs one batch at a time and gets one only when idle,
 *   so a stopped thread's replacement (which has to start and load every program first, about
 *   half a second under tsx) never holds a call up while another thread is free.
 * - The watchdog follows the batch call by call: the thread records which call runs and since
 *   when (`Progress`, shared memory), and the watchdog stops the thread only when that call has
 *   run its program's `timeoutMs` + `graceMs` (the first call's clock starts at dispatch). That
 *   call fails with ProgramError reason "timeout"; the other calls of the batch, done or not,
 *   go back to the front of the queue and run again elsewhere (programs are pure, so running a
 *   call twice is harmless and its first result was never seen). A thread that dies on its own
 *   fails its running call with reason "terminated" and requeues the rest the same way.
 * - Every program is loaded into every thread, from its source (the compiled text, a few KB):
 *   threads are interchangeable. A program whose loading hangs a thread past its load budget is
 *   refused and never sent to a replacement, so it cannot stop threads in a loop.
 * - Calls are strings only (worker-protocol.ts); parsing the reply happens here, as in the
 *   in-thread sandbox.
 * - A thread that cannot start is retried with a growing delay (up to 5 s); while no thread can
 *   run a call at all, the waiting calls fail with ProgramError reason "unavailable".
 */
import { createHash } from "node:crypto";
import type { Worker } from "node:worker_threads";
import {
  ApplyError,
  DecideError,
  ProgramError,
  Unavailable,
  type AggregateError,
  type JsonObject,
} from "../contract/index.ts";
import { siblingModule, startThread } from "../threads/index.ts";
import { ProgramFailure } from "./program-failure.ts";
import {
  compileQuickJsWasm,
  decideArgs,
  Op,
  parseApplyAllReply,
  parseDecideReply,
} from "./quickjs-sandbox.ts";
import type {
  AggregateProgram,
  CallOptions,
  DecideContext,
  DecideOutcome,
  ProgramSource,
  Sandbox,
} from "./types.ts";
import {
  Progress,
  type BatchResult,
  type FromWorker,
  type ToWorker,
  type WireError,
  type WorkerSettings,
} from "./worker-protocol.ts";

/** Where the pool reports thread replacements. A pino logger fits. */
export interface SandboxLog {
  warn(obj: object, msg: string): void;
}

/** Tuning of the worker pool. The defaults suit a 2-core machine. */
export interface WorkerSandboxOptions {
  /** Threads; default 2. */
  readonly size?: number;
  /** How long past a call's deadline the watchdog waits before stopping its thread, in ms; default 500. */
  readonly graceMs?: number;
  /** Stack of each thread (`resourceLimits.stackSizeMb`); default 16. */
  readonly stackSizeMb?: number;
  /** QuickJS stack budget in each thread, in bytes; default 1 MiB. Measured: the JSON parser needs 4 to 8 MB of host stack per MiB of QuickJS stack (plain recursion about 2), so 16 MB leaves it a clean guest error. */
  readonly maxStackBytes?: number;
  /** WASM memory a program gets on top of `limits.memoryMb`, in MiB; default 8. */
  readonly memoryOverheadMb?: number;
  /** Budget for evaluating a program's modules, in ms; default 5,000. The watchdog adds `graceMs`. */
  readonly loadTimeoutMs?: number;
  readonly log?: SandboxLog;
}

const DEFAULTS = {
  size: 2,
  graceMs: 500,
  stackSizeMb: 16,
  maxStackBytes: 1024 * 1024,
  memoryOverheadMb: 8,
  loadTimeoutMs: 5_000,
} as const;
const MAX_RESPAWN_DELAY_MS = 5_000;
/**
 * Most calls one thread gets in one message. A call waits for those before it in its batch, so
 * this bounds the wait (bank-account decides take ~50 µs: 32 of them ~1.6 ms) while still
 * collapsing a burst into a few messages.
 */
const MAX_BATCH = 32;
/**
 * Most background calls (CallOptions.background) in one batch: a command's decide that arrives
 * while a thread runs background work waits for that batch, so it stays short.
 */
const MAX_BACKGROUND_BATCH = 8;
/**
 * A background call that has waited this long gets a thread even while foreground calls wait
 * (one batch per hand-out), so a saturated worker still folds its read model.
 */
const BACKGROUND_MAX_WAIT_MS = 50;

/** Creates the pool; threads start at once, programs load into each as they are loaded here. */
export function createWorkerSandbox(opts: WorkerSandboxOptions = {}): Sandbox {
  return new WorkerPool({
    size: opts.size ?? DEFAULTS.size,
    graceMs: opts.graceMs ?? DEFAULTS.graceMs,
    stackSizeMb: opts.stackSizeMb ?? DEFAULTS.stackSizeMb,
    maxStackBytes: opts.maxStackBytes ?? DEFAULTS.maxStackBytes,
    memoryOverheadMb: opts.memoryOverheadMb ?? DEFAULTS.memoryOverheadMb,
    loadTimeoutMs: opts.loadTimeoutMs ?? DEFAULTS.loadTimeoutMs,
    log: opts.log,
  });
}

interface PoolSettings {
  readonly size: number;
  readonly graceMs: number;
  readonly stackSizeMb: number;
  readonly maxStackBytes: number;
  readonly memoryOverheadMb: number;
  readonly loadTimeoutMs: number;
  readonly log: SandboxLog | undefined;
}

/** A program as the pool knows it: its source, sent to every thread. */
interface Entry {
  readonly id: number;
  readonly source: ProgramSource;
  /** Settled by the first thread's answer. */
  settled: boolean;
  resolve(): void;
  reject(err: Error): void;
}

/** A call waiting for, or running on, a thread. */
interface Call {
  readonly id: number;
  readonly entry: Entry;
  readonly op: Op;
  readonly args: readonly string[];
  readonly background: boolean;
  /** performance.now() when it was queued (background calls age into a turn). */
  readonly queuedAt: number;
  resolve(reply: string): void;
  reject(err: Error): void;
}

/** One thread and what the pool knows about it. */
interface Slot {
  readonly index: number;
  readonly worker: Worker;
  ready: boolean;
  dead: boolean;
  /** The batch it runs, if any: at most one. */
  batch: Call[] | undefined;
  /** Which call of the batch runs, and since when (written by the thread). */
  readonly progress: Progress;
  /** The watchdog of the batch. */
  timer: NodeJS.Timeout | undefined;
  /** Programs it has loaded. */
  readonly loaded: Set<number>;
  /** Watchdogs of the loads it is running. */
  readonly loading: Map<number, NodeJS.Timeout>;
}

class WorkerPool implements Sandbox {
  readonly #settings: PoolSettings;
  readonly #slots: Array<Slot | undefined>;
  readonly #entries = new Map<number, Entry>();
  readonly #byKey = new Map<string, Promise<AggregateProgram>>();
  #queue: Call[] = [];
  /** Background calls: handed out only while `#queue` holds nothing a thread could run. */
  #background: Call[] = [];
  #pumpScheduled = false;
  #wasm: Promise<WebAssembly.Module | undefined> | undefined;
  #nextId = 1;
  #closed = false;
  /** Consecutive thread starts that failed before the thread said ready, and the last reason. */
  #startFailures = 0;
  #startError = "";
  readonly #respawns = new Set<NodeJS.Timeout>();

  constructor(settings: PoolSettings) {
    this.#settings = settings;
    this.#slots = Array.from({ length: Math.max(1, settings.size) }, () => undefined);
    for (let i = 0; i < this.#slots.length; i++) void this.#spawn(i);
  }

  load(source: ProgramSource): Promise<AggregateProgram> {
    if (this.#closed) return Promise.reject(new Unavailable("the sandbox is closed"));
    const key = JSON.stringify([source.decide.hash, source.apply.hash, source.name, source.limits]);
    let loading = this.#byKey.get(key);
    if (loading === undefined) {
      loading = this.#load(source);
      this.#byKey.set(key, loading);
      loading.catch(() => this.#byKey.delete(key));
    }
    return loading;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#respawns) clearTimeout(timer);
    this.#respawns.clear();
    const closing = new Unavailable("the sandbox is closed");
    for (const call of [...this.#queue.splice(0), ...this.#background.splice(0)]) call.reject(closing);
    const stopping: Array<Promise<number>> = [];
    for (const slot of this.#slots) {
      if (slot === undefined) continue;
      this.#bury(slot);
      clearTimeout(slot.timer);
      for (const call of slot.batch ?? []) call.reject(closing);
      slot.batch = undefined;
      stopping.push(slot.worker.terminate());
    }
    for (const entry of this.#entries.values()) if (!entry.settled) entry.reject(closing);
    this.#entries.clear();
    await Promise.allSettled(stopping);
  }

  async #load(source: ProgramSource): Promise<AggregateProgram> {
    const id = this.#nextId++;
    const loaded = new Promise<void>((resolve, reject) => {
      const entry: Entry = {
        id,
        source,
        settled: false,
        resolve: () => {
          entry.settled = true;
          resolve();
        },
        reject: (err) => {
          entry.settled = true;
          reject(err);
        },
      };
      this.#entries.set(id, entry);
      for (const slot of this.#slots) if (slot !== undefined && !slot.dead) this.#sendLoad(slot, entry);
    });
    await loaded;
    return new PooledProgram(source, (op, args, background) => this.#call(id, op, args, background));
  }

  #call(programId: number, op: Op, args: readonly string[], background: boolean): Promise<string> {
    if (this.#closed) return Promise.reject(new Unavailable("the sandbox is closed"));
    const entry = this.#entries.get(programId);
    if (entry === undefined) return Promise.reject(new Unavailable("the program is no longer loaded"));
    return new Promise<string>((resolve, reject) => {
      const call = {
        id: this.#nextId++,
        entry,
        op,
        args,
        background,
        queuedAt: performance.now(),
        resolve,
        reject,
      };
      if (background) this.#background.push(call);
      else this.#queue.push(call);
      // Every thread idle and nothing else waiting: this call goes now (a command alone pays no
      // extra turn of the event loop). Otherwise wait for the rest of this turn's calls, then
      // hand them out together.
      if (!background && this.#queue.length === 1 && this.#allIdle()) {
        this.#pump();
        return;
      }
      if (this.#pumpScheduled) return;
      this.#pumpScheduled = true;
      setImmediate(() => {
        this.#pumpScheduled = false;
        this.#pump();
      });
    });
  }

  #allIdle(): boolean {
    return this.#slots.every((s) => s !== undefined && s.ready && !s.dead && s.batch === undefined);
  }

  /**
   * Hands queued calls to idle threads, oldest call first, an even share to each. Background
   * calls go only to a thread that has no foreground call to run, a few at a time, except that
   * once the oldest has waited BACKGROUND_MAX_WAIT_MS one thread takes a background batch anyway.
   */
  #pump(): void {
    if (this.#queue.length === 0 && this.#background.length === 0) return;
    const idle = this.#slots.filter(
      (s): s is Slot => s !== undefined && s.ready && !s.dead && s.batch === undefined,
    );
    const oldest = this.#background[0];
    let backgroundTurn = oldest !== undefined && performance.now() - oldest.queuedAt > BACKGROUND_MAX_WAIT_MS;
    for (let k = 0; k < idle.length; k++) {
      const slot = idle[k]!;
      if (backgroundTurn) {
        backgroundTurn = false;
        const [batch, rest] = take(this.#background, slot, MAX_BACKGROUND_BATCH);
        this.#background = rest;
        if (batch.length > 0) {
          this.#dispatch(slot, batch);
          continue;
        }
      }
      if (this.#queue.length > 0) {
        const share = Math.min(MAX_BATCH, Math.ceil(this.#queue.length / (idle.length - k)));
        const [batch, rest] = take(this.#queue, slot, share);
        this.#queue = rest;
        if (batch.length > 0) {
          this.#dispatch(slot, batch);
          continue;
        }
      }
      if (this.#background.length > 0) {
        const [batch, rest] = take(this.#background, slot, MAX_BACKGROUND_BATCH);
        this.#background = rest;
        if (batch.length > 0) this.#dispatch(slot, batch);
      }
    }
  }

  #dispatch(slot: Slot, batch: Call[]): void {
    slot.batch = batch;
    // The first call's clock starts now, also while the message waits in the thread's inbox.
    slot.progress.start(0);
    this.#watch(slot, batch, this.#budget(batch[0]!));
    const message: ToWorker = batch.map((call) => [call.id, call.entry.id, call.op, ...call.args]);
    slot.worker.postMessage(message);
  }

  #budget(call: Call): number {
    return call.entry.source.limits.timeoutMs + this.#settings.graceMs;
  }

  #watch(slot: Slot, batch: Call[], delayMs: number): void {
    slot.timer = setTimeout(() => this.#check(slot, batch), delayMs);
  }

  /** The watchdog: stops the thread if the call it runs is well past its deadline, else looks again later. */
  #check(slot: Slot, batch: Call[]): void {
    if (slot.batch !== batch || slot.dead) return;
    const { index, startedAt } = slot.progress.read();
    const call = batch[index];
    if (call === undefined) return;
    const left = startedAt + this.#budget(call) - Date.now();
    if (left > 0) {
      this.#watch(slot, batch, left + 1);
      return;
    }
    const { name, limits } = call.entry.source;
    this.#settings.log?.warn(
      {
        aggregate_type: name,
        timeout_ms: limits.timeoutMs,
        grace_ms: this.#settings.graceMs,
        thread: slot.index,
      },
      "sandbox thread stopped by the watchdog; starting a replacement",
    );
    this.#replace(
      slot,
      false,
      index,
      new ProgramError(
        `${name}: timed out after ${limits.timeoutMs} ms (the watchdog stopped its thread ${this.#settings.graceMs} ms later)`,
        { aggregate_type: name, reason: ProgramFailure.Timeout },
      ),
    );
  }

  #onMessage(slot: Slot, message: FromWorker): void {
    if (slot.dead) return;
    if (Array.isArray(message)) {
      this.#settle(slot, message);
      this.#pump();
      return;
    }
    switch (message.t) {
      case "ready":
        slot.ready = true;
        this.#startFailures = 0;
        // The loads sent while it started run from now on: so do their budgets.
        for (const [id, timer] of slot.loading) {
          clearTimeout(timer);
          const entry = this.#entries.get(id);
          if (entry !== undefined) this.#watchLoad(slot, entry);
        }
        this.#pump();
        return;
      case "loaded": {
        clearTimeout(slot.loading.get(message.id));
        slot.loading.delete(message.id);
        const entry = this.#entries.get(message.id);
        if (entry === undefined) return;
        if (message.error === undefined) {
          slot.loaded.add(message.id);
          if (!entry.settled) entry.resolve();
          this.#pump();
        } else if (!entry.settled) {
          this.#refuse(entry, fromWire(message.error, entry.source.name));
        } else {
          // Loaded elsewhere, so the program is sound; this thread just will not run it.
          this.#settings.log?.warn(
            { aggregate_type: entry.source.name, thread: slot.index, error: message.error.message },
            "a sandbox thread could not load a program the others run",
          );
          this.#failOrphans(entry, message.error);
        }
        return;
      }
    }
  }

  #settle(slot: Slot, results: BatchResult): void {
    const batch = slot.batch;
    if (batch === undefined || batch.length !== results.length) return;
    clearTimeout(slot.timer);
    slot.batch = undefined;
    for (let i = 0; i < batch.length; i++) {
      const call = batch[i]!;
      const result = results[i]!;
      if (result[0] !== call.id) {
        const name = call.entry.source.name;
        call.reject(
          new ProgramError(`${name}: the sandbox thread answered out of order`, {
            aggregate_type: name,
            reason: ProgramFailure.Host,
          }),
        );
      } else if (result[1] !== null) call.resolve(result[1]);
      else call.reject(fromWire(result[2], call.entry.source.name));
    }
  }

  /** A program that cannot load is forgotten everywhere: no thread, present or future, gets it again. */
  #refuse(entry: Entry, err: Error): void {
    this.#entries.delete(entry.id);
    if (!entry.settled) entry.reject(err);
    for (const slot of this.#slots) {
      if (slot === undefined || slot.dead) continue;
      clearTimeout(slot.loading.get(entry.id));
      slot.loading.delete(entry.id);
      slot.loaded.delete(entry.id);
      slot.worker.postMessage({ t: "unload", id: entry.id } satisfies ToWorker);
    }
  }

  /** Calls of a program that no live thread has or is loading would wait forever: fail them. */
  #failOrphans(entry: Entry, error: WireError): void {
    const held = this.#slots.some(
      (s) => s !== undefined && !s.dead && (s.loaded.has(entry.id) || s.loading.has(entry.id)),
    );
    if (held) return;
    const orphan = (call: Call) => call.entry === entry;
    for (const call of [...this.#queue.filter(orphan), ...this.#background.filter(orphan)]) {
      call.reject(fromWire(error, entry.source.name));
    }
    this.#queue = this.#queue.filter((call) => !orphan(call));
    this.#background = this.#background.filter((call) => !orphan(call));
  }

  #sendLoad(slot: Slot, entry: Entry): void {
    this.#watchLoad(slot, entry);
    slot.worker.postMessage({ t: "load", id: entry.id, source: entry.source } satisfies ToWorker);
  }

  /** The load's watchdog: a thread still loading the program `loadTimeoutMs` + grace later is stopped. */
  #watchLoad(slot: Slot, entry: Entry): void {
    const budget = this.#settings.loadTimeoutMs + this.#settings.graceMs;
    slot.loading.set(
      entry.id,
      setTimeout(() => {
        if (slot.dead || !slot.loading.has(entry.id)) return;
        // A thread that is still starting can take long for reasons of its own (a cold tsx
        // cache on a busy machine): the budget starts over until it is up.
        if (!slot.ready) {
          this.#watchLoad(slot, entry);
          return;
        }
        const { name } = entry.source;
        this.#refuse(
          entry,
          new ProgramError(`${name}: loading did not finish within ${budget} ms; the thread was stopped`, {
            aggregate_type: name,
            reason: ProgramFailure.Timeout,
          }),
        );
        this.#replace(slot, false);
      }, budget),
    );
  }

  async #spawn(index: number): Promise<void> {
    const wasmModule = await (this.#wasm ??= compileQuickJsWasm().catch(() => undefined));
    if (this.#closed) return;
    const progress = new SharedArrayBuffer(Progress.BYTES);
    const data: WorkerSettings = {
      progress,
      maxStackBytes: this.#settings.maxStackBytes,
      memoryOverheadMb: this.#settings.memoryOverheadMb,
      loadTimeoutMs: this.#settings.loadTimeoutMs,
      ...(wasmModule === undefined ? {} : { wasmModule }),
    };
    let worker: Worker;
    try {
      worker = startThread(siblingModule("./worker", import.meta.url), {
        workerData: data,
        resourceLimits: { stackSizeMb: this.#settings.stackSizeMb },
      });
    } catch (err) {
      this.#settings.log?.warn({ err, thread: index }, "sandbox thread cannot be started");
      this.#startError = err instanceof Error ? err.message : String(err);
      this.#startFailed(index);
      return;
    }
    const slot: Slot = {
      index,
      worker,
      ready: false,
      dead: false,
      batch: undefined,
      progress: new Progress(progress),
      timer: undefined,
      loaded: new Set(),
      loading: new Map(),
    };
    this.#slots[index] = slot;
    worker.on("message", (message: FromWorker) => this.#onMessage(slot, message));
    worker.on("error", (err) => {
      if (slot.dead) return;
      if (!slot.ready) this.#startError = err.message;
      this.#settings.log?.warn({ err, thread: index }, "sandbox thread failed; starting a replacement");
      this.#replace(slot, !slot.ready);
    });
    worker.on("exit", (code) => {
      if (slot.dead) return;
      this.#settings.log?.warn({ code, thread: index }, "sandbox thread exited; starting a replacement");
      this.#replace(slot, !slot.ready);
    });
    for (const entry of this.#entries.values()) this.#sendLoad(slot, entry);
  }

  /**
   * Stops a thread (if it is not gone already) and starts another in its place. The call it was
   * running fails (with `failure`, or as "terminated"); the rest of its batch goes back to the
   * front of the queue.
   */
  #replace(slot: Slot, failedToStart: boolean, running?: number, failure?: ProgramError): void {
    this.#bury(slot);
    const batch = slot.batch;
    slot.batch = undefined;
    clearTimeout(slot.timer);
    if (batch !== undefined) {
      // The call the watchdog judged, or the one running when the thread died on its own.
      const index = running ?? slot.progress.read().index;
      const call = batch[index];
      if (call !== undefined) {
        const { name } = call.entry.source;
        call.reject(
          failure ??
            new ProgramError(`${name}: the sandbox thread running the call stopped`, {
              aggregate_type: name,
              reason: ProgramFailure.Terminated,
            }),
        );
      }
      const again = batch.filter((_, i) => i !== index);
      this.#queue = [...again.filter((c) => !c.background), ...this.#queue];
      this.#background = [...again.filter((c) => c.background), ...this.#background];
    }
    void slot.worker.terminate().catch(() => undefined);
    if (this.#closed) return;
    if (failedToStart) this.#startFailed(slot.index);
    else void this.#spawn(slot.index);
    this.#pump();
  }

  #bury(slot: Slot): void {
    slot.dead = true;
    slot.ready = false;
    for (const timer of slot.loading.values()) clearTimeout(timer);
    slot.loading.clear();
  }

  #startFailed(index: number): void {
    this.#startFailures += 1;
    if (!this.#slots.some((s) => s !== undefined && !s.dead && s.ready)) {
      // Nothing can run the waiting calls (or finish a load) now; tell their callers rather
      // than keep them waiting for a thread that may never start.
      const unavailable = (name: string) =>
        new ProgramError(`${name}: no sandbox thread could be started: ${this.#startError}`, {
          aggregate_type: name,
          reason: ProgramFailure.Unavailable,
        });
      for (const call of [...this.#queue.splice(0), ...this.#background.splice(0)]) {
        call.reject(unavailable(call.entry.source.name));
      }
      if (this.#startFailures >= this.#slots.length) {
        for (const entry of [...this.#entries.values()]) {
          if (!entry.settled) this.#refuse(entry, unavailable(entry.source.name));
        }
      }
    }
    const delay = Math.min(MAX_RESPAWN_DELAY_MS, 100 * 2 ** Math.min(this.#startFailures, 6));
    const timer = setTimeout(() => {
      this.#respawns.delete(timer);
      void this.#spawn(index);
    }, delay);
    this.#respawns.add(timer);
  }
}

/** One program as the pool's callers see it. */
class PooledProgram implements AggregateProgram {
  readonly hash: string;
  readonly applyHash: string;
  readonly #run: (op: Op, args: readonly string[], background: boolean) => Promise<string>;

  constructor(
    source: ProgramSource,
    run: (op: Op, args: readonly string[], background: boolean) => Promise<string>,
  ) {
    this.hash = createHash("sha256")
      .update(source.decide.hash + source.apply.hash)
      .digest("hex");
    this.applyHash = source.apply.hash;
    this.#run = run;
  }

  async decide(
    stateJson: string,
    command: JsonObject,
    context: DecideContext,
    pending?: readonly JsonObject[],
  ): Promise<DecideOutcome> {
    return parseDecideReply(
      await this.#run(Op.decide, decideArgs(stateJson, command, context, pending), false),
    );
  }

  async applyAll(stateJson: string, events: readonly JsonObject[], options?: CallOptions): Promise<string> {
    return parseApplyAllReply(
      await this.#run(Op.applyAll, [stateJson, JSON.stringify(events)], options?.background === true),
    );
  }
}

/** Up to `max` calls of `queue` that `slot` can run (oldest first), and the rest in order. */
function take(queue: readonly Call[], slot: Slot, max: number): [Call[], Call[]] {
  const batch: Call[] = [];
  const rest: Call[] = [];
  for (const call of queue) {
    if (batch.length < max && slot.loaded.has(call.entry.id)) batch.push(call);
    else rest.push(call);
  }
  return [batch, rest];
}

/** The contract error a thread reported, rebuilt on this side. */
function fromWire(err: WireError, name: string): AggregateError {
  switch (err.name) {
    case "DecideError":
      return new DecideError(err.message, err.fields);
    case "ApplyError":
      return new ApplyError(err.message, err.fields);
    case "Unavailable":
      return new Unavailable(err.message, err.fields);
    case "ProgramError":
      return new ProgramError(err.message, err.fields);
    default:
      return new ProgramError(`${name}: ${err.message}`, {
        aggregate_type: name,
        reason: ProgramFailure.Host,
        ...err.fields,
      });
  }
}

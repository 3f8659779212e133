/**
 * Aggregate programs in QuickJS (quickjs-emscripten, release-sync build), in this thread.
 *
 * Design decisions, measured on this build (QuickJS 2025-09-13, V8 in Node 20):
 *
 * - One WASM module per loaded program, each with its own `WebAssembly.Memory` whose maximum is
 *   `limits.memoryMb` + `memoryOverheadMb` (default 8 MiB: 5.1 MiB of interpreter data and C
 *   stack, 0.2 MiB for the runtime with its frozen intrinsics, the rest for allocator slack and
 *   the glue's own buffers, so a program gets at least `memoryMb`). A program can never grow the
 *   host's memory beyond that. The module's memory import declares 16 MiB initial, so that is
 *   the floor. Only touched pages are resident: about 0.5 MiB per idle program, although V8
 *   counts the whole 16 MiB as external memory.
 *
 * - The memory ceiling is the limit, not `runtime.setMemoryLimit`. QuickJS reports its own limit
 *   as a catchable InternalError, invisible to the host once the program swallows it, and the
 *   contract says a call that hit a limit fails even then. A failed `memory.grow` is visible: the
 *   glue tries three sizes before malloc gives up, so three failures in a row mean an allocation
 *   failed. Such a call is a ProgramError and the whole module is dropped, because the failing
 *   allocation may have been the glue's own (it does not check malloc for NULL).
 *
 * - Stack: `setMaxStackSize(256 KiB)` by default. The C stack is 5 MiB, so that is never the
 *   bound; the host's is. Every interpreted frame is also a V8 frame for the WASM code, several
 *   times larger than QuickJS's count, and Node's main thread has under 1 MiB. At 256 KiB plain
 *   recursion stops cleanly at about 1,400 frames (400 through callbacks such as `reduce`) with
 *   a catchable "stack overflow", using about half of the host's stack. A few built-ins
 *   recurse in C with little QuickJS stack per level (JSON.stringify of a 10,000-deep array,
 *   the parser): those can exhaust the host's stack first. V8 then throws a RangeError through
 *   the module; it surfaces as a ProgramError and the module is dropped, never reused.
 *   `eval` and the Function constructors are removed, so the parser only ever runs at load.
 *   In a worker thread with a larger stack (`resourceLimits.stackSizeMb`), raise `maxStackBytes`.
 *
 * - Freezing: before any program code, the bootstrap (guest-bootstrap.ts) replaces `Date`,
 *   `Math.random`, `WeakRef` and `FinalizationRegistry` with functions that record the touch
 *   and throw, then freezes every object reachable from `globalThis` and from syntax (iterator
 *   and generator prototypes, %ThrowTypeError%). Program code is strict, so a write to a global
 *   or a shared prototype (`globalThis.x = 1`, `Array.prototype.evil = …`) throws a TypeError:
 *   a ProgramError, and nothing persists. Inherited properties that programs commonly shadow
 *   (`name`, `message`, `constructor`, `toString`, …) become accessors that define an own
 *   property on the instance, so `this.name = "InsufficientFunds"` in an Error subclass works.
 *
 * - What cannot be seen: QuickJS reports a stack overflow as a catchable InternalError and gives
 *   the host no signal, so a program that catches its own stack overflow carries on (the depth is
 *   deterministic for a given `maxStackBytes`). An uncaught one is a ProgramError.
 *
 * - Time: an interrupt handler checks the deadline (`limits.timeoutMs`); QuickJS polls it every
 *   10,000 function calls or loop iterations. It cannot stop a single long-running built-in (`indexOf` over a huge
 *   array-like): only a watchdog that can terminate the thread bounds that, so run this sandbox
 *   in worker threads.
 *
 * - Recycling: a timed-out call, a pending promise job or an engine-level failure discards the
 *   runtime and its context (pending jobs never run later); a memory or host-level failure
 *   discards the module. The next call builds a fresh one (10 to 50 ms: the freeze walk is most
 *   of it).
 *
 * - Every call is one `callFunction` with JSON strings in and one string out; every handle is
 *   disposed on the way out, except after a host-level failure, when the module is not touched
 *   again at all.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import releaseSyncExport from "@jitl/quickjs-wasmfile-release-sync";
import {
  newQuickJSWASMModuleFromVariant,
  newVariant,
  type QuickJSContext,
  type QuickJSHandle,
  type QuickJSRuntime,
  type QuickJSSyncVariant,
  type QuickJSWASMModule,
} from "quickjs-emscripten-core";
import { ApplyError, DecideError, ProgramError, Unavailable, type JsonObject } from "../contract/index.ts";
import { GUEST_BOOTSTRAP } from "./guest-bootstrap.ts";
import type {
  AggregateProgram,
  CompiledModule,
  DecideContext,
  DecideOutcome,
  ProgramSource,
  Sandbox,
} from "./types.ts";

/** Tuning of the QuickJS sandbox. The defaults suit Node's main thread. */
export interface QuickJsSandboxOptions {
  /** QuickJS stack budget of a program, in bytes. Default 256 KiB (see the note above). */
  readonly maxStackBytes?: number;
  /** WASM memory a program gets on top of `limits.memoryMb`, in MiB. Default 8. */
  readonly memoryOverheadMb?: number;
  /** Budget for building a program's runtime and evaluating its module code, in ms. Default 5,000. */
  readonly loadTimeoutMs?: number;
}

const MIB = 1024 * 1024;
const WASM_PAGE = 64 * 1024;
/** The module's memory import declares 256 pages initial; a smaller memory fails to link. */
const MIN_PAGES = 256;
/** emscripten_resize_heap tries 1.2x, 1.1x and 1.05x before giving up. */
const GROW_ATTEMPTS_PER_RESIZE = 3;
const DEFAULT_STACK_BYTES = 256 * 1024;
const DEFAULT_OVERHEAD_MB = 8;
const DEFAULT_LOAD_TIMEOUT_MS = 5_000;

/** The values of the WebAssembly JS API used here (see webassembly.d.ts for why not the global's type). */
interface WasmApi {
  Memory: new (descriptor: { initial: number; maximum: number }) => WebAssembly.Memory;
  compile(bytes: Uint8Array): Promise<WebAssembly.Module>;
}
const wasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/**
 * The package's types describe its CommonJS build (default export nested one level down) while
 * Node's import condition loads the ES build (the variant itself); accept both.
 */
const releaseSync = unwrapDefault<QuickJSSyncVariant>(releaseSyncExport);

const Op = { decide: 0, applyAll: 1 } as const;
type Op = (typeof Op)[keyof typeof Op];

/** Creates a sandbox that runs each loaded program in its own QuickJS WASM module. */
export function createQuickJsSandbox(opts: QuickJsSandboxOptions = {}): Sandbox {
  const settings: Settings = {
    maxStackBytes: opts.maxStackBytes ?? DEFAULT_STACK_BYTES,
    memoryOverheadMb: opts.memoryOverheadMb ?? DEFAULT_OVERHEAD_MB,
    loadTimeoutMs: opts.loadTimeoutMs ?? DEFAULT_LOAD_TIMEOUT_MS,
  };
  // Compiled once per sandbox and instantiated per program: compiling is the slow part.
  let wasm: Promise<WebAssembly.Module> | undefined;
  const compileWasm = (): Promise<WebAssembly.Module> =>
    (wasm ??= readFile(
      createRequire(import.meta.url).resolve("@jitl/quickjs-wasmfile-release-sync/wasm"),
    ).then((bytes) => wasmApi.compile(bytes)));
  const programs = new Map<string, Promise<QuickJsProgram>>();
  let closed = false;

  return {
    async load(source: ProgramSource): Promise<AggregateProgram> {
      if (closed) throw new Unavailable("the sandbox is closed");
      const key = JSON.stringify([source.decide.hash, source.apply.hash, source.name, source.limits]);
      let loading = programs.get(key);
      if (loading === undefined) {
        loading = (async () => {
          const program = new QuickJsProgram(source, settings, await compileWasm());
          await program.start();
          return program;
        })();
        programs.set(key, loading);
        loading.catch(() => programs.delete(key));
      }
      return loading;
    },

    async close(): Promise<void> {
      closed = true;
      const loaded = await Promise.allSettled(programs.values());
      programs.clear();
      for (const result of loaded) if (result.status === "fulfilled") result.value.close();
    },
  };
}

interface Settings {
  readonly maxStackBytes: number;
  readonly memoryOverheadMb: number;
  readonly loadTimeoutMs: number;
}

/** One WASM module and its memory. */
interface Engine {
  readonly module: QuickJSWASMModule;
  readonly memory: MemoryWatch;
}

/** One runtime and context in an engine, with the runner the bootstrap returned. */
interface Realm {
  readonly runtime: QuickJSRuntime;
  readonly context: QuickJSContext;
  readonly run: QuickJSHandle;
}

/** Whether an allocation failed since the last reset, seen through the memory's `grow`. */
interface MemoryWatch {
  failedStreak: number;
  exhausted: boolean;
}

/** The runner's error reply (see guest-bootstrap.ts). */
interface GuestFailure {
  readonly kind: "decide" | "apply" | "program";
  readonly message: string;
  readonly stack?: string;
}

class QuickJsProgram implements AggregateProgram {
  readonly hash: string;
  readonly applyHash: string;
  readonly #source: ProgramSource;
  readonly #settings: Settings;
  readonly #wasm: WebAssembly.Module;
  readonly #pages: number;
  /** The current engine; replaced (never reused) after a memory or host-level failure. */
  #engine: Promise<Engine> | undefined;
  #realm: Realm | undefined;
  #deadline = Number.POSITIVE_INFINITY;
  #timedOut = false;
  #closed = false;

  constructor(source: ProgramSource, settings: Settings, wasm: WebAssembly.Module) {
    this.#source = source;
    this.#settings = settings;
    this.#wasm = wasm;
    this.hash = sha256(source.decide.hash + source.apply.hash);
    this.applyHash = source.apply.hash;
    const bytes = (source.limits.memoryMb + settings.memoryOverheadMb) * MIB;
    this.#pages = Math.max(MIN_PAGES, Math.ceil(bytes / WASM_PAGE));
  }

  /** Builds the first engine and realm, which evaluates and checks the program's modules. */
  async start(): Promise<void> {
    await this.#ready();
  }

  async decide(stateJson: string, command: JsonObject, context: DecideContext): Promise<DecideOutcome> {
    const reply = await this.#call(Op.decide, [stateJson, JSON.stringify(command), JSON.stringify(context)]);
    if (!reply.startsWith("O\n")) throw this.#unexpectedReply(reply);
    const split = reply.indexOf("\n", 2);
    return { events: JSON.parse(reply.slice(2, split)) as JsonObject[], state: reply.slice(split + 1) };
  }

  async applyAll(stateJson: string, events: readonly JsonObject[]): Promise<string> {
    const reply = await this.#call(Op.applyAll, [stateJson, JSON.stringify(events)]);
    if (!reply.startsWith("S\n")) throw this.#unexpectedReply(reply);
    return reply.slice(2);
  }

  close(): void {
    this.#closed = true;
    this.#discardRealm();
    this.#engine = undefined;
  }

  async #call(op: Op, args: readonly string[]): Promise<string> {
    for (;;) {
      const { engine, realm } = await this.#ready();
      // Another call may have run (and discarded this realm) between #ready and here.
      if (realm !== this.#realm) continue;
      const reply = this.#execute(engine, realm, op, args, this.#source.limits.timeoutMs);
      if (reply.startsWith("E\n")) throw this.#failure(JSON.parse(reply.slice(2)) as GuestFailure);
      return reply;
    }
  }

  /** The engine and realm for the next call, built if the last call discarded them. */
  async #ready(): Promise<{ engine: Engine; realm: Realm }> {
    for (;;) {
      if (this.#closed) throw new Unavailable(`program "${this.#source.name}" is closed`);
      const pending = (this.#engine ??= this.#newEngine());
      let engine: Engine;
      try {
        engine = await pending;
      } catch (err) {
        if (this.#engine === pending) this.#engine = undefined;
        throw this.#error(`cannot start a QuickJS module: ${messageOf(err)}`, err);
      }
      // Discarded while we waited: that engine is gone for good.
      if (this.#engine !== pending) continue;
      this.#realm ??= this.#newRealm(engine);
      return { engine, realm: this.#realm };
    }
  }

  async #newEngine(): Promise<Engine> {
    const memory = new wasmApi.Memory({ initial: MIN_PAGES, maximum: this.#pages });
    const watch: MemoryWatch = { failedStreak: 0, exhausted: false };
    const grow = memory.grow.bind(memory);
    memory.grow = (delta: number): number => {
      try {
        const previous = grow(delta);
        watch.failedStreak = 0;
        return previous;
      } catch (err) {
        watch.failedStreak += 1;
        if (watch.failedStreak >= GROW_ATTEMPTS_PER_RESIZE) watch.exhausted = true;
        throw err;
      }
    };
    const module = await newQuickJSWASMModuleFromVariant(
      newVariant(releaseSync, { wasmModule: this.#wasm, wasmMemory: memory }),
    );
    return { module, memory: watch };
  }

  /** A runtime and context with the bootstrap run and the program installed. */
  #newRealm(engine: Engine): Realm {
    const { decide, apply } = this.#source;
    const timeoutMs = this.#settings.loadTimeoutMs;
    engine.memory.failedStreak = 0;
    engine.memory.exhausted = false;
    const runtime = engine.module.newRuntime();
    const owned: QuickJSHandle[] = [];
    let context: QuickJSContext | undefined;
    this.#arm(timeoutMs);
    try {
      runtime.setMaxStackSize(this.#settings.maxStackBytes);
      runtime.setInterruptHandler(() => this.#interrupt());
      const ctx = (context = runtime.newContext());
      const own = (handle: QuickJSHandle): QuickJSHandle => (owned.push(handle), handle);
      const loadError = (what: string, error: QuickJSHandle): ProgramError => {
        if (this.#timedOut) {
          error.dispose();
          return this.#error(`loading timed out after ${timeoutMs} ms`);
        }
        return this.#error(`cannot load ${what}: ${guestErrorText(ctx, error)}`);
      };
      const evaluate = (code: string, file: string): QuickJSHandle => {
        const result = ctx.evalCode(code, file, { type: "global" });
        if (result.error) throw loadError(file, result.error);
        return own(result.value);
      };
      const install = evaluate(GUEST_BOOTSTRAP, "sandbox-bootstrap.js");
      const decideFactory = evaluate(factorySource(decide), decide.file);
      const applyFactory = decide.hash === apply.hash ? ctx.null : evaluate(factorySource(apply), apply.file);
      const installed = ctx.callFunction(install, ctx.undefined, [
        decideFactory,
        own(ctx.newString(decide.file)),
        applyFactory,
        own(ctx.newString(apply.file)),
      ]);
      if (installed.error) throw loadError("the program", installed.error);
      const verdict = ctx.getString(own(ctx.getProp(own(installed.value), 0)));
      if (verdict !== "ok") throw this.#failure(JSON.parse(verdict.slice(2)) as GuestFailure);
      const run = ctx.getProp(installed.value, 1);
      for (const handle of owned) handle.dispose();
      return { runtime, context: ctx, run };
    } catch (err) {
      if (err instanceof ProgramError && !engine.memory.exhausted) {
        try {
          for (const handle of owned) if (handle.alive) handle.dispose();
          context?.dispose();
          runtime.dispose();
        } catch {
          this.#discardEngine();
        }
        throw err;
      }
      // Out of memory or a host-level failure: the module is not touched again.
      const exhausted = engine.memory.exhausted;
      this.#discardEngine();
      if (exhausted) throw this.#memoryError(err);
      throw this.#error(`cannot load the program: ${messageOf(err)}`, err);
    } finally {
      this.#disarm();
    }
  }

  /** One call into the runner. Returns its reply text; throws ProgramError for limits and failures. */
  #execute(engine: Engine, realm: Realm, op: Op, args: readonly string[], timeoutMs: number): string {
    const { context: ctx, runtime } = realm;
    engine.memory.failedStreak = 0;
    engine.memory.exhausted = false;
    this.#arm(timeoutMs);
    try {
      let reply: string | undefined;
      let failure: string | undefined;
      try {
        const handles = [ctx.newNumber(op), ...args.map((arg) => ctx.newString(arg))];
        const result = ctx.callFunction(realm.run, ctx.undefined, handles);
        for (const handle of handles) handle.dispose();
        if (result.error) {
          if (this.#timedOut) result.error.dispose();
          else failure = guestErrorText(ctx, result.error);
        } else {
          reply = ctx.getString(result.value);
          result.value.dispose();
        }
      } catch (err) {
        // The module's state is unknown (a V8 stack overflow or a trap unwound it mid-call):
        // it is not touched again, not even to free the handles.
        const exhausted = engine.memory.exhausted;
        this.#discardEngine();
        if (exhausted) throw this.#memoryError(err);
        throw this.#error(`the sandbox failed while running the program: ${messageOf(err)}`, err);
      }
      if (engine.memory.exhausted) {
        this.#discardEngine();
        throw this.#memoryError();
      }
      if (this.#timedOut) {
        this.#discardRealm();
        throw this.#error(`timed out after ${timeoutMs} ms`);
      }
      if (failure !== undefined || reply === undefined) {
        this.#discardRealm();
        throw this.#error(`the program failed: ${failure ?? "no reply"}`);
      }
      if (runtime.hasPendingJob()) {
        this.#discardRealm();
        throw this.#error("the program left a promise job pending: programs must be synchronous");
      }
      return reply;
    } finally {
      this.#disarm();
    }
  }

  #arm(timeoutMs: number): void {
    this.#timedOut = false;
    this.#deadline = performance.now() + timeoutMs;
  }

  #disarm(): void {
    this.#deadline = Number.POSITIVE_INFINITY;
  }

  #interrupt(): boolean {
    if (performance.now() <= this.#deadline) return false;
    this.#timedOut = true;
    return true;
  }

  /** Drops the runtime (and with it any pending job) but keeps the module. */
  #discardRealm(): void {
    const realm = this.#realm;
    this.#realm = undefined;
    if (realm === undefined) return;
    try {
      realm.run.dispose();
      realm.context.dispose();
      realm.runtime.dispose();
    } catch {
      this.#discardEngine();
    }
  }

  /** Drops the module without calling into it: its memory goes with it. */
  #discardEngine(): void {
    this.#realm = undefined;
    this.#engine = undefined;
  }

  #failure(failure: GuestFailure): Error {
    const fields = { aggregate_type: this.#source.name, ...(failure.stack ? { stack: failure.stack } : {}) };
    switch (failure.kind) {
      case "decide":
        return new DecideError(failure.message, fields);
      case "apply":
        return new ApplyError(failure.message, fields);
      default:
        return new ProgramError(`${this.#source.name}: ${failure.message}`, fields);
    }
  }

  #memoryError(cause?: unknown): ProgramError {
    return this.#error(`exceeded its memory limit of ${this.#source.limits.memoryMb} MB`, cause);
  }

  #unexpectedReply(reply: string): ProgramError {
    this.#discardRealm();
    return this.#error(`the sandbox returned an unexpected reply: ${reply.slice(0, 80)}`);
  }

  #error(message: string, cause?: unknown): ProgramError {
    return new ProgramError(
      `${this.#source.name}: ${message}`,
      { aggregate_type: this.#source.name },
      cause === undefined ? undefined : { cause },
    );
  }
}

/**
 * The program's CommonJS text as a factory: evaluating it defines a function and runs nothing;
 * each call of the function is a fresh instance of the module. Kept on the first line so that
 * line numbers in stack traces match the compiled text.
 */
function factorySource(module: CompiledModule): string {
  const code = module.code.replace(/^#!.*/, "");
  return `(function (module, exports, require) {"use strict";${code}\n})`;
}

/** The text of an error handle, which it disposes. */
function guestErrorText(ctx: QuickJSContext, error: QuickJSHandle): string {
  try {
    const dumped: unknown = ctx.dump(error);
    if (dumped !== null && typeof dumped === "object") {
      const { name, message } = dumped as { name?: unknown; message?: unknown };
      if (typeof message === "string") return typeof name === "string" ? `${name}: ${message}` : message;
    }
    return String(dumped);
  } catch (err) {
    return `an error that cannot be read (${messageOf(err)})`;
  } finally {
    error.dispose();
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

function unwrapDefault<T>(loaded: unknown): T {
  return (
    typeof loaded === "object" && loaded !== null && "default" in loaded ? loaded.default : loaded
  ) as T;
}

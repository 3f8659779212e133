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
 *   In a worker thread with a larger stack (`resourceLimits.stackSizeMb`), raise `maxStackBytes`:
 *   the pool (worker-pool.ts) runs 16 MB threads with 1 MiB, which holds about 5,600 plain
 *   frames. Measured there: the JSON parser needs 4 to 8 MB of host stack per MiB of QuickJS
 *   stack (its frames keep little on QuickJS's stack), so at 16 MB a 100,000-deep
 *   `JSON.parse` is still a clean guest "stack overflow"; at 4 MB it is a host RangeError. A
 *   100,000-deep `JSON.stringify` does not overflow there at all: its cycle check is quadratic
 *   and runs inside one built-in, so the pool's watchdog ends it.
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
 *
 * - Strings cross with TextEncoder/TextDecoder straight into and out of the module's memory
 *   (`StringBridge`), not through the library's `newString`/`getString`: its glue encodes
 *   UTF-8 in a JavaScript loop, about 0.5 ms for the 32 KB of 1,000 events, which was a fifth
 *   of an applyAll call. The bridge uses three internals of quickjs-emscripten-core 0.32
 *   (pinned exactly); without them it falls back to the public API.
 *
 * - Every ProgramError carries `fields.reason` (program-failure.ts): the guest names the
 *   reasons it sees, the host those it sees (timeout, memory, a host-level failure).
 *
 * - In a worker thread (worker.ts) the same class runs behind `call`, which returns the guest's
 *   reply text unparsed so that the reply crosses the thread boundary as one string.
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
import { ProgramFailure } from "./program-failure.ts";
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
  /** The QuickJS WebAssembly module, already compiled (a worker gets it from the main thread). */
  readonly wasmModule?: WebAssembly.Module;
  /**
   * Called after a program's module was dropped (memory exhausted, host-level failure). Its
   * memory (up to `memoryMb` + overhead, mostly touched by then) is freed only when V8 collects
   * the dropped `WebAssembly.Memory`, which a small heap may not do for a long time; a worker
   * thread uses this to collect at once, so that incidents do not pile up resident memory.
   */
  readonly onModuleDropped?: () => void;
}

/** A sandbox whose programs also answer `call`: what the worker thread uses. */
export interface QuickJsSandbox extends Sandbox {
  load(source: ProgramSource): Promise<QuickJsProgram>;
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

/** The runner's operations (guest-bootstrap.ts). */
export const Op = { decide: 0, applyAll: 1 } as const;
export type Op = (typeof Op)[keyof typeof Op];

/** Reads the QuickJS WebAssembly binary and compiles it (tens of ms; do it once per thread or share it). */
export async function compileQuickJsWasm(): Promise<WebAssembly.Module> {
  const bytes = await readFile(
    createRequire(import.meta.url).resolve("@jitl/quickjs-wasmfile-release-sync/wasm"),
  );
  return wasmApi.compile(bytes);
}

/** Creates a sandbox that runs each loaded program in its own QuickJS WASM module. */
export function createQuickJsSandbox(opts: QuickJsSandboxOptions = {}): QuickJsSandbox {
  const settings: Settings = {
    maxStackBytes: opts.maxStackBytes ?? DEFAULT_STACK_BYTES,
    memoryOverheadMb: opts.memoryOverheadMb ?? DEFAULT_OVERHEAD_MB,
    loadTimeoutMs: opts.loadTimeoutMs ?? DEFAULT_LOAD_TIMEOUT_MS,
    onModuleDropped: opts.onModuleDropped,
  };
  // Compiled once per sandbox and instantiated per program: compiling is the slow part.
  let wasm: Promise<WebAssembly.Module> | undefined =
    opts.wasmModule === undefined ? undefined : Promise.resolve(opts.wasmModule);
  const compileWasm = (): Promise<WebAssembly.Module> => (wasm ??= compileQuickJsWasm());
  const programs = new Map<string, Promise<QuickJsProgram>>();
  let closed = false;

  return {
    async load(source: ProgramSource): Promise<QuickJsProgram> {
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
  readonly onModuleDropped: (() => void) | undefined;
}

/** One WASM module and its memory. */
interface Engine {
  readonly module: QuickJSWASMModule;
  readonly memory: MemoryWatch;
  readonly strings: StringBridge;
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
  readonly reason?: string;
}

/** decide's reply text (`O\n<events>\n<state>`) as an outcome. */
export function parseDecideReply(reply: string): DecideOutcome {
  const split = reply.indexOf("\n", 2);
  if (!reply.startsWith("O\n") || split < 0) throw new Error(`not a decide reply: ${reply.slice(0, 80)}`);
  const events = JSON.parse(reply.slice(2, split)) as JsonObject[];
  // JSON text has no raw newline: a third line is the caught-up state (decide with `pending`).
  const caught = reply.indexOf("\n", split + 1);
  if (caught < 0) return { events, state: detach(reply, split + 1) };
  return { events, state: detach(reply, split + 1, caught), caughtUp: detach(reply, caught + 1) };
}

/** A decide call's arguments as the runner takes them (QuickJsProgram.call). */
export function decideArgs(
  stateJson: string,
  command: JsonObject,
  context: DecideContext,
  pending: readonly JsonObject[] | undefined,
): string[] {
  const args = [stateJson, JSON.stringify(command), JSON.stringify(context)];
  if (pending !== undefined) args.push(JSON.stringify(pending));
  return args;
}

/** applyAll's reply text (`S\n<state>`) as the state's JSON text. */
export function parseApplyAllReply(reply: string): string {
  if (!reply.startsWith("S\n")) throw new Error(`not an applyAll reply: ${reply.slice(0, 80)}`);
  return detach(reply, 2);
}

/**
 * `text.slice(start)` as a string of its own. V8 makes a longer slice a view that keeps the
 * whole parent alive, and the state text is kept in the aggregate cache: a view would keep the
 * decide reply (events included) alive with it, per cached aggregate. The round trip is
 * through UTF-16, which keeps every code unit (a lone surrogate too), in about 0.3 µs for a
 * small state.
 */
function detach(text: string, start: number, end?: number): string {
  return Buffer.from(text.slice(start, end), "utf16le").toString("utf16le");
}

/** One loaded program in this thread. */
export class QuickJsProgram implements AggregateProgram {
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

  async decide(
    stateJson: string,
    command: JsonObject,
    context: DecideContext,
    pending?: readonly JsonObject[],
  ): Promise<DecideOutcome> {
    const reply = await this.call(Op.decide, decideArgs(stateJson, command, context, pending));
    if (!reply.startsWith("O\n")) throw this.#unexpectedReply(reply);
    return parseDecideReply(reply);
  }

  async applyAll(stateJson: string, events: readonly JsonObject[]): Promise<string> {
    const reply = await this.call(Op.applyAll, [stateJson, JSON.stringify(events)]);
    if (!reply.startsWith("S\n")) throw this.#unexpectedReply(reply);
    return parseApplyAllReply(reply);
  }

  close(): void {
    this.#closed = true;
    this.#discardRealm();
    this.#engine = undefined;
  }

  /**
   * One runner call with its arguments as JSON text (decide: state, command, context; applyAll:
   * state, events). Returns the success reply text (`O\n…` or `S\n…`); throws the contract
   * error for a failure.
   */
  async call(op: Op, args: readonly string[]): Promise<string> {
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
        throw this.#error(`cannot start a QuickJS module: ${messageOf(err)}`, ProgramFailure.Host, err);
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
    return { module, memory: watch, strings: StringBridge.for(module) };
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
          return this.#error(`loading timed out after ${timeoutMs} ms`, ProgramFailure.Timeout);
        }
        const text = guestErrorText(ctx, error);
        return this.#error(`cannot load ${what}: ${text}`, reasonOfText(text, ProgramFailure.Load));
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
        own(engine.strings.newString(ctx, decide.file)),
        applyFactory,
        own(engine.strings.newString(ctx, apply.file)),
      ]);
      if (installed.error) throw loadError("the program", installed.error);
      const verdict = engine.strings.getString(ctx, own(ctx.getProp(own(installed.value), 0)));
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
      throw this.#error(`cannot load the program: ${messageOf(err)}`, hostReason(err), err);
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
        const handles = [ctx.newNumber(op)];
        for (const arg of args) handles.push(engine.strings.newString(ctx, arg));
        const result = ctx.callFunction(realm.run, ctx.undefined, handles);
        for (const handle of handles) handle.dispose();
        if (result.error) {
          if (this.#timedOut) result.error.dispose();
          else failure = guestErrorText(ctx, result.error);
        } else {
          reply = engine.strings.getString(ctx, result.value);
          result.value.dispose();
        }
      } catch (err) {
        // The module's state is unknown (a V8 stack overflow or a trap unwound it mid-call):
        // it is not touched again, not even to free the handles.
        const exhausted = engine.memory.exhausted;
        this.#discardEngine();
        if (exhausted) throw this.#memoryError(err);
        throw this.#error(
          `the sandbox failed while running the program: ${messageOf(err)}`,
          hostReason(err),
          err,
        );
      }
      if (engine.memory.exhausted) {
        this.#discardEngine();
        throw this.#memoryError();
      }
      if (this.#timedOut) {
        this.#discardRealm();
        throw this.#error(`timed out after ${timeoutMs} ms`, ProgramFailure.Timeout);
      }
      if (failure !== undefined || reply === undefined) {
        this.#discardRealm();
        throw this.#error(
          `the program failed: ${failure ?? "no reply"}`,
          reasonOfText(failure ?? "", ProgramFailure.Host),
        );
      }
      if (runtime.hasPendingJob()) {
        this.#discardRealm();
        throw this.#error(
          "the program left a promise job pending: programs must be synchronous",
          ProgramFailure.PendingJob,
        );
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
    const had = this.#engine !== undefined;
    this.#realm = undefined;
    this.#engine = undefined;
    if (had) this.#settings.onModuleDropped?.();
  }

  #failure(failure: GuestFailure): Error {
    const fields = { aggregate_type: this.#source.name, ...(failure.stack ? { stack: failure.stack } : {}) };
    switch (failure.kind) {
      case "decide":
        return new DecideError(failure.message, fields);
      case "apply":
        return new ApplyError(failure.message, fields);
      default:
        return new ProgramError(`${this.#source.name}: ${failure.message}`, {
          ...fields,
          reason: failure.reason ?? ProgramFailure.Host,
        });
    }
  }

  #memoryError(cause?: unknown): ProgramError {
    return this.#error(
      `exceeded its memory limit of ${this.#source.limits.memoryMb} MB`,
      ProgramFailure.Memory,
      cause,
    );
  }

  #unexpectedReply(reply: string): ProgramError {
    this.#discardRealm();
    return this.#error(
      `the sandbox returned an unexpected reply: ${reply.slice(0, 80)}`,
      ProgramFailure.Host,
    );
  }

  #error(message: string, reason: ProgramFailure, cause?: unknown): ProgramError {
    return new ProgramError(
      `${this.#source.name}: ${message}`,
      { aggregate_type: this.#source.name, reason },
      cause === undefined ? undefined : { cause },
    );
  }
}

/** A host-level failure's reason: V8's own stack overflow is a stack failure, the rest "host". */
function hostReason(err: unknown): ProgramFailure {
  return err instanceof RangeError && /call stack/i.test(err.message)
    ? ProgramFailure.Stack
    : ProgramFailure.Host;
}

/** The reason of an error that escaped the runner, from its text. */
function reasonOfText(text: string, otherwise: ProgramFailure): ProgramFailure {
  return /stack overflow|call stack/i.test(text) ? ProgramFailure.Stack : otherwise;
}

/** What the bridge needs of the library's internals (quickjs-emscripten-core 0.32). */
interface EmscriptenHeap {
  readonly HEAPU8: Uint8Array;
  _malloc(size: number): number;
  _free(pointer: number): void;
}
interface StringFfi {
  QTS_NewString(ctx: number, chars: number): number;
  QTS_GetString(ctx: number, value: number): number;
  QTS_FreeCString(ctx: number, chars: number): void;
}
interface ContextInternals {
  readonly ctx: { readonly value: number };
  readonly memory: { heapValueHandle(pointer: number): QuickJSHandle };
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

/**
 * Moves strings into and out of one module's memory with the platform's UTF-8 codec. Strings
 * are JSON text (never a raw NUL, which would end a C string early).
 */
class StringBridge {
  readonly #heap: EmscriptenHeap | undefined;
  readonly #ffi: StringFfi | undefined;

  private constructor(heap: EmscriptenHeap | undefined, ffi: StringFfi | undefined) {
    this.#heap = heap;
    this.#ffi = ffi;
  }

  static for(module: QuickJSWASMModule): StringBridge {
    const inside = module as unknown as { module?: Partial<EmscriptenHeap>; ffi?: Partial<StringFfi> };
    const heap = inside.module;
    const ffi = inside.ffi;
    const usable =
      typeof heap?._malloc === "function" &&
      typeof heap._free === "function" &&
      heap.HEAPU8 instanceof Uint8Array &&
      typeof ffi?.QTS_NewString === "function" &&
      typeof ffi.QTS_GetString === "function" &&
      typeof ffi.QTS_FreeCString === "function";
    return usable
      ? new StringBridge(heap as EmscriptenHeap, ffi as StringFfi)
      : new StringBridge(undefined, undefined);
  }

  newString(ctx: QuickJSContext, text: string): QuickJSHandle {
    const heap = this.#heap;
    const ffi = this.#ffi;
    const inner = ctx as unknown as Partial<ContextInternals>;
    if (heap === undefined || ffi === undefined || inner.ctx === undefined || inner.memory === undefined) {
      return ctx.newString(text);
    }
    const size = Buffer.byteLength(text, "utf8");
    const chars = heap._malloc(size + 1);
    if (chars === 0) throw new RangeError("out of memory while passing a string to the program");
    try {
      // Read HEAPU8 after malloc: growing the memory replaces the view.
      const bytes = heap.HEAPU8;
      utf8Encoder.encodeInto(text, bytes.subarray(chars, chars + size));
      bytes[chars + size] = 0;
      return inner.memory.heapValueHandle(ffi.QTS_NewString(inner.ctx.value, chars));
    } finally {
      heap._free(chars);
    }
  }

  getString(ctx: QuickJSContext, handle: QuickJSHandle): string {
    const heap = this.#heap;
    const ffi = this.#ffi;
    const inner = ctx as unknown as Partial<ContextInternals>;
    if (heap === undefined || ffi === undefined || inner.ctx === undefined) return ctx.getString(handle);
    const chars = ffi.QTS_GetString(inner.ctx.value, handle.value);
    if (chars === 0) throw new RangeError("out of memory while reading the program's reply");
    try {
      const bytes = heap.HEAPU8;
      const end = bytes.indexOf(0, chars);
      return utf8Decoder.decode(bytes.subarray(chars, end < 0 ? bytes.length : end));
    } finally {
      ffi.QTS_FreeCString(inner.ctx.value, chars);
    }
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

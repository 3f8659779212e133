/**
 * The body of one sandbox thread: the in-thread QuickJS sandbox behind a message port. It loads
 * the programs the pool sends and answers each call with one message. Everything that bounds a
 * program inside QuickJS (interrupt deadline, memory ceiling, stack budget) applies here as in
 * the main thread; what it cannot bound (a long built-in) the pool's watchdog ends by stopping
 * this thread.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { parentPort, workerData } from "node:worker_threads";
import { isAggregateError } from "../contract/index.ts";
import { ProgramFailure } from "./program-failure.ts";
import { createQuickJsSandbox, type Op, type QuickJsProgram } from "./quickjs-sandbox.ts";
import {
  Progress,
  type CallBatch,
  type CallRequest,
  type CallResult,
  type FromWorker,
  type ToWorker,
  type WireError,
  type WorkerSettings,
} from "./worker-protocol.ts";

const port = parentPort;
if (port === null) throw new Error("worker.ts runs only as a worker thread (see worker-pool.ts)");

const settings = workerData as WorkerSettings;
const progress = new Progress(settings.progress);

/**
 * A dropped module's memory is garbage only V8 can free, and this thread's heap is small enough
 * that V8 may not collect for a long time: each memory incident would then keep its
 * `memoryMb` + overhead resident. So the thread collects right after the call that dropped one
 * (a few ms on this heap, and only after an incident). `--expose-gc` set at run time exposes
 * `gc` to contexts created after it.
 */
setFlagsFromString("--expose-gc");
const collect = runInNewContext("gc") as () => void;
let collecting = false;
function collectSoon(): void {
  if (collecting) return;
  collecting = true;
  setImmediate(() => {
    collecting = false;
    collect();
  });
}

const sandbox = createQuickJsSandbox({
  maxStackBytes: settings.maxStackBytes,
  memoryOverheadMb: settings.memoryOverheadMb,
  loadTimeoutMs: settings.loadTimeoutMs,
  onModuleDropped: collectSoon,
  ...(settings.wasmModule === undefined ? {} : { wasmModule: settings.wasmModule }),
});
const programs = new Map<number, Promise<QuickJsProgram>>();

const send = (message: FromWorker): void => port.postMessage(message);

function wire(err: unknown): WireError {
  if (isAggregateError(err)) return { name: err.name, message: err.message, fields: { ...err.fields } };
  const message = err instanceof Error ? err.message : String(err);
  return { name: "ProgramError", message, fields: { reason: ProgramFailure.Host } };
}

/** Runs a batch's calls one after the other and answers with all their results in one message. */
async function runBatch(batch: CallBatch): Promise<void> {
  const results: CallResult[] = [];
  for (let i = 0; i < batch.length; i++) {
    progress.start(i);
    results.push(await call(batch[i]!));
  }
  // Past the last call: the watchdog must not judge the finished last call by its start time
  // while the results wait in the main thread's queue (a busy main thread runs overdue timers
  // before it reads messages).
  progress.start(batch.length);
  send(results);
}

async function call([callId, programId, op, ...args]: CallRequest): Promise<CallResult> {
  const loading = programs.get(programId);
  try {
    if (loading === undefined) throw new Error(`program ${programId} is not loaded in this thread`);
    return [callId, await (await loading).call(op as Op, args)];
  } catch (err) {
    // A failed call may have dropped the program's runtime or module: rebuild it now, while
    // the thread would be idle, rather than inside the next call's budget.
    if (loading !== undefined) setImmediate(() => void warm(loading));
    return [callId, null, wire(err)];
  }
}

async function warm(loading: Promise<QuickJsProgram>): Promise<void> {
  try {
    await (await loading).start();
  } catch {
    // The next call reports whatever is wrong.
  }
}

async function load(id: number, loading: Promise<QuickJsProgram>): Promise<void> {
  try {
    await loading;
    send({ t: "loaded", id });
  } catch (err) {
    programs.delete(id);
    send({ t: "loaded", id, error: wire(err) });
  }
}

port.on("message", (message: ToWorker) => {
  if (Array.isArray(message)) {
    void runBatch(message);
    return;
  }
  switch (message.t) {
    case "load": {
      const loading = sandbox.load(message.source);
      programs.set(message.id, loading);
      void load(message.id, loading);
      return;
    }
    case "unload": {
      // The sandbox caches by content, and another id may share the program: only forget the id.
      programs.delete(message.id);
      return;
    }
  }
});

send({ t: "ready" });

/**
 * The read model's writer thread (see sqlite-store.ts): one SQLite connection that runs the
 * store's changes one after the other, in the order they were sent, and answers each after its
 * transaction committed (or with the error that rolled it back).
 */
import { parentPort, workerData } from "node:worker_threads";
import { openDatabase, sqliteWrites, type WriteReply, type WriteRequest } from "./sqlite-store.ts";

const port = parentPort;
if (port === null) throw new Error("sqlite-writer.ts runs only as a worker thread (see sqlite-store.ts)");

const { file } = workerData as { file: string };
const write = sqliteWrites(openDatabase(file));

port.on("message", ({ id, request }: { id: number; request: WriteRequest }) => {
  let reply: WriteReply;
  try {
    write(request);
    reply = { id };
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    const code = (e as { code?: unknown }).code;
    reply = {
      id,
      error: { name: e.name, message: e.message, ...(typeof code === "string" ? { code } : {}) },
    };
  }
  port.postMessage(reply);
  if (request.op === "close") port.close();
});

/**
 * Reads and compare-and-set writes of the placement bucket, for the CLI and the move protocol.
 * Every write names the revision it was based on (0: the key must not exist), so two operators
 * (or two steps of one move) can never overwrite each other's change unseen.
 */
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { parsePlacementEntry, type PlacementEntry } from "../placement/index.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One key of the bucket as stored. */
export interface StoredValue {
  readonly key: string;
  readonly revision: number;
  /** The parsed JSON value (or the raw text when it is not JSON). */
  readonly value: unknown;
  /** The validated entry; undefined when the value is invalid (see `problem`). */
  readonly entry: PlacementEntry | undefined;
  readonly problem?: string;
}

/** A write refused: another writer changed the key first, or the key is missing. */
export class PlacementWriteError extends Error {
  override readonly name = "PlacementWriteError";
  readonly code: "conflict" | "not-found" | "invalid";
  constructor(message: string, code: "conflict" | "not-found" | "invalid", options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

export interface PlacementStore {
  readonly kv: KV;
  get(key: string): Promise<StoredValue | undefined>;
  /** Every live key, sorted. */
  list(): Promise<StoredValue[]>;
  /**
   * Writes `value` under `key` if the key is at `revision` (0: only if absent). The value is
   * validated first (a worker would ignore an invalid one). Returns the new revision.
   */
  put(key: string, value: unknown, revision: number): Promise<number>;
  /** Deletes `key` if it is at `revision`. */
  delete(key: string, revision: number): Promise<void>;
}

export function openPlacementStore(kv: KV): PlacementStore {
  const read = (key: string, revision: number, data: Uint8Array): StoredValue => {
    const text = decoder.decode(data);
    let value: unknown = text;
    try {
      value = JSON.parse(text);
    } catch {
      // kept as text
    }
    const parsed = parsePlacementEntry(key, data);
    return parsed.ok
      ? { key, revision, value, entry: parsed.entry }
      : { key, revision, value, entry: undefined, problem: parsed.problem };
  };
  const cas = async <T>(key: string, write: () => Promise<T>): Promise<T> => {
    try {
      return await write();
    } catch (err) {
      if (
        err instanceof JetStreamApiError &&
        (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
          err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
      ) {
        throw new PlacementWriteError(
          `${key} was changed by someone else; read it again and retry`,
          "conflict",
          {
            cause: err,
          },
        );
      }
      throw err;
    }
  };
  return {
    kv,
    async get(key) {
      const e = await kv.get(key);
      if (!e || e.operation !== "PUT") return undefined;
      return read(key, e.revision, e.value);
    },
    async list() {
      const keys: string[] = [];
      for await (const k of await kv.keys()) keys.push(k);
      const out: StoredValue[] = [];
      for (const key of keys.sort()) {
        const e = await kv.get(key);
        if (e && e.operation === "PUT") out.push(read(key, e.revision, e.value));
      }
      return out;
    },
    async put(key, value, revision) {
      const data = encoder.encode(JSON.stringify(value));
      const parsed = parsePlacementEntry(key, data);
      if (!parsed.ok) throw new PlacementWriteError(parsed.problem, "invalid");
      return cas(key, () => (revision === 0 ? kv.create(key, data) : kv.update(key, data, revision)));
    },
    async delete(key, revision) {
      await cas(key, () => kv.delete(key, { previousSeq: revision }));
    },
  };
}

/**
 * Snapshots in JetStream KV (CONTRACT.md §4). A snapshot is a cache: a damaged or foreign value
 * is reported as missing (and logged), and a write never replaces a newer snapshot, which
 * compare-and-set on the KV revision guarantees across replicas.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { JetStreamApiError, JetStreamApiCodes } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import * as v from "valibot";
import { Snapshot, StorageError } from "../contract/index.ts";
import type { AggregateRef, Logger, SnapshotStore, StoredSnapshot } from "../aggregate/index.ts";
import { snapshotKey } from "../naming/index.ts";

export interface SnapshotBucketOptions {
  readonly replicas?: number;
}

/** Opens the snapshot bucket, creating it when missing. */
export async function openSnapshotBucket(
  nc: NatsConnection,
  bucket: string,
  options: SnapshotBucketOptions = {},
): Promise<KV> {
  // One revision per key is all a cache needs.
  return new Kvm(nc).create(bucket, { history: 1, replicas: options.replicas ?? 1 });
}

export interface SnapshotStoreOptions {
  readonly kv: KV;
  readonly log: Logger;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Compare-and-set attempts before a snapshot write gives up: each lost attempt means another
 * writer made progress, so this only bounds a pathological race (a snapshot is only a cache). */
const CAS_ATTEMPTS = 20;

export function createSnapshotStore(options: SnapshotStoreOptions): SnapshotStore {
  const { kv, log } = options;

  async function read(ref: AggregateRef): Promise<StoredSnapshot | undefined> {
    const key = snapshotKey(ref.tenant_id, ref.aggregate_type, ref.aggregate_id);
    let entry;
    try {
      entry = await kv.get(key);
    } catch (err) {
      throw new StorageError(`reading snapshot ${key} failed`, {}, { cause: err });
    }
    if (!entry) return undefined;
    if (entry.operation !== "PUT") return { snapshot: undefined, revision: entry.revision };
    let snapshot: Snapshot | undefined;
    try {
      snapshot = v.parse(Snapshot, JSON.parse(decoder.decode(entry.value)));
    } catch (err) {
      log.warn({ err, key, revision: entry.revision }, "snapshot ignored: it does not parse");
      return { snapshot: undefined, revision: entry.revision };
    }
    if (
      snapshot.tenant_id !== ref.tenant_id ||
      snapshot.aggregate_type !== ref.aggregate_type ||
      snapshot.aggregate_id !== ref.aggregate_id
    ) {
      log.warn(
        { key, found_tenant: snapshot.tenant_id, found_aggregate: snapshot.aggregate_id },
        "snapshot ignored: it belongs to another aggregate",
      );
      return { snapshot: undefined, revision: entry.revision };
    }
    return { snapshot, revision: entry.revision };
  }

  return {
    get: read,

    async put(ref, snapshot, knownRevision) {
      const key = snapshotKey(ref.tenant_id, ref.aggregate_type, ref.aggregate_id);
      const data = encoder.encode(JSON.stringify(snapshot));
      let revision = knownRevision;
      for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        if (revision === undefined) {
          const current = await read(ref);
          if (current?.snapshot && current.snapshot.version >= snapshot.version) return false;
          revision = current?.revision ?? 0;
        }
        try {
          await kv.put(key, data, { previousSeq: revision });
          return true;
        } catch (err) {
          const lost =
            err instanceof JetStreamApiError &&
            (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
              err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);
          if (!lost) throw new StorageError(`writing snapshot ${key} failed`, {}, { cause: err });
          // Someone else wrote in between: look again, and keep theirs if it is newer.
          revision = undefined;
        }
      }
      return false;
    },

    async delete(ref) {
      const key = snapshotKey(ref.tenant_id, ref.aggregate_type, ref.aggregate_id);
      try {
        await kv.delete(key);
      } catch (err) {
        throw new StorageError(`deleting snapshot ${key} failed`, {}, { cause: err });
      }
    },
  };
}

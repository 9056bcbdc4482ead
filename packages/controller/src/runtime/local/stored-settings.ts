/**
 * `pgha up`'s part in the cluster's settings (the `config` record): before any agent
 * starts, store the settings from its flags when none are stored, and apply the
 * synchronous flags given explicitly when they differ from the stored ones.
 */
import type { ClusterKeys, ConfigRecord } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import {
  type ConfigFlags,
  configFromFlags,
  createClusterConfigIfAbsent,
  updateClusterConfig,
} from '../../adapters/cluster-config.js';
import { formatChange, textOf } from '../../decide/config-change.js';

/** The synchronous settings given on `pgha up`'s command line (absent: keep the stored one). */
export interface SynchronousFlags {
  readonly mode?: ConfigRecord['synchronousMode'];
  readonly count?: number;
  readonly strict?: boolean;
  /** `pgha up --failsafe`: failsafe mode (the `config` record's `failsafeMode`). */
  readonly failsafe?: boolean;
}

/**
 * Creates the record from `flags` when there is none, then changes the synchronous
 * settings given in `explicit` where they differ from the stored ones (guarded by
 * the record's mod revision). Returns the stored record; says what it did through
 * `progress`.
 *
 * @throws PghaError `protocol` when the stored record does not parse.
 */
export async function settleStoredSettings(
  etcd: Etcd3,
  keys: ClusterKeys,
  flags: ConfigFlags,
  explicit: SynchronousFlags,
  progress: (line: string) => void,
  now: () => Date = () => new Date(),
): Promise<ConfigRecord> {
  const initial: ConfigRecord = {
    ...configFromFlags({
      ...flags,
      ...(explicit.mode === undefined ? {} : { synchronousMode: explicit.mode }),
      ...(explicit.count === undefined ? {} : { synchronousCount: explicit.count }),
      ...(explicit.strict === undefined ? {} : { synchronousStrict: explicit.strict }),
    }),
    ...(explicit.failsafe === undefined ? {} : { failsafeMode: explicit.failsafe }),
    version: 1,
    updatedAt: now().toISOString(),
    updatedBy: 'pgha up',
  };
  const stored = await createClusterConfigIfAbsent(etcd, keys, initial);
  if (stored.created) {
    // What they say is printed next, by the caller, for new and kept settings alike.
    progress(`stored the cluster settings (${keys.config}, version 1)`);
    return stored.record;
  }
  const wanted: Partial<ConfigRecord> = {
    ...(explicit.mode === undefined ? {} : { synchronousMode: explicit.mode }),
    ...(explicit.count === undefined ? {} : { synchronousCount: explicit.count }),
    ...(explicit.strict === undefined ? {} : { synchronousStrict: explicit.strict }),
    ...(explicit.failsafe === undefined ? {} : { failsafeMode: explicit.failsafe }),
  };
  const differs = (record: ConfigRecord) =>
    Object.entries(wanted).some(([k, v]) => record[k as keyof ConfigRecord] !== v);
  if (!differs(stored.record)) return stored.record;
  const result = await updateClusterConfig(etcd, keys, (current) => ({ ...current, ...wanted }), {
    base: initial,
    updatedBy: 'pgha up',
    now,
  });
  const previous = result.previous;
  const changes = Object.keys(wanted)
    .map((key) => ({ key, from: previous === null ? null : textOf(previous, key), to: textOf(result.record, key) }))
    .filter((c) => c.from !== c.to);
  if (result.written)
    progress(
      `changed the stored cluster settings (version ${previous?.version ?? 0} -> ${result.record.version}) as the flags say: ${changes.map(formatChange).join(', ')}`,
    );
  return result.record;
}

/** `quorum (ANY 1 of the replicas, degrades to asynchronous)` / `off (asynchronous)`. */
export function describeSynchronous(record: ConfigRecord): string {
  return (
    (record.synchronousMode === 'off'
      ? 'synchronous replication off (asynchronous)'
      : `synchronous replication ${record.synchronousMode} (ANY ${record.synchronousCount} of the replicas confirms each commit; ${record.synchronousStrict ? 'strict: commits wait when too few replicas can confirm' : 'not strict: degrades to asynchronous when too few replicas can confirm'})`) +
    (record.failsafeMode === true ? '; failsafe mode on' : '')
  );
}

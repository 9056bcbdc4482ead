/**
 * The cluster's settings in etcd (the `config` record): read, create when absent, and
 * change in a transaction guarded by the mod revision read. Writers: `pgha config set`
 * and `pgha up` (the local runtime). Readers: agents (lease timing at start,
 * PostgreSQL parameters live), controllers (the lag bound), `pgha status`.
 *
 * While there is no record every process uses its own flags ({@link effectiveConfig}).
 */
import { type ClusterKeys, ConfigRecord, defaultConfig, PghaError, ProtocolError } from '@pgha/core';
import type { Etcd3 } from 'etcd3';

/** The record as stored, with the mod revision that guards the next change. */
export interface StoredConfig {
  readonly record: ConfigRecord;
  /** etcd's mod revision of the key (decimal text). */
  readonly modRevision: string;
}

/** The settings a process was given by its flags, for when there is no record. */
export type ConfigFlags = Partial<
  Pick<
    ConfigRecord,
    | 'leaseTtlMillis'
    | 'keepaliveIntervalMillis'
    | 'fencingMarginMillis'
    | 'maximumLagOnFailoverBytes'
    | 'synchronousMode'
    | 'synchronousCount'
    | 'synchronousStrict'
    | 'postgresParameters'
  >
>;

/** The defaults overridden by `flags` (a process's settings while there is no record). */
export function configFromFlags(flags: ConfigFlags): ConfigRecord {
  const defined = Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined));
  return { ...defaultConfig, ...defined };
}

/**
 * The settings a process uses: the record when there is one, else its flags (over
 * the defaults). A record always wins as a whole: a flag never overrides one of its
 * fields (see docs/architecture.md, "Cluster settings").
 */
export function effectiveConfig(record: ConfigRecord | null, fromFlags: ConfigFlags): ConfigRecord {
  return record ?? configFromFlags(fromFlags);
}

function malformed(keys: ClusterKeys, error: ProtocolError): PghaError {
  return new PghaError(
    'protocol',
    `the cluster settings at ${keys.config} cannot be read (${error.message}): write a valid record with \`pgha config set --replace-malformed KEY=VALUE…\` (it starts from the defaults), or fix the key in etcd`,
    { cause: error },
  );
}

/** Reads the raw key: its text and mod revision, null when absent. */
async function readRaw(etcd: Etcd3, keys: ClusterKeys): Promise<{ text: string; modRevision: string } | null> {
  const res = await etcd.get(keys.config).exec();
  const kv = res.kvs[0];
  return kv === undefined ? null : { text: kv.value.toString(), modRevision: String(kv.mod_revision) };
}

/**
 * The stored record and its mod revision, or null when there is none.
 *
 * @throws PghaError `protocol` naming the key and how to repair it when the record
 *   does not parse; etcd's own failures pass through (callers translate them).
 */
export async function readClusterConfig(etcd: Etcd3, keys: ClusterKeys): Promise<StoredConfig | null> {
  const raw = await readRaw(etcd, keys);
  if (raw === null) return null;
  try {
    return { record: ConfigRecord.decode(raw.text), modRevision: raw.modRevision };
  } catch (error) {
    if (error instanceof ProtocolError) throw malformed(keys, error);
    throw error;
  }
}

/**
 * Creates the record when there is none (one create-if-absent transaction) and
 * returns what etcd holds afterwards: `created` says whether it is ours.
 *
 * @throws PghaError `protocol` when a record exists and does not parse.
 */
export async function createClusterConfigIfAbsent(
  etcd: Etcd3,
  keys: ClusterKeys,
  record: ConfigRecord,
): Promise<StoredConfig & { readonly created: boolean }> {
  const text = ConfigRecord.encode(record);
  const res = await etcd
    .if(keys.config, 'Create', '==', 0)
    .then(etcd.put(keys.config).value(text))
    .else(etcd.get(keys.config))
    .commit();
  if (res.succeeded)
    return { record: ConfigRecord.decode(text), modRevision: String(res.header.revision), created: true };
  const kv = res.responses[0]?.response_range?.kvs[0];
  if (kv === undefined) {
    // Deleted between the compare and the read: read again (a later create wins).
    const now = await readClusterConfig(etcd, keys);
    if (now === null) return createClusterConfigIfAbsent(etcd, keys, record);
    return { ...now, created: false };
  }
  try {
    return { record: ConfigRecord.decode(kv.value.toString()), modRevision: String(kv.mod_revision), created: false };
  } catch (error) {
    if (error instanceof ProtocolError) throw malformed(keys, error);
    throw error;
  }
}

/**
 * Writes `record` only while the stored one is the version read: `expectedModRevision`
 * null means "only if there is none" (create-if-absent). Returns the new mod revision,
 * or null when the guard failed (someone wrote first: read again and decide again).
 */
export async function putClusterConfigIf(
  etcd: Etcd3,
  keys: ClusterKeys,
  record: ConfigRecord,
  expectedModRevision: string | null,
): Promise<string | null> {
  const text = ConfigRecord.encode(record);
  const guard =
    expectedModRevision === null
      ? etcd.if(keys.config, 'Create', '==', 0)
      : etcd.if(keys.config, 'Mod', '==', expectedModRevision);
  const res = await guard.then(etcd.put(keys.config).value(text)).commit();
  return res.succeeded ? String(res.header.revision) : null;
}

/** Options of {@link updateClusterConfig}. */
export interface ConfigUpdateOptions {
  /** The settings to start from when no record exists (a process's flags over the defaults). */
  readonly base: ConfigRecord;
  /** Who writes (`pgha config set`, `pgha up`): the record's `updatedBy`. */
  readonly updatedBy: string;
  /** Replace a record that does not parse, starting from `base`. Default false: refuse. */
  readonly replaceMalformed?: boolean;
  /** Attempts when another writer changes the record in between. Default 5. */
  readonly attempts?: number;
  readonly now?: () => Date;
}

/** What {@link updateClusterConfig} did. */
export interface ConfigUpdate extends StoredConfig {
  /** The record before the change; null when there was none (or a malformed one was replaced). */
  readonly previous: ConfigRecord | null;
  /** Whether anything was written (false: the change left every setting as it was). */
  readonly written: boolean;
}

function versionIn(text: string): number {
  try {
    const version = (JSON.parse(text) as { version?: unknown })?.version;
    return typeof version === 'number' &&
      Number.isSafeInteger(version) &&
      version > 0 &&
      version < Number.MAX_SAFE_INTEGER
      ? version
      : 0;
  } catch {
    return 0;
  }
}

/** Settings equal, ignoring the version and who wrote it when. */
function sameSettings(a: ConfigRecord, b: ConfigRecord): boolean {
  const strip = ({ version: _v, updatedAt: _a, updatedBy: _b, ...rest }: ConfigRecord) => rest;
  return JSON.stringify(sortKeys(strip(a))) === JSON.stringify(sortKeys(strip(b)));
}

function sortKeys(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => [k, sortKeys(v)]),
  );
}

/**
 * Changes the record: reads it (or starts from `options.base` when there is none),
 * applies `change`, and writes the result with `version + 1`, `updatedAt` and
 * `updatedBy`, in a transaction guarded by the mod revision read (create-if-absent
 * when there was none). When another writer got in between it reads again and
 * re-applies `change`, a few times. A change that alters no setting writes nothing.
 * `change` may throw (an invalid assignment): nothing is written then.
 *
 * @throws PghaError `conflict` when the record kept changing under us; `protocol`
 *   when the stored record does not parse (unless `replaceMalformed`).
 */
export async function updateClusterConfig(
  etcd: Etcd3,
  keys: ClusterKeys,
  change: (current: ConfigRecord) => ConfigRecord,
  options: ConfigUpdateOptions,
): Promise<ConfigUpdate> {
  const attempts = options.attempts ?? 5;
  const now = options.now ?? (() => new Date());
  for (let attempt = 0; attempt < attempts; attempt++) {
    const raw = await readRaw(etcd, keys);
    let previous: ConfigRecord | null = null;
    // A replaced malformed record's version, when it has a readable one: versions only grow.
    let replacedVersion = 0;
    if (raw !== null) {
      try {
        previous = ConfigRecord.decode(raw.text);
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        if (!options.replaceMalformed) throw malformed(keys, error);
        replacedVersion = versionIn(raw.text);
      }
    }
    const base = previous ?? options.base;
    const changed = change(base);
    if (previous !== null && sameSettings(previous, changed))
      return { record: previous, modRevision: raw!.modRevision, previous, written: false };
    const next = ConfigRecord.parse({
      ...changed,
      version: (previous?.version ?? replacedVersion) + 1,
      updatedAt: now().toISOString(),
      updatedBy: options.updatedBy.slice(0, 200),
    });
    const modRevision = await putClusterConfigIf(etcd, keys, next, raw?.modRevision ?? null);
    if (modRevision !== null) return { record: next, modRevision, previous, written: true };
  }
  throw new PghaError(
    'conflict',
    `the cluster settings at ${keys.config} changed ${attempts} times while this change was being written (another \`pgha config set\` or \`pgha up\`): run it again`,
    { retryable: true },
  );
}

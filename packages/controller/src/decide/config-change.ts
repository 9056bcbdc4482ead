/**
 * `pgha config set KEY=VALUE…`: what a list of assignments does to the cluster's
 * settings (the `config` record). Pure: the shell reads the record, calls
 * {@link applyConfigAssignments}, prints the changes and writes the result in a
 * transaction guarded by the record's mod revision (adapters/cluster-config.ts).
 *
 * Every assignment is checked before anything is written: one bad assignment
 * rejects the whole list, so a command either applies all of its changes or none.
 */
import { ConfigRecord, PghaError, ProtocolError, synchronousModes } from '@pgha/core';
import { isPostgresParameterName, reservedPostgresParameters } from '../agent/postgres-config.js';
import { parseLagBytes } from './health.js';

/** The settings `pgha config set` accepts besides `postgresParameters.<name>`. */
export const configSettingKeys = [
  'synchronousMode',
  'synchronousCount',
  'synchronousStrict',
  'maximumLagOnFailoverBytes',
  'leaseTtlMillis',
  'keepaliveIntervalMillis',
  'fencingMarginMillis',
  'failsafeMode',
] as const;

/** One of {@link configSettingKeys}. */
export type ConfigSettingKey = (typeof configSettingKeys)[number];

/** The prefix of a PostgreSQL parameter's key: `postgresParameters.work_mem=64MB`. */
export const postgresParameterPrefix = 'postgresParameters.';

/** One setting an assignment changed; values in their text form, null for a parameter that is not set. */
export interface ConfigChange {
  readonly key: string;
  readonly from: string | null;
  readonly to: string | null;
}

/** What {@link applyConfigAssignments} returns. */
export interface ConfigAssignmentResult {
  /** The record with every assignment applied (version, updatedAt and updatedBy unchanged). */
  readonly next: ConfigRecord;
  /** The settings whose value differs from `current`, in the order first assigned. */
  readonly changes: readonly ConfigChange[];
}

const keyList = `${configSettingKeys.join(', ')}, ${postgresParameterPrefix}<name>`;

function invalid(message: string): PghaError {
  return new PghaError('invalid-option', message);
}

function wholeNumber(key: string, text: string, example: string): number {
  if (!/^\d{1,16}$/.test(text))
    throw invalid(`${key}=${text} is not a whole number of milliseconds: write it as ${key}=${example}`);
  return Number(text);
}

/**
 * Applies `KEY=VALUE` assignments to `current`. Keys: {@link configSettingKeys}
 * (case-insensitive) and `postgresParameters.<name>` (an empty value removes the
 * parameter). Sizes accept bytes or PostgreSQL's units (`16MB`, `1GiB`; powers of
 * 1024). Later assignments of the same key win.
 *
 * @throws PghaError `invalid-option` — saying what is wrong, what is allowed and an
 *   example — for an assignment without `=`, an unknown key, a malformed value, a
 *   PostgreSQL parameter pgha sets itself, or a result the `config` record refuses
 *   (the timing rules between leaseTtlMillis, keepaliveIntervalMillis and
 *   fencingMarginMillis, ranges).
 * @example
 * applyConfigAssignments(defaultConfig, ['synchronousMode=quorum', 'postgresParameters.work_mem=64MB'])
 */
export function applyConfigAssignments(current: ConfigRecord, assignments: readonly string[]): ConfigAssignmentResult {
  if (assignments.length === 0)
    throw invalid(`no setting given: write KEY=VALUE, e.g. pgha config set synchronousMode=quorum (keys: ${keyList})`);
  let next: ConfigRecord = { ...current, postgresParameters: { ...current.postgresParameters } };
  const touched: string[] = [];
  for (const assignment of assignments) {
    const at = assignment.indexOf('=');
    if (at <= 0)
      throw invalid(
        `${JSON.stringify(assignment)} is not KEY=VALUE: write it as synchronousMode=quorum (keys: ${keyList})`,
      );
    const rawKey = assignment.slice(0, at).trim();
    const value = assignment.slice(at + 1);
    const key = assignKey(rawKey);
    next = assign(next, key, value);
    if (!touched.includes(key)) touched.push(key);
  }
  try {
    next = ConfigRecord.parse(next);
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
    const detail = error.message.replace(/^config record: (malformed record: )?/, '');
    throw invalid(
      `the settings would not be valid: ${detail}. Lease timing must keep 2 x keepaliveIntervalMillis <= leaseTtlMillis and keepaliveIntervalMillis <= fencingMarginMillis < leaseTtlMillis - keepaliveIntervalMillis; change them together, e.g. pgha config set leaseTtlMillis=10000 keepaliveIntervalMillis=1000 fencingMarginMillis=2000`,
    );
  }
  const changes: ConfigChange[] = [];
  for (const key of touched) {
    const from = textOf(current, key);
    const to = textOf(next, key);
    if (from !== to) changes.push({ key, from, to });
  }
  return { next, changes };
}

/** The canonical key of an assignment's key. */
function assignKey(rawKey: string): string {
  if (rawKey.toLowerCase().startsWith(postgresParameterPrefix.toLowerCase())) {
    const name = rawKey.slice(postgresParameterPrefix.length).trim().toLowerCase();
    // `__proto__` passes the name pattern but would vanish as a key of a plain object.
    if (!isPostgresParameterName(name) || name === '__proto__')
      throw invalid(
        `${JSON.stringify(rawKey)} does not name a PostgreSQL parameter: write ${postgresParameterPrefix}<name>=<value>, e.g. ${postgresParameterPrefix}work_mem=64MB`,
      );
    if (reservedPostgresParameters.has(name)) throw invalid(reservedMessage(name));
    return `${postgresParameterPrefix}${name}`;
  }
  const key = configSettingKeys.find((k) => k.toLowerCase() === rawKey.toLowerCase());
  if (key === undefined)
    throw invalid(
      `unknown setting ${JSON.stringify(rawKey)}: the settings are ${keyList}; e.g. pgha config set synchronousMode=quorum`,
    );
  return key;
}

function reservedMessage(name: string): string {
  const flag =
    name === 'max_connections'
      ? ' (use `pgha agent --max-connections`)'
      : name === 'shared_buffers'
        ? ' (use `pgha agent --shared-buffers`)'
        : name === 'synchronous_standby_names'
          ? ' (use synchronousMode and synchronousCount)'
          : '';
  return `PostgreSQL parameter ${name} is set by pgha itself and cannot be changed here${flag}: pgha owns ${[...reservedPostgresParameters].sort().join(', ')}`;
}

function assign(record: ConfigRecord, key: string, value: string): ConfigRecord {
  if (key.startsWith(postgresParameterPrefix)) {
    const name = key.slice(postgresParameterPrefix.length);
    const parameters = { ...record.postgresParameters };
    if (value === '') delete parameters[name];
    else parameters[name] = value;
    return { ...record, postgresParameters: parameters };
  }
  const text = value.trim();
  switch (key as ConfigSettingKey) {
    case 'synchronousMode': {
      const mode = synchronousModes.find((m) => m === text.toLowerCase());
      if (mode === undefined)
        throw invalid(
          `synchronousMode=${text} is not a mode: use ${synchronousModes.join(' or ')}, e.g. synchronousMode=quorum`,
        );
      return { ...record, synchronousMode: mode };
    }
    case 'synchronousCount': {
      if (!/^\d{1,3}$/.test(text) || Number(text) < 1 || Number(text) > 64)
        throw invalid(
          `synchronousCount=${text} is not a count of replicas from 1 to 64: write it as synchronousCount=1`,
        );
      return { ...record, synchronousCount: Number(text) };
    }
    case 'synchronousStrict': {
      const lower = text.toLowerCase();
      if (lower !== 'true' && lower !== 'false')
        throw invalid(`synchronousStrict=${text} is not true or false: write it as synchronousStrict=true`);
      return { ...record, synchronousStrict: lower === 'true' };
    }
    case 'maximumLagOnFailoverBytes': {
      const bytes = parseLagBytes(text);
      if (bytes === null || text === '')
        throw invalid(
          `maximumLagOnFailoverBytes=${text} is not a size: write bytes or a size with a unit (kB, MB, GB, TB; powers of 1024), e.g. maximumLagOnFailoverBytes=16MB`,
        );
      return { ...record, maximumLagOnFailoverBytes: bytes };
    }
    case 'leaseTtlMillis':
      return { ...record, leaseTtlMillis: wholeNumber(key, text, '2000') };
    case 'keepaliveIntervalMillis':
      return { ...record, keepaliveIntervalMillis: wholeNumber(key, text, '250') };
    case 'fencingMarginMillis':
      return { ...record, fencingMarginMillis: wholeNumber(key, text, '500') };
    case 'failsafeMode': {
      const lower = text.toLowerCase();
      if (lower !== 'true' && lower !== 'false')
        throw invalid(`failsafeMode=${text} is not true or false: write it as failsafeMode=true`);
      return { ...record, failsafeMode: lower === 'true' };
    }
    default: {
      const unreachable: never = key as never;
      throw new Error(`unhandled setting ${String(unreachable)}`);
    }
  }
}

/** A setting's value as text (`pgha config show`, the changes); null for a PostgreSQL parameter not set. */
export function textOf(record: ConfigRecord, key: string): string | null {
  if (key.startsWith(postgresParameterPrefix))
    return record.postgresParameters[key.slice(postgresParameterPrefix.length)] ?? null;
  if (key === 'failsafeMode') return String(record.failsafeMode ?? false);
  return String(record[key as ConfigSettingKey]);
}

/**
 * When a changed setting takes effect, for `pgha config set` to say so (see
 * docs/architecture.md, "Cluster settings").
 */
export function whenApplied(key: string): string {
  if (key.startsWith(postgresParameterPrefix))
    return 'reloaded by every running agent at once; a parameter that needs a restart waits for the next start of postgres (pgha status: pending restart)';
  switch (key as ConfigSettingKey) {
    case 'synchronousMode':
    case 'synchronousCount':
    case 'synchronousStrict':
      return "live: the primary's agent applies it";
    case 'maximumLagOnFailoverBytes':
      return "at the controller's next decision";
    case 'failsafeMode':
      return 'live: every agent reads it within a report interval (the members need an API and a shared --api-secret-file)';
    case 'leaseTtlMillis':
    case 'keepaliveIntervalMillis':
    case 'fencingMarginMillis':
      return 'at the next start of each agent (a running agent keeps its lease)';
    default:
      return 'unknown';
  }
}

/** One change as `pgha config set` prints it: `synchronousMode: off -> quorum`. */
export function formatChange(change: ConfigChange): string {
  return `${change.key}: ${change.from ?? '(not set)'} -> ${change.to ?? '(not set)'}`;
}

/**
 * The floor a hot standby's settings must not go below. Pure: the shell reads the
 * control data (pg_controldata) and writes pgha.conf.
 *
 * PostgreSQL records five settings of the primary in WAL (XLOG_PARAMETER_CHANGE) and
 * in pg_control; a hot standby whose own value of one of them is lower refuses to
 * start ("recovery aborted because of insufficient parameter settings") or, while it
 * runs, pauses replay until it is restarted. So a standby starts with, for each,
 * max(configured, recorded) — what Patroni does. A primary starts with its configured
 * values: it may lower them, and the new values reach the standbys through WAL.
 */

/** The settings a hot standby needs at least the primary's value of (as `as const` array). */
export const floorParameters = [
  'max_connections',
  'max_worker_processes',
  'max_wal_senders',
  'max_prepared_transactions',
  'max_locks_per_transaction',
] as const;

/** One of {@link floorParameters}. */
export type FloorParameter = (typeof floorParameters)[number];

/** A value for each of the five. */
export type FloorValues = Readonly<Record<FloorParameter, number>>;

/** The label of each in pg_controldata's output (`max_locks_per_xact setting:  64`). */
const controlDataLabels: Readonly<Record<FloorParameter, string>> = {
  max_connections: 'max_connections setting',
  max_worker_processes: 'max_worker_processes setting',
  max_wal_senders: 'max_wal_senders setting',
  max_prepared_transactions: 'max_prepared_xacts setting',
  max_locks_per_transaction: 'max_locks_per_xact setting',
};

/** PostgreSQL's defaults (unchanged from 10 to 17), for settings nobody configured. */
export const postgresDefaults: FloorValues = {
  max_connections: 100,
  max_worker_processes: 8,
  max_wal_senders: 10,
  max_prepared_transactions: 0,
  max_locks_per_transaction: 64,
};

/**
 * The five as the primary last recorded them, from `pg_controldata` output (run with
 * LC_ALL=C). A line that is missing or not a number leaves its setting out (no floor
 * for it): the standby then starts with its configured value, as before.
 */
export function parseControlDataSettings(text: string): Partial<FloorValues> {
  const recorded: Partial<Record<FloorParameter, number>> = {};
  for (const name of floorParameters) {
    const match = new RegExp(`^${controlDataLabels[name]}:\\s*(\\d+)\\s*$`, 'm').exec(text);
    if (match !== null) recorded[name] = Number(match[1]);
  }
  return recorded;
}

/**
 * The values the primary had, from the DETAIL lines of a standby that stopped or
 * paused for them (`max_locks_per_transaction = 64 is a lower setting than on the
 * primary server, where its value was 128.`), the highest per setting. A fallback for
 * when the control data cannot be read.
 */
export function parseInsufficientSettings(log: string): Partial<FloorValues> {
  const found: Partial<Record<FloorParameter, number>> = {};
  const pattern = /(\w+) = \d+ is a lower setting than on the primary server, where its value was (\d+)/g;
  for (const match of log.matchAll(pattern)) {
    const name = match[1] as FloorParameter;
    if (!(floorParameters as readonly string[]).includes(name)) continue;
    found[name] = Math.max(found[name] ?? 0, Number(match[2]));
  }
  return found;
}

/** The highest of each setting over several partial sets. */
export function highestOf(...sets: readonly Partial<FloorValues>[]): Partial<FloorValues> {
  const out: Partial<Record<FloorParameter, number>> = {};
  for (const set of sets)
    for (const name of floorParameters) {
      const value = set[name];
      if (value !== undefined) out[name] = Math.max(out[name] ?? value, value);
    }
  return out;
}

/** An integer setting value as postgresql.conf would take it ('128'), else null (postgres judges it). */
function integerSetting(value: string | undefined): number | null {
  if (value === undefined) return null;
  const trimmed = value.trim();
  return /^\d+$/.test(trimmed) ? Number(trimmed) : null;
}

/**
 * The five as this member is configured: pgha's own `max_connections` and
 * `max_wal_senders`, then `--postgres-parameter` overrides, else PostgreSQL's
 * defaults. A value that is not a plain integer ('1e2', '') is null: it is written as
 * given and never floored.
 */
export function configuredFloorValues(own: {
  readonly maxConnections: number;
  readonly maxWalSenders: number;
  readonly extraParameters?: Readonly<Record<string, string>>;
}): Readonly<Record<FloorParameter, number | null>> {
  const extra = own.extraParameters ?? {};
  const fromExtra = (name: FloorParameter): number | null =>
    name in extra ? integerSetting(extra[name]) : postgresDefaults[name];
  return {
    max_connections: own.maxConnections,
    max_wal_senders: own.maxWalSenders,
    max_worker_processes: fromExtra('max_worker_processes'),
    max_prepared_transactions: fromExtra('max_prepared_transactions'),
    max_locks_per_transaction: fromExtra('max_locks_per_transaction'),
  };
}

/** One setting a standby start raises above its configuration. */
export interface RaisedSetting {
  readonly name: FloorParameter;
  readonly configured: number;
  readonly recorded: number;
}

/** What {@link decideStartParameters} returns. */
export interface StartParameters {
  /** The settings to write instead of the configured ones (only those raised). */
  readonly overrides: Partial<FloorValues>;
  /** The same, with what was configured and recorded, for the log. */
  readonly raised: readonly RaisedSetting[];
}

/**
 * The settings to start with. As a standby: for each of the five, the recorded value
 * where it exceeds the configured one (the configured one otherwise, so nothing is
 * written that was not asked for). As a primary: the configuration unchanged.
 */
export function decideStartParameters(input: {
  readonly as: 'primary' | 'standby';
  readonly configured: Readonly<Record<FloorParameter, number | null>>;
  readonly recorded: Partial<FloorValues>;
}): StartParameters {
  if (input.as === 'primary') return { overrides: {}, raised: [] };
  const overrides: Partial<Record<FloorParameter, number>> = {};
  const raised: RaisedSetting[] = [];
  for (const name of floorParameters) {
    const configured = input.configured[name];
    const recorded = input.recorded[name];
    if (configured === null || recorded === undefined || recorded <= configured) continue;
    overrides[name] = recorded;
    raised.push({ name, configured, recorded });
  }
  return { overrides, raised };
}

/** The log line of a standby start that raised settings (null when none). */
export function describeRaised(raised: readonly RaisedSetting[]): string | null {
  if (raised.length === 0) return null;
  return `starting as a standby with ${raised
    .map((r) => `${r.name}=${r.recorded} (the primary recorded ${r.recorded}; configured ${r.configured})`)
    .join(', ')}`;
}

/**
 * The settings a running standby has less of than the primary recorded — the reason
 * PostgreSQL pauses its replay ("hot standby is not possible because of insufficient
 * parameter settings"); it needs a restart, which takes the floor. Empty: replay is
 * paused for another reason (pg_wal_replay_pause by hand), which the agent leaves alone.
 */
export function insufficientSettings(running: Partial<FloorValues>, recorded: Partial<FloorValues>): RaisedSetting[] {
  const out: RaisedSetting[] = [];
  for (const name of floorParameters) {
    const have = running[name];
    const need = recorded[name];
    if (have !== undefined && need !== undefined && have < need) out.push({ name, configured: have, recorded: need });
  }
  return out;
}

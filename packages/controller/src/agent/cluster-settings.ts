/**
 * The agent's side of the cluster's settings (the `config` record, see
 * adapters/cluster-config.ts): the lease timing it starts with, and the PostgreSQL
 * parameters it keeps in pgha.conf while the record changes.
 *
 * - Lease timing is read once, at start: the record's when there is one, else the
 *   flags'. A running agent keeps its lease (changing the TTL of a held lease would
 *   move the fence's deadline under it).
 * - PostgreSQL parameters: the flags' (`--postgres-parameter`) with the record's on
 *   top (the record wins, per parameter, and the override is logged). The control loop
 *   calls {@link ClusterSettings.sync} on every pass outside actions: when the record
 *   changed (a watch wakes the loop; a re-read every few seconds covers a dead watch)
 *   pgha.conf is rewritten and postgres reloaded; parameters that need a restart are
 *   logged and published in the member record (`pendingRestart`) until a start of
 *   postgres applies them.
 */
import { type ClusterKeys, type ConfigRecord, PghaError } from '@pgha/core';
import type { Etcd3, Watcher } from 'etcd3';
import { readClusterConfig } from '../adapters/cluster-config.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { withTimeout } from './leadership.js';
import type { LeaseTiming } from './lease-keeper.js';
import { isPostgresParameterName, reservedPostgresParameters } from './postgres-config.js';
import type { PostgresMember } from './postgres-member.js';

/** How often the record is re-read without a watch event (a watch may die silently). */
const rereadMillis = 5000;

/** What {@link ClusterSettings} needs. */
export interface ClusterSettingsOptions {
  readonly etcd: Etcd3;
  readonly keys: ClusterKeys;
  /** The agent's flags: used while there is no record. */
  readonly lease: LeaseTiming;
  readonly postgresParameters: Readonly<Record<string, string>>;
  readonly log: Logger;
  readonly clock: Clock;
  /** Wakes the control loop (the record changed). */
  readonly poke: () => void;
}

/** The parameters pgha.conf carries: the flags', then the record's on top. Pure. */
export function effectivePostgresParameters(
  flags: Readonly<Record<string, string>>,
  record: ConfigRecord | null,
): {
  parameters: Record<string, string>;
  /** Flag values the record replaces. */
  overridden: Array<{ name: string; flag: string; record: string }>;
  /** Record entries left out: names pgha sets itself, or not parameter names (a record written by hand). */
  ignored: string[];
} {
  const parameters: Record<string, string> = { ...flags };
  const overridden: Array<{ name: string; flag: string; record: string }> = [];
  const ignored: string[] = [];
  for (const [name, value] of Object.entries(record?.postgresParameters ?? {})) {
    if (!isPostgresParameterName(name) || reservedPostgresParameters.has(name.toLowerCase())) {
      ignored.push(name);
      continue;
    }
    const flag = flags[name];
    if (flag !== undefined && flag !== value) overridden.push({ name, flag, record: value });
    parameters[name] = value;
  }
  return { parameters, overridden, ignored };
}

function sameParameters(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => b[k] === a[k]);
}

/** The cluster's settings as this agent uses them; see the module comment. */
export class ClusterSettings {
  private leaseTiming: LeaseTiming;
  private parameters: Record<string, string>;
  private stored: ConfigRecord | null = null;
  private watcher: Watcher | null = null;
  private dirty = false;
  private readAt = 0;
  private reloadedAt: number | null = null;
  private pending: string[] = [];
  private refused = '';
  private mergeNote = '[[],[]]';

  constructor(private readonly o: ClusterSettingsOptions) {
    this.leaseTiming = o.lease;
    this.parameters = { ...o.postgresParameters };
  }

  /** The lease timing this agent runs with (fixed at {@link load}). */
  get lease(): LeaseTiming {
    return this.leaseTiming;
  }

  /** The extra PostgreSQL parameters pgha.conf carries now. */
  get postgresParameters(): Readonly<Record<string, string>> {
    return this.parameters;
  }

  /**
   * The stored record as last read (null: none stored, or none readable yet): kept
   * current by the watch and the periodic re-read, for live settings such as the
   * synchronous ones. Read at the control loop's pace (at most one report interval, or
   * 5 s without a watch event, behind etcd).
   */
  get record(): ConfigRecord | null {
    return this.stored;
  }

  /** Parameters whose new value waits for a restart of postgres (the member record's `pendingRestart`). */
  get pendingRestart(): readonly string[] {
    return this.pending;
  }

  /**
   * Reads the record once at start and settles the lease timing and parameters,
   * logging which values it uses and where they come from; then watches the key. A
   * record that cannot be read is logged and the flags are used: settings someone
   * broke must not keep a member from running.
   */
  async load(): Promise<void> {
    let record: ConfigRecord | null = null;
    try {
      record = (await readClusterConfig(this.o.etcd, this.o.keys))?.record ?? null;
    } catch (error) {
      if (!(error instanceof PghaError && error.code === 'protocol')) throw error;
      this.o.log.warn(`${error.message}; using the flags meanwhile`);
    }
    this.readAt = this.o.clock.now();
    this.stored = record;
    const f = this.o.lease;
    this.leaseTiming =
      record === null
        ? f
        : {
            ttlMillis: record.leaseTtlMillis,
            keepaliveIntervalMillis: record.keepaliveIntervalMillis,
            fencingMarginMillis: record.fencingMarginMillis,
          };
    const l = this.leaseTiming;
    this.o.log.info(
      `lease timing: TTL ${l.ttlMillis} ms, keepalive ${l.keepaliveIntervalMillis} ms, fencing margin ${l.fencingMarginMillis} ms (${record === null ? 'flags: no cluster settings stored' : `cluster settings ${this.o.keys.config}, version ${record.version}`})`,
    );
    if (
      record !== null &&
      (f.ttlMillis !== l.ttlMillis ||
        f.keepaliveIntervalMillis !== l.keepaliveIntervalMillis ||
        f.fencingMarginMillis !== l.fencingMarginMillis)
    )
      this.o.log.info(
        `the cluster settings replace the lease flags (TTL ${f.ttlMillis} ms, keepalive ${f.keepaliveIntervalMillis} ms, margin ${f.fencingMarginMillis} ms)`,
      );
    this.parameters = this.merge(record);
    try {
      this.watcher = await this.o.etcd.watch().key(this.o.keys.config).create();
      const changed = () => {
        this.dirty = true;
        this.o.poke();
      };
      this.watcher.on('put', changed);
      this.watcher.on('delete', changed);
      this.watcher.on('error', () => undefined);
    } catch (error) {
      this.o.log.warn(
        `cannot watch ${this.o.keys.config} (${(error as Error).message}); re-reading it every ${rereadMillis / 1000} s`,
      );
    }
  }

  /** The effective parameters; logs overrides and ignored names when they change (not at every re-read). */
  private merge(record: ConfigRecord | null): Record<string, string> {
    const { parameters, overridden, ignored } = effectivePostgresParameters(this.o.postgresParameters, record);
    const note = JSON.stringify([overridden, ignored]);
    if (note === this.mergeNote) return parameters;
    this.mergeNote = note;
    for (const o of overridden)
      this.o.log.info(
        `postgres parameter ${o.name}: the cluster settings' ${JSON.stringify(o.record)} replaces --postgres-parameter's ${JSON.stringify(o.flag)}`,
      );
    if (ignored.length > 0)
      this.o.log.warn(
        `ignoring postgres parameters of the cluster settings that pgha sets itself or that are not parameter names: ${ignored.join(', ')} (remove them with pgha config set postgresParameters.<name>=)`,
      );
    return parameters;
  }

  /**
   * Brings postgres in line with the record, from the control loop (never during an
   * action): re-reads the record when it changed or every few seconds, rewrites
   * pgha.conf and reloads when the parameters differ, and refreshes what waits for a
   * restart. etcd or postgres failures are logged by the caller's tick and retried
   * at the next pass.
   */
  async sync(postgres: PostgresMember): Promise<void> {
    const now = this.o.clock.now();
    if (this.dirty || now - this.readAt >= rereadMillis) {
      this.dirty = false;
      let record: ConfigRecord | null;
      try {
        record = (await readClusterConfig(this.o.etcd, this.o.keys))?.record ?? null;
      } catch (error) {
        if (!(error instanceof PghaError && error.code === 'protocol')) throw error;
        this.readAt = now;
        return; // logged at start or by `pgha config show`; keep what we have
      }
      this.readAt = now;
      const next = this.merge(record);
      this.stored = record;
      const before = this.parameters;
      if (!sameParameters(next, before)) {
        this.parameters = next;
        const reloaded = await postgres.applyExtraParameters(next);
        this.o.log.info(
          `postgres parameters from the cluster settings (version ${record?.version ?? 'none'}): ${describeDifference(before, next)}; ${reloaded ? 'pgha.conf rewritten and postgres reloaded' : 'written at the next start of postgres'}`,
        );
        if (reloaded) this.reloadedAt = now;
      }
      await this.refreshPending(postgres);
      return;
    }
    // Right after a reload the backends take the new file over a few passes.
    if (this.reloadedAt !== null && now - this.reloadedAt < rereadMillis) await this.refreshPending(postgres);
    else if (this.pending.length > 0 && postgres.state !== 'down') await this.refreshPending(postgres);
  }

  private async refreshPending(postgres: PostgresMember): Promise<void> {
    const state = await postgres.configurationState();
    if (state === null) return;
    const pending = state.pendingRestart;
    if (pending.join(',') !== this.pending.join(',')) {
      if (pending.length > 0)
        this.o.log.warn(
          `postgres parameters waiting for a restart of postgres: ${pending.join(', ')} (applied at its next start)`,
        );
      else if (this.pending.length > 0) this.o.log.info('no postgres parameter waits for a restart any more');
      this.pending = pending;
    }
    const refused = state.refused.map((r) => `${r.name} (${r.error})`).join(', ');
    if (refused !== this.refused && refused !== '')
      this.o.log.error(
        `postgres refuses settings in its configuration: ${refused}; postgres will not start with them: fix them with pgha config set postgresParameters.<name>=<value> (or remove them with an empty value)`,
      );
    this.refused = refused;
  }

  /** Cancels the watch, bounded: etcd may not answer (a frozen or lost etcd must not hold up a stop). */
  async stop(): Promise<void> {
    const watcher = this.watcher;
    this.watcher = null;
    if (watcher !== null) await withTimeout(watcher.cancel(), 1000).catch(() => undefined);
  }
}

function describeDifference(before: Readonly<Record<string, string>>, after: Readonly<Record<string, string>>): string {
  const names = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
  return names
    .filter((n) => before[n] !== after[n])
    .map((n) => `${n} ${before[n] ?? '(not set)'} -> ${after[n] ?? '(not set)'}`)
    .join(', ');
}

import type { ClusterKeys, ConfigRecord, SynchronousMode } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import type { PostgresObservation } from '../adapters/postgres-observe.js';
import type { Clock } from '../clock.js';
import {
  decideSynchronousStandbys,
  initialSynchronousSetting,
  type PendingSetting,
  promotionSetting,
  renderSynchronousStandbyNames,
  type SynchronousClaim,
  type SynchronousSetting,
} from '../decide/synchronous-standbys.js';
import type { Logger } from '../log.js';
import type { InitialClaim, Leadership } from './leadership.js';
import type { PostgresMember } from './postgres-member.js';

/** What the primary's synchronous replication needs from the agent. */
export interface SynchronousReplicationContext {
  readonly name: string;
  readonly keys: ClusterKeys;
  readonly etcd: Etcd3;
  readonly postgres: PostgresMember;
  readonly leadership: Leadership;
  /** The cluster settings as the agent last read them (agent/cluster-settings.ts); null: none stored. */
  config(): ConfigRecord | null;
  readonly clock: Clock;
  readonly log: Logger;
  /** How long walsenders must show a new setting before the catch-up mark (default 1000). */
  readonly settleMillis?: number;
  /** See {@link defaultStreamingGraceMillis}. */
  readonly streamingGraceMillis?: number;
}

/**
 * How long a standby that stopped streaming (or a new primary's standby that has not
 * re-pointed yet) still counts as streaming: commits wait for it that long before the
 * setting drops it (not strict) — a failover's remaining standby reconnects within
 * about a second, and a short hiccup should not cost the protection.
 */
export const defaultStreamingGraceMillis = 5000;

/** The synchronous settings of the cluster's `config` record (off without one). */
export function synchronousSettings(config: ConfigRecord | null): {
  mode: SynchronousMode;
  count: number;
  strict: boolean;
} {
  if (config === null) return { mode: 'off', count: 1, strict: false };
  return { mode: config.synchronousMode, count: config.synchronousCount, strict: config.synchronousStrict };
}

/**
 * The primary's side of synchronous quorum replication (the shell of
 * decide/synchronous-standbys.ts): with each report, it reads the walsenders, decides,
 * and publishes the claim (guarded by holding the leader record) or applies the
 * setting to postgres, in the decided order. A new leader takes the record together
 * with its first claim ({@link initialClaim}) and sets postgres before promoting
 * ({@link settingForPromotion}).
 */
export class SynchronousReplication {
  private pending: PendingSetting | null = null;
  private degraded: string | null = null;
  /** When each member was last seen streaming (clock ms), for the grace of {@link defaultStreamingGraceMillis}. */
  private lastStreaming = new Map<string, number>();

  constructor(private readonly c: SynchronousReplicationContext) {}

  /** The other members that have a record now. */
  private async otherMembers(): Promise<string[]> {
    const keys = await this.c.etcd.getAll().prefix(this.c.keys.membersPrefix).keys();
    return keys.flatMap((key) => {
      const parsed = this.c.keys.parse(key);
      return parsed?.kind === 'member' && parsed.name !== this.c.name ? [parsed.name] : [];
    });
  }

  /** The setting and claim to take the leader record with (the claim goes into the install transaction). */
  async initialClaim(): Promise<{ setting: SynchronousSetting; claim: InitialClaim }> {
    const settings = synchronousSettings(this.c.config());
    if (settings.mode === 'off')
      return { setting: { standbys: [], quorum: 0 }, claim: { standbys: [], quorum: 0, strict: false } };
    const initial = initialSynchronousSetting({ ...settings, members: await this.otherMembers() });
    return { setting: initial.setting, claim: { ...initial.claim, strict: settings.strict } };
  }

  /**
   * What postgres must wait for before it is promoted to finish a promotion whose
   * record we already hold: what our published claim of this term names (nothing when
   * there is none).
   */
  settingForPromotion(): SynchronousSetting {
    const lead = this.c.leadership;
    return promotionSetting({
      self: this.c.name,
      term: lead.view.leader?.term ?? null,
      published: lead.view.sync,
      count: synchronousSettings(this.c.config()).count,
    });
  }

  /**
   * A new leadership starts without a pending change, and with the standbys of its
   * first setting counted as streaming for the grace period while they re-point.
   */
  reset(setting: SynchronousSetting): void {
    this.pending = null;
    const now = this.c.clock.now();
    this.lastStreaming = new Map(setting.standbys.map((m) => [m, now]));
  }

  /** One pass, on the writable primary that holds the leader record. */
  async tick(observation: PostgresObservation): Promise<void> {
    const { clock, leadership: lead, log, postgres } = this.c;
    const leader = lead.view.leader;
    if (!lead.holdsLeader || leader === null || !leader.writable) return;
    const connections = await postgres.replicationConnections();
    if (connections === null) return;
    const settings = synchronousSettings(this.c.config());
    const sync = lead.view.sync;
    const published: SynchronousClaim | null =
      sync !== null && sync.term === leader.term && sync.member === this.c.name ? sync : null;
    const now = clock.now();
    for (const c of connections) if (c.state === 'streaming') this.lastStreaming.set(c.member, now);
    const grace = this.c.streamingGraceMillis ?? defaultStreamingGraceMillis;
    const decision = decideSynchronousStandbys({
      ...settings,
      members: await this.otherMembers(),
      recentlyStreaming: [...this.lastStreaming].filter(([, at]) => now - at < grace).map(([m]) => m),
      published,
      configured: postgres.synchronous,
      pending: this.pending,
      connections,
      currentLsn: observation.currentLsn,
      now,
      settleMillis: this.c.settleMillis ?? 1000,
    });
    this.pending = decision.pending;
    if (decision.degraded !== this.degraded) {
      if (decision.degraded !== null) log.warn(`synchronous replication degraded: ${decision.degraded}`);
      else if (settings.mode !== 'off')
        log.info(`synchronous replication restored: ${renderSynchronousStandbyNames(decision.desired)}`);
      this.degraded = decision.degraded;
    }
    for (const action of decision.actions) {
      if (action.type === 'publish') {
        if (!(await lead.publishSync(action.claim, settings.strict))) {
          this.pending = null;
          return;
        }
        log.info(
          `synchronous claim: ${action.claim.quorum === 0 ? 'none (asynchronous)' : `ANY ${action.claim.quorum} of ${action.claim.standbys.join(', ')}`} (${action.why})`,
        );
      } else {
        log.info(`synchronous standbys: ${action.why}`);
        await postgres.applySynchronous(action.setting);
      }
    }
  }
}

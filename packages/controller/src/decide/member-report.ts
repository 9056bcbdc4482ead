import { lsnLagBytes, type MemberRecord, type MemberState, type MemberTags, recordVersion } from '@pgha/core';
import type { PostgresObservation } from '../adapters/postgres-observe.js';

/** Everything the agent knows when it writes its member record. */
export interface MemberReportSnapshot {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly state: MemberState;
  readonly term: number;
  readonly tags: MemberTags;
  /** Null when postgres did not answer (not running, starting, or hung). */
  readonly observation: PostgresObservation | null;
  /** Why postgres did not answer, or another problem to report. */
  readonly problem: string | null;
  /** The primary's last published WAL position (from its member record), for replica lag. */
  readonly primaryLsn: string | null;
  /** Whether this member is the one the leader record names. */
  readonly isLeader: boolean;
  /** The agent's health API address (`http://host:port`), null when it runs none. */
  readonly api?: string | null;
  /** PostgreSQL parameters whose new value waits for a restart of postgres. Default none. */
  readonly pendingRestart?: readonly string[];
  /** When `observation` was taken (wall clock), null without one. */
  readonly observedAt?: Date | null;
  readonly now: Date;
}

/**
 * The member record an agent publishes. Pure.
 *
 * Replica lag in bytes is measured against the primary's last *published* position
 * (as Patroni does), so it needs no connection to the primary; it can read 0 for up
 * to one report interval while the primary writes, and settles to the truth within
 * two intervals after writes stop. Lag in seconds is the age of the last replayed
 * transaction, counted only while replay trails receipt (an idle, caught-up replica
 * is 0 s behind however old its last transaction is).
 */
export function buildMemberRecord(s: MemberReportSnapshot): MemberRecord {
  const o = s.observation;
  const role = o === null ? 'unknown' : o.inRecovery ? 'replica' : 'primary';
  let lagBytes: number | null = null;
  let lagSeconds: number | null = null;
  if (o !== null && !o.inRecovery) {
    lagBytes = 0;
    lagSeconds = 0;
  } else if (o !== null) {
    const position = o.replayedLsn ?? o.receivedLsn;
    lagBytes = s.primaryLsn !== null && position !== null ? lsnLagBytes(s.primaryLsn, position) : null;
    const replayBehind =
      o.receivedLsn !== null && o.replayedLsn !== null && lsnLagBytes(o.receivedLsn, o.replayedLsn) > 0;
    lagSeconds = replayBehind ? Math.max(0, o.replayAgeSeconds ?? 0) : 0;
  }
  const streaming = o !== null && o.inRecovery && o.receiverStatus === 'streaming';
  const currentLsn = o === null ? null : o.inRecovery ? o.receivedLsn : o.currentLsn;
  const problem =
    s.problem ??
    (o !== null && o.inRecovery && !streaming
      ? `not streaming from the primary (receiver: ${o.receiverStatus ?? 'not running'})`
      : null) ??
    (o !== null && !o.inRecovery && !s.isLeader ? 'writable but not the leader' : null);
  return {
    v: recordVersion,
    name: s.name,
    role,
    state: s.state,
    host: s.host,
    port: s.port,
    term: s.term,
    timeline: o?.timeline ?? null,
    receivedLsn: currentLsn,
    replayedLsn: o === null ? null : o.inRecovery ? o.replayedLsn : o.currentLsn,
    lagBytes,
    lagSeconds: lagSeconds === null ? null : Math.round(lagSeconds * 1000) / 1000,
    streaming,
    postgresVersion: o?.version ?? null,
    systemId: o?.systemId ?? null,
    healthy: o !== null && s.state === 'running' && problem === null,
    problem,
    tags: s.tags,
    updatedAt: s.now.toISOString(),
    ...(o !== null && s.observedAt ? { observedAt: s.observedAt.toISOString() } : {}),
    ...(s.api ? { api: s.api } : {}),
    ...(s.pendingRestart !== undefined && s.pendingRestart.length > 0 ? { pendingRestart: [...s.pendingRestart] } : {}),
  };
}

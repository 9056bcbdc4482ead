import type pg from 'pg';

/** What one status query tells about a running postgres. */
export interface PostgresObservation {
  readonly inRecovery: boolean;
  /** Primary: pg_current_wal_lsn(). Null on a standby. */
  readonly currentLsn: string | null;
  readonly receivedLsn: string | null;
  readonly replayedLsn: string | null;
  /** Seconds since the last replayed transaction's commit (standby), else null. */
  readonly replayAgeSeconds: number | null;
  /** The WAL receiver's status ('streaming', 'catchup', ...) or null when none runs. */
  readonly receiverStatus: string | null;
  /** A standby whose replay is paused (by hand, or by PostgreSQL for insufficient parameter settings). */
  readonly replayPaused?: boolean;
  readonly timeline: number | null;
  readonly version: string;
  readonly systemId: string;
}

// One round trip. The timeline of a primary comes from its current WAL file name
// (its first 8 hex digits), which changes at promotion at once; the checkpoint's
// timeline lags until the next checkpoint. pg_walfile_name() is refused during
// recovery, so a standby reports the newest of its receiver's timeline, its last
// restartpoint's, and the newest timeline history file in pg_wal — the timeline
// recovery_target_timeline = 'latest' follows. (The restartpoint's alone can be
// several promotions old on a standby restarted without an upstream.)
const statusSql = `
SELECT
  pg_is_in_recovery() AS in_recovery,
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
  pg_last_wal_receive_lsn()::text AS received_lsn,
  pg_last_wal_replay_lsn()::text AS replayed_lsn,
  EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 AS replay_age,
  (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS receiver_status,
  CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS replay_paused,
  CASE WHEN pg_is_in_recovery()
    THEN GREATEST(
      COALESCE((SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1), 0),
      (SELECT timeline_id FROM pg_control_checkpoint()),
      COALESCE((SELECT max(('x' || substr(name, 1, 8))::bit(32)::int) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{8}[.]history$'), 0))
    ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
  END AS timeline,
  current_setting('server_version') AS version,
  (SELECT system_identifier FROM pg_control_system())::text AS system_id`;

/** Runs the status query on the agent's connection. */
export async function observePostgres(client: pg.Client): Promise<PostgresObservation> {
  const { rows } = await client.query(statusSql);
  const row = rows[0] as Record<string, unknown>;
  const text = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
  return {
    inRecovery: row.in_recovery === true,
    currentLsn: text(row.current_lsn),
    receivedLsn: text(row.received_lsn),
    replayedLsn: text(row.replayed_lsn),
    replayAgeSeconds: row.replay_age === null || row.replay_age === undefined ? null : Number(row.replay_age),
    receiverStatus: text(row.receiver_status),
    replayPaused: row.replay_paused === true,
    timeline: row.timeline === null || row.timeline === undefined ? null : Number(row.timeline),
    version: String(row.version),
    systemId: String(row.system_id),
  };
}

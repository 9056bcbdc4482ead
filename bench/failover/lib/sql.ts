// Short-lived SQL probes, each bounded: one connection, one query, closed.
import pg from 'pg';
import type { TargetMember } from './target.js';

/** Runs one query on a fresh connection (connect and query each bounded by `timeoutMillis`). */
export async function queryOnce<T extends Record<string, unknown>>(
  config: pg.ClientConfig,
  sql: string,
  params: unknown[] = [],
  timeoutMillis = 2000,
): Promise<T[]> {
  const client = new pg.Client({
    ...config,
    connectionTimeoutMillis: timeoutMillis,
    query_timeout: timeoutMillis,
    application_name: 'bench-probe',
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.query(sql, params)).rows as T[];
  } finally {
    client.end().catch(() => undefined);
  }
}

/** `primary`, `replica`, or `down` (not accepting connections or queries). */
export async function roleOf(config: pg.ClientConfig): Promise<'primary' | 'replica' | 'down'> {
  try {
    const [row] = await queryOnce<{ r: boolean }>(config, 'SELECT pg_is_in_recovery() AS r', [], 1000);
    return row?.r ? 'replica' : 'primary';
  } catch {
    return 'down';
  }
}

/** Names (application_name) of the replicas that `primary` is streaming to. */
export async function streamingReplicas(config: pg.ClientConfig): Promise<Set<string>> {
  const rows = await queryOnce<{ name: string }>(
    config,
    "SELECT application_name AS name FROM pg_stat_replication WHERE state = 'streaming'",
    [],
    1000,
  );
  return new Set(rows.map((r) => r.name));
}

/**
 * The SQL view of health: exactly one member accepts writes and every other one
 * streams from it. Returns the primary, or a sentence saying what is missing.
 */
export async function sqlHealth(
  members: readonly TargetMember[],
  configOf: (m: TargetMember) => pg.ClientConfig,
): Promise<{ primary: TargetMember } | { problem: string }> {
  const roles = await Promise.all(members.map((m) => roleOf(configOf(m))));
  const primaries = members.filter((_, i) => roles[i] === 'primary');
  if (primaries.length !== 1) {
    return { problem: `roles: ${members.map((m, i) => `${m.name}=${roles[i]}`).join(', ')}` };
  }
  const primary = primaries[0]!;
  const streaming = await streamingReplicas(configOf(primary));
  const missing = members.filter((m) => m !== primary && !streaming.has(m.name));
  if (missing.length > 0)
    return { problem: `${missing.map((m) => m.name).join(', ')} not streaming from ${primary.name}` };
  return { primary };
}

/**
 * How many standbys confirm `primary`'s commits right now: its streaming walsenders
 * whose `sync_state` is `sync` or `quorum`, and only while `synchronous_commit`
 * waits for a standby at all (anything but `off` and `local`).
 */
export async function synchronousStandbys(config: pg.ClientConfig): Promise<number> {
  const [row] = await queryOnce<{ n: string }>(
    config,
    `SELECT CASE WHEN current_setting('synchronous_commit') IN ('off', 'local') THEN 0
            ELSE (SELECT count(*) FROM pg_stat_replication
                  WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum')) END AS n`,
    [],
    1000,
  );
  return Number(row?.n ?? 0);
}

// read-replicas: writes through @pgha/client's Pool (always the primary), reads
// through its ReplicaPool (streaming replicas within a lag bound, spread over them).
//
// The caveat: replication is asynchronous to readers. Even in synchronous quorum mode
// a replica confirms it has *flushed* a commit, not that it has *replayed* it, so a
// read on a replica right after your own write may not see it (read-your-writes). This
// app shows it and one fix: remember the primary's WAL position after the write, and
// read from a replica only once it has replayed that far (else from the primary).
//
//   PGHA_ETCD      etcd endpoints (default http://127.0.0.1:2379)
//   PGHA_CLUSTER   cluster name (default pgha)
//   PGHA_KEY_ROOT  etcd key root (default /pgha/)
//   DATABASE_URL   credentials and database, as printed by `pgha up` (host/port ignored)
//   ROUNDS         how many write-then-read rounds (default 50)
import { Pool, ReplicaPool } from '@pgha/client';

const common = {
  etcd: { endpoints: process.env.PGHA_ETCD ?? 'http://127.0.0.1:2379' },
  cluster: process.env.PGHA_CLUSTER ?? 'pgha',
  keyRoot: process.env.PGHA_KEY_ROOT,
  connectionString: process.env.DATABASE_URL,
};
const writes = new Pool({ ...common, max: 2, application_name: 'read-replicas (writes)' });
const reads = new ReplicaPool({
  ...common,
  max: 4,
  application_name: 'read-replicas (reads)',
  // Only replicas at most 2 s behind serve reads; with none, reads go to the primary
  // (replicaFallback: 'primary', the default; 'fail' raises NoReplicaError instead).
  maxReplicaLagMillis: 2000,
});
for (const pool of [writes, reads]) pool.on('error', (error) => console.log(`idle connection error: ${error.message}`));

await writes.query('CREATE TABLE IF NOT EXISTS read_replicas (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())');

/** Writes a row; returns its id and the primary's WAL position after the commit. */
async function write(): Promise<{ id: string; lsn: string }> {
  const { rows } = await writes.query<{ id: string }>('INSERT INTO read_replicas DEFAULT VALUES RETURNING id');
  // After the commit returned: at least as far as the commit record.
  const position = await writes.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn');
  return { id: rows[0]!.id, lsn: position.rows[0]!.lsn };
}

/** A read on a replica, whatever it has replayed: fast, and maybe stale. */
async function readAnywhere(id: string): Promise<{ found: boolean; port: number }> {
  const { rows } = await reads.query<{ found: boolean; port: number }>(
    'SELECT EXISTS (SELECT 1 FROM read_replicas WHERE id = $1) AS found, inet_server_port() AS port',
    [id],
  );
  return rows[0]!;
}

/**
 * A read that sees everything up to `lsn`: on a replica once it has replayed that
 * far (waiting up to `waitMillis`), else on the primary through the write pool.
 */
async function readAfter(id: string, lsn: string, waitMillis = 500): Promise<{ found: boolean; where: string }> {
  const client = await reads.connect();
  try {
    const deadline = performance.now() + waitMillis;
    for (;;) {
      // On the primary fallback pg_last_wal_replay_lsn() is null: not "caught up", so
      // the primary branch below serves the read.
      const { rows } = await client.query<{ caught_up: boolean | null }>(
        'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS caught_up',
        [lsn],
      );
      if (rows[0]!.caught_up === true) {
        const r = await client.query<{ found: boolean }>(
          'SELECT EXISTS (SELECT 1 FROM read_replicas WHERE id = $1) AS found',
          [id],
        );
        return { found: r.rows[0]!.found, where: 'replica' };
      }
      if (performance.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  } finally {
    client.release();
  }
  const r = await writes.query<{ found: boolean }>(
    'SELECT EXISTS (SELECT 1 FROM read_replicas WHERE id = $1) AS found',
    [id],
  );
  return { found: r.rows[0]!.found, where: 'primary' };
}

const rounds = Number(process.env.ROUNDS ?? 50);
let staleImmediate = 0;
let missedAfter = 0;
const servedBy = new Map<string, number>();
for (let i = 0; i < rounds; i++) {
  const { id, lsn } = await write();
  const immediate = await readAnywhere(id);
  if (!immediate.found) staleImmediate += 1;
  servedBy.set(String(immediate.port), (servedBy.get(String(immediate.port)) ?? 0) + 1);
  const after = await readAfter(id, lsn);
  if (!after.found) missedAfter += 1;
  servedBy.set(after.where, (servedBy.get(after.where) ?? 0) + 1);
}
const replicas = [...reads.discovery.members.values()]
  .filter((m) => m.role === 'replica')
  .map((m) => `${m.name} (port ${m.port})`);
console.log(`primary: ${writes.options.host}:${writes.options.port}; replicas: ${replicas.join(', ') || 'none'}`);
console.log(
  `reads served by (port, or where the LSN-guarded read ran): ${JSON.stringify(Object.fromEntries(servedBy))}`,
);
console.log(`${rounds} rounds of write, then read the row back:`);
console.log(`  read at once on a replica: ${staleImmediate} of ${rounds} did not see the write yet`);
console.log(`  read after the replica replayed the write's position: ${missedAfter} of ${rounds} missed it`);
await Promise.all([writes.end(), reads.end()]);
if (missedAfter > 0) process.exit(1);

// follow-primary: writes a row every 200 ms through @pgha/client's Pool and prints
// every role change the pool sees. Start a cluster with `pnpm pgha up`, run this, then
// stop the primary (or run a switchover) and watch the writes move.
//
//   PGHA_ETCD      etcd endpoints (default http://127.0.0.1:2379)
//   PGHA_CLUSTER   cluster name (default pgha)
//   PGHA_KEY_ROOT  etcd key root (default /pgha/)
//   DATABASE_URL   credentials and database, as printed by `pgha up` (host/port are
//                  ignored: the pool always connects to the current primary)
import { isPghaError, Pool } from '@pgha/client';

const pool = new Pool({
  // The one-line change from pg.Pool: etcd and cluster say where the primary is.
  etcd: { endpoints: process.env.PGHA_ETCD ?? 'http://127.0.0.1:2379' },
  cluster: process.env.PGHA_CLUSTER ?? 'pgha',
  keyRoot: process.env.PGHA_KEY_ROOT, // default /pgha/
  connectionString: process.env.DATABASE_URL,
  max: 4,
  application_name: 'follow-primary',
});

const time = () => new Date().toISOString().slice(11, 23);
pool.on('primary-changed', (e) =>
  console.log(
    `${time()} primary-changed: ${e.current.member} at ${e.current.host}:${e.current.port} (term ${e.term}, ${e.reason}${e.previous ? `, was ${e.previous.member}` : ''})`,
  ),
);
pool.on('no-primary', (e) => console.log(`${time()} no-primary (term ${e.term}): writes wait for the next primary`));
pool.on('discovery-error', (e) => console.log(`${time()} discovery-error: ${e.error.message}`));
pool.on('discovery-stale', (e) => console.log(`${time()} discovery-stale: etcd silent for ${e.sinceMillis} ms`));
pool.on('discovery-restored', () => console.log(`${time()} discovery-restored`));
// As with pg.Pool: errors of idle connections arrive here (e.g. the old primary stopping).
pool.on('error', (error) => console.log(`${time()} idle connection error: ${error.message}`));

await pool.query('CREATE TABLE IF NOT EXISTS follow_primary (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())');

let stopping = false;
process.on('SIGINT', () => {
  stopping = true;
});

let written = 0;
let lastPort = null;
while (!stopping) {
  try {
    const { rows } = await pool.query(
      'INSERT INTO follow_primary DEFAULT VALUES RETURNING id, inet_server_port() AS port',
    );
    written += 1;
    const port = rows[0].port;
    if (rows[0].port !== lastPort || written % 25 === 1)
      console.log(`${time()} wrote row ${rows[0].id} on port ${rows[0].port} (${written} so far)`);
    lastPort = port;
  } catch (error) {
    // Typed failover errors: retry only what is safe to retry.
    if (isPghaError(error)) {
      console.log(
        `${time()} ${error.code}${error.retryable ? ' (retryable)' : ' (NOT retried: outcome unknown)'}: ${error.message}`,
      );
    } else {
      console.log(`${time()} error: ${error.message}`);
    }
  }
  await new Promise((resolve) => setTimeout(resolve, 200));
}
await pool.end();
console.log(`${time()} stopped after ${written} writes`);

// role-changes: subscribing to role changes in code. @pgha/client's Pool emits an
// event for each change of the cluster's leader record; this app logs each primary
// change with its term, its reason, how long the cluster had no writable primary,
// and how long after the event its first query on the new primary succeeded. It
// queries once a second so that last figure means something.
//
//   PGHA_ETCD      etcd endpoints (default http://127.0.0.1:2379)
//   PGHA_CLUSTER   cluster name (default pgha)
//   PGHA_KEY_ROOT  etcd key root (default /pgha/)
//   DATABASE_URL   credentials and database, as printed by `pgha up` (host/port ignored)
import { Pool, type PrimaryChangedEvent } from '@pgha/client';

const pool = new Pool({
  etcd: { endpoints: process.env.PGHA_ETCD ?? 'http://127.0.0.1:2379' },
  cluster: process.env.PGHA_CLUSTER ?? 'pgha',
  keyRoot: process.env.PGHA_KEY_ROOT,
  connectionString: process.env.DATABASE_URL,
  max: 2,
  application_name: 'role-changes',
});

const time = () => new Date().toISOString().slice(11, 23);
const seconds = (millis: number) => `${(millis / 1000).toFixed(2)} s`;

// Timing on the monotonic clock: wall-clock jumps (NTP) do not distort it.
let lostAt = null as number | null; // when the Pool last saw no writable primary
let changedAt = null as number | null; // when the Pool last moved to a new primary
let lastChange = null as PrimaryChangedEvent | null; // (casts: set in listeners, so not narrowed to null)
let firstQueryPending = false;

// The leader record went away (lease expired, a switchover began, or it is not
// writable yet): new checkouts wait for the next primary, up to primaryWaitTimeoutMillis.
pool.on('no-primary', (e) => {
  lostAt = performance.now();
  console.log(`${time()} no writable primary (last term ${e.term}, was ${e.previous?.member ?? 'none'})`);
});

// A new writable primary: `pool.options.host`/`port` already name it when this runs.
pool.on('primary-changed', (e) => {
  const at = performance.now();
  const without = lostAt === null ? '' : `, ${seconds(at - lostAt)} without a primary`;
  const since = changedAt === null ? '' : `, ${seconds(at - changedAt)} after the previous change`;
  console.log(
    `${time()} primary is ${e.current.member} at ${e.current.host}:${e.current.port}: term ${e.term}, reason ${e.reason}${e.previous === null ? '' : `, was ${e.previous.member}`}${without}${since}`,
  );
  lostAt = null;
  changedAt = at;
  lastChange = e;
  firstQueryPending = e.previous !== null;
});

// etcd itself: the Pool keeps using the last primary it knew while etcd is away.
pool.on('discovery-error', (e) => console.log(`${time()} etcd error: ${e.error.message}`));
pool.on('discovery-stale', (e) => console.log(`${time()} etcd silent for ${seconds(e.sinceMillis)}`));
pool.on('discovery-restored', () => console.log(`${time()} etcd reachable again`));
pool.on('error', (error) => console.log(`${time()} idle connection error: ${error.message}`));

let stopping = false;
process.on('SIGINT', () => {
  stopping = true;
});

while (!stopping) {
  try {
    const { rows } = await pool.query<{ port: number }>('SELECT inet_server_port() AS port');
    if (firstQueryPending && changedAt !== null && lastChange !== null) {
      firstQueryPending = false;
      console.log(
        `${time()} first query on ${lastChange.current.member} (port ${rows[0]?.port}) ${seconds(performance.now() - changedAt)} after the event`,
      );
    }
  } catch (error) {
    console.log(`${time()} query failed: ${(error as Error).constructor.name}: ${(error as Error).message}`);
  }
  await new Promise((resolve) => setTimeout(resolve, 1000));
}
await pool.end();

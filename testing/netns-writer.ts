// A pinned test writer meant to run as its own process, typically inside a network
// namespace (`ip netns exec NS node --import tsx testing/netns-writer.ts ...`), so it
// keeps reaching a member that the rest of the cluster cannot. Same rules as
// testing/writer.ts: one connection, one write in flight, one every intervalMillis,
// reconnecting after any error. It prints one JSON line per acknowledged write:
//   {"id":1,"member":"faults-0","at":1700000000000,"lsn":"0/3000148"}
// (`at`: wall-clock ms of the acknowledgement; `lsn`: WAL insert position right
// after the row, to measure lost bytes) and exits on SIGTERM/SIGINT or stdin end.
//
// Usage: netns-writer.ts <connectionString> <firstId> [intervalMillis] [table]
import pg from 'pg';

const [connectionString, firstIdText, intervalText, tableArg] = process.argv.slice(2);
if (connectionString === undefined || firstIdText === undefined) {
  process.stderr.write('usage: netns-writer.ts <connectionString> <firstId> [intervalMillis] [table]\n');
  process.exit(2);
}
const table = tableArg ?? 'acks';
const interval = Number(intervalText ?? 10);
let nextId = Number(firstIdText);
let stopped = false;
let conn: pg.Client | null = null;

const stop = () => {
  stopped = true;
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The test holds our stdin: when it goes away, so do we.
process.stdin.on('end', stop);
process.stdin.resume();

const loop = async () => {
  while (!stopped) {
    const started = Date.now();
    const id = nextId++;
    try {
      if (conn === null) {
        const c = new pg.Client({ connectionString, connectionTimeoutMillis: 1000, query_timeout: 2000 });
        c.on('error', () => {
          if (conn === c) conn = null;
        });
        conn = c;
        await c.connect();
      }
      const { rows } = await conn.query(
        `INSERT INTO ${table} (id, member) VALUES ($1, current_setting('cluster_name')) RETURNING member, pg_current_wal_insert_lsn()::text AS lsn`,
        [id],
      );
      process.stdout.write(`${JSON.stringify({ id, member: rows[0].member, at: Date.now(), lsn: rows[0].lsn })}\n`);
    } catch (error) {
      process.stdout.write(
        `${JSON.stringify({ error: (error as Error).message.split('\n')[0]!.slice(0, 120), at: Date.now() })}\n`,
      );
      const c = conn;
      conn = null;
      c?.end().catch(() => undefined);
    }
    const wait = interval - (Date.now() - started);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  await conn?.end().catch(() => undefined);
  process.exit(0);
};
void loop();

// A child process that uses a pool (plain pg.Pool or the built @pgha/client Pool) the
// way a small script would, for the process-level contract tests (exit, uncaught
// exceptions). Usage: node child-pool.mjs '<json {kind, scenario, options}>'.
// It prints one line per milestone; the parent test reads them.
import pg from 'pg';
import { Pool as PghaPool } from '../../dist/index.js';

const { kind, scenario, options } = JSON.parse(process.argv[2]);
const say = (line) => process.stdout.write(`${line}\n`);
const pool = kind === 'pg' ? new pg.Pool(options) : new PghaPool(options);
pool.on('error', () => undefined);

switch (scenario) {
  case 'idle': {
    // Uses the pool and never ends it: the process must exit once the pool is idle
    // (at once with allowExitOnIdle, after idleTimeoutMillis without).
    const { rows } = await pool.query('SELECT 1 AS one');
    say(`queried ${rows[0].one}`);
    break;
  }
  case 'busy': {
    // Work in flight keeps the process alive until it is done.
    pool.query('SELECT pg_sleep(0.5), 2 AS two').then(({ rows }) => say(`done ${rows[0].two}`));
    say('started');
    break;
  }
  case 'throw-in-connect-callback': {
    process.on('uncaughtException', (error) => {
      say(`uncaughtException ${error.message}`);
      process.exit(0);
    });
    process.on('unhandledRejection', (error) => {
      say(`unhandledRejection ${error?.message}`);
      process.exit(0);
    });
    pool.connect(() => {
      throw new Error('thrown by the callback');
    });
    break;
  }
  default:
    throw new Error(`unknown scenario ${scenario}`);
}

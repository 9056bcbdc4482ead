// http-service: a small JSON API (node:http, no framework) storing notes through
// Kysely on @pgha/client's Pool, with pgha's failover errors mapped to HTTP:
//
//   PrimaryChangedError  retried once here (nothing was committed: safe)
//   NotPrimaryError      retried once here (the connection reached a standby: nothing ran)
//   NoPrimaryError       503 with Retry-After: no writable primary within the wait
//   OutcomeUnknownError  503 without a retry: the write may or may not have committed;
//                        the client repeats it with the same Idempotency-Key, which is safe
//
//   PGHA_ETCD             etcd endpoints (default http://127.0.0.1:2379)
//   PGHA_CLUSTER          cluster name (default pgha)
//   PGHA_KEY_ROOT         etcd key root (default /pgha/)
//   DATABASE_URL          credentials and database, as printed by `pgha up` (host/port ignored)
//   PORT                  where to listen (default 3000; 0: any free port)
//   PRIMARY_WAIT_MILLIS   how long a request waits for a primary during a failover (default 10000)
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { NoPrimaryError, NotPrimaryError, OutcomeUnknownError, Pool, PrimaryChangedError } from '@pgha/client';
import { type Generated, Kysely, PostgresDialect, sql } from 'kysely';

interface Database {
  notes: {
    id: string;
    text: string;
    created_at: Generated<Date>;
  };
}

const pool = new Pool({
  etcd: { endpoints: process.env.PGHA_ETCD ?? 'http://127.0.0.1:2379' },
  cluster: process.env.PGHA_CLUSTER ?? 'pgha',
  keyRoot: process.env.PGHA_KEY_ROOT,
  connectionString: process.env.DATABASE_URL,
  max: 10,
  // A request waits this long for the next primary during a failover (about 2-4 s
  // after a host loss), then gets a 503.
  primaryWaitTimeoutMillis: Number(process.env.PRIMARY_WAIT_MILLIS ?? 10_000),
  application_name: 'http-service',
});
// As with pg.Pool: errors of idle connections (the old primary going away) arrive here.
pool.on('error', (error) => console.log(`idle connection error: ${error.message}`));
pool.on('primary-changed', (e) => console.log(`primary: ${e.current.member} (term ${e.term}, ${e.reason})`));

// Kysely takes the Pool as it takes a pg.Pool: nothing else changes.
const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });

await sql`CREATE TABLE IF NOT EXISTS notes (id text PRIMARY KEY, text text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`.execute(
  db,
);

/** An error with the HTTP status it maps to. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/**
 * Runs `work` and retries it once when pgha says nothing was done (the connection was
 * lost before the statement went out, or inside a transaction that rolled back, or it
 * reached a standby). OutcomeUnknownError (the statement may have run) is retried
 * only for a read, which is safe to run twice; a write surfaces it.
 */
async function withRetry<T>(work: () => Promise<T>, kind: 'read' | 'write'): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof PrimaryChangedError || error instanceof NotPrimaryError) return await work();
    if (error instanceof OutcomeUnknownError && kind === 'read') return await work();
    throw error;
  }
}

/** pgha's errors as HTTP responses; anything else is a 500. */
function toHttp(error: unknown): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof NoPrimaryError || error instanceof PrimaryChangedError || error instanceof NotPrimaryError)
    return new HttpError(503, `the database is failing over; try again shortly (${error.code})`, {
      'Retry-After': '1',
    });
  if (error instanceof OutcomeUnknownError)
    return new HttpError(
      503,
      'the database connection was lost while the write was in flight: it may or may not have been saved. Repeat the request with the same Idempotency-Key to find out (a repeat never saves it twice).',
    );
  console.error(error);
  return new HttpError(500, 'internal error');
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  let body = '';
  for await (const chunk of req) body += chunk;
  try {
    return JSON.parse(body || '{}');
  } catch {
    throw new HttpError(400, 'the body must be JSON');
  }
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (req.method === 'GET' && url.pathname === '/notes') {
    const notes = await withRetry(
      () => db.selectFrom('notes').selectAll().orderBy('created_at', 'desc').limit(50).execute(),
      'read',
    );
    return send(res, 200, { notes });
  }
  const one = /^\/notes\/([\w-]{1,100})$/.exec(url.pathname);
  if (req.method === 'GET' && one !== null) {
    const note = await withRetry(
      () => db.selectFrom('notes').selectAll().where('id', '=', one[1]!).executeTakeFirst(),
      'read',
    );
    return note === undefined ? send(res, 404, { error: 'no such note' }) : send(res, 200, note);
  }
  if (req.method === 'POST' && url.pathname === '/notes') {
    const body = (await readJson(req)) as { text?: unknown };
    if (typeof body.text !== 'string' || body.text === '') throw new HttpError(400, 'give {"text": "..."}');
    const text = body.text;
    // The Idempotency-Key is the row's id: a repeat after OutcomeUnknownError finds
    // the row if the first attempt committed, and inserts it if it did not.
    const id = req.headers['idempotency-key']?.toString() ?? randomUUID();
    const inserted = await withRetry(
      () =>
        db
          .insertInto('notes')
          .values({ id, text })
          .onConflict((oc) => oc.column('id').doNothing())
          .returningAll()
          .executeTakeFirst(),
      'write',
    );
    if (inserted !== undefined) return send(res, 201, inserted);
    const existing = await withRetry(
      () => db.selectFrom('notes').selectAll().where('id', '=', id).executeTakeFirst(),
      'read',
    );
    return send(res, 200, existing);
  }
  if (req.method === 'GET' && url.pathname === '/health') {
    const { rows } = await withRetry(
      () => sql<{ port: number }>`SELECT inet_server_port() AS port`.execute(db),
      'read',
    );
    return send(res, 200, { primary: pool.options.host, port: rows[0]?.port, term: pool.discovery.term });
  }
  throw new HttpError(404, `no route ${req.method} ${url.pathname}`);
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(`${JSON.stringify(body)}\n`);
}

const server = createServer((req, res) => {
  handle(req, res).catch((error: unknown) => {
    const e = toHttp(error);
    send(res, e.status, { error: e.message }, e.headers);
  });
});
server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  const address = server.address();
  console.log(`listening on http://127.0.0.1:${typeof address === 'object' && address ? address.port : '?'}`);
});

const stop = () => {
  server.close();
  void db.destroy().then(() => process.exit(0)); // ends the Pool too
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);

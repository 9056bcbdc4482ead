// ORMs over the pgha Pool: each runs queries and a transaction, then again after the
// primary changed (the test plays the agents, as in failover.test.ts).
import 'reflect-metadata';
import { PrismaPg } from '@prisma/adapter-pg';
import { sql as drizzleSql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import { Kysely, sql as kyselySql, PostgresDialect } from 'kysely';
import pg from 'pg';
import { DataSource } from 'typeorm';
import { afterEach, describe, expect, it } from 'vitest';
import { Pool, type PoolOptions } from '../src/index.js';
import { startEnv, type TestEnv } from './support/env.js';
import { until } from './support/wait.js';

interface Database {
  items: { id: number; name: string };
}

/** What each ORM must be able to do through the pool. */
interface OrmUnderTest {
  serverPort(): Promise<number>;
  /** Inserts both names in one transaction. */
  insertPair(a: string, b: string): Promise<void>;
  /** Inserts `a`, then fails: the transaction must roll back. */
  insertThenFail(a: string): Promise<void>;
  close(): Promise<void>;
}

describe('ORMs over the pgha Pool', () => {
  let env: TestEnv | undefined;
  let orm: OrmUnderTest | undefined;

  afterEach(async () => {
    await Promise.race([orm?.close().catch(() => undefined), new Promise((r) => setTimeout(r, 3000))]);
    orm = undefined;
    await env?.stop();
    env = undefined;
  });

  async function failOver(e: TestEnv): Promise<void> {
    const standby = e.pg.standbys[0]!;
    await e.pg.primary.stop();
    await e.deleteLeader();
    await e.publishLeader(standby, 2, { writable: false });
    await standby.promote();
    await e.publishLeader(standby, 2, { writable: true });
  }

  async function exercise(build: (e: TestEnv) => OrmUnderTest | Promise<OrmUnderTest>): Promise<void> {
    env = await startEnv({ standbys: 1 });
    const standby = env.pg.standbys[0]!;
    await env.pg.primary.query('CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)');
    await until(
      'the table to reach the standby',
      async () => (await standby.query("SELECT to_regclass('items') AS t"))[0]?.t,
    );
    orm = await build(env);

    expect(await orm.serverPort()).toBe(env.pg.primary.port);
    await orm.insertPair('a1', 'a2');
    await expect(orm.insertThenFail('a3')).rejects.toThrow();

    await failOver(env);

    expect(await orm.serverPort()).toBe(standby.port);
    await orm.insertPair('b1', 'b2');
    await expect(orm.insertThenFail('b3')).rejects.toThrow();
    const names = (await standby.query<{ name: string }>('SELECT name FROM items ORDER BY name')).map((r) => r.name);
    expect(names).toEqual(['a1', 'a2', 'b1', 'b2']);
  }

  const options = (e: TestEnv, extra: Partial<PoolOptions> = {}) =>
    e.poolOptions({ drainTimeoutMillis: 500, primaryWaitTimeoutMillis: 15_000, ...extra });

  it('Kysely (PostgresDialect({ pool }))', async () => {
    await exercise((e) => {
      const pool = new Pool(options(e));
      pool.on('error', () => undefined);
      const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
      return {
        async serverPort() {
          const { rows } = await kyselySql<{ port: number }>`SELECT inet_server_port() AS port`.execute(db);
          return rows[0]!.port;
        },
        async insertPair(a, b) {
          await db.transaction().execute(async (trx) => {
            await trx
              .insertInto('items')
              .values({ name: a } as never)
              .execute();
            await trx
              .insertInto('items')
              .values({ name: b } as never)
              .execute();
          });
        },
        async insertThenFail(a) {
          await db.transaction().execute(async (trx) => {
            await trx
              .insertInto('items')
              .values({ name: a } as never)
              .execute();
            throw new Error('roll back');
          });
        },
        close: () => db.destroy(),
      };
    });
  });

  it('Drizzle (drizzle(pool))', async () => {
    await exercise((e) => {
      const pool = new Pool(options(e));
      pool.on('error', () => undefined);
      const db = drizzle(pool);
      return {
        async serverPort() {
          const result = await db.execute<{ port: number }>(drizzleSql`SELECT inet_server_port() AS port`);
          return result.rows[0]!.port;
        },
        async insertPair(a, b) {
          await db.transaction(async (tx) => {
            await tx.execute(drizzleSql`INSERT INTO items (name) VALUES (${a})`);
            await tx.execute(drizzleSql`INSERT INTO items (name) VALUES (${b})`);
          });
        },
        async insertThenFail(a) {
          await db.transaction(async (tx) => {
            await tx.execute(drizzleSql`INSERT INTO items (name) VALUES (${a})`);
            throw new Error('roll back');
          });
        },
        close: () => pool.end(),
      };
    });
  });

  it('TypeORM (the pgha Pool as its pg driver module)', async () => {
    await exercise(async (e) => {
      const {
        etcd,
        cluster,
        keyRoot,
        drainTimeoutMillis,
        primaryWaitTimeoutMillis,
        rereadIntervalMillis,
        staleAfterMillis,
      } = options(e);
      // TypeORM builds `new driver.Pool(config)` from its own options plus `extra`.
      const driver = { ...pg, Pool };
      const source = new DataSource({
        type: 'postgres',
        driver,
        host: '127.0.0.1', // replaced by the primary at every connection
        port: 1,
        username: String(e.poolOptions().user),
        password: String(e.poolOptions().password),
        database: 'postgres',
        extra: {
          etcd,
          cluster,
          keyRoot,
          drainTimeoutMillis,
          primaryWaitTimeoutMillis,
          rereadIntervalMillis,
          staleAfterMillis,
        },
      });
      await source.initialize();
      return {
        async serverPort() {
          const rows = await source.query('SELECT inet_server_port() AS port');
          return rows[0].port;
        },
        async insertPair(a, b) {
          await source.transaction(async (manager) => {
            await manager.query('INSERT INTO items (name) VALUES ($1)', [a]);
            await manager.query('INSERT INTO items (name) VALUES ($1)', [b]);
          });
        },
        async insertThenFail(a) {
          await source.transaction(async (manager) => {
            await manager.query('INSERT INTO items (name) VALUES ($1)', [a]);
            throw new Error('roll back');
          });
        },
        close: () => source.destroy(),
      };
    });
  });

  it("Prisma's driver adapter (@prisma/adapter-pg over the pool)", async () => {
    await exercise(async (e) => {
      const pool = new Pool(options(e));
      pool.on('error', () => undefined);
      const adapter = await new PrismaPg(pool).connect();
      const text = { scalarType: 'string', arity: 'scalar' } as const;
      const insert = (tx: { executeRaw(q: unknown): Promise<number> }, name: string) =>
        tx.executeRaw({ sql: 'INSERT INTO items (name) VALUES ($1)', args: [name], argTypes: [text] });
      return {
        async serverPort() {
          const result = await adapter.queryRaw({ sql: 'SELECT inet_server_port() AS port', args: [], argTypes: [] });
          return Number(result.rows[0]![0]);
        },
        async insertPair(a, b) {
          // What Prisma's engine does for an interactive transaction.
          const tx = await adapter.startTransaction();
          await insert(tx, a);
          await insert(tx, b);
          await tx.executeRaw({ sql: 'COMMIT', args: [], argTypes: [] });
          await tx.commit();
        },
        async insertThenFail(a) {
          const tx = await adapter.startTransaction();
          await insert(tx, a);
          await tx.executeRaw({ sql: 'ROLLBACK', args: [], argTypes: [] });
          await tx.rollback();
          throw new Error('rolled back');
        },
        close: async () => {
          await adapter.dispose();
          await pool.end();
        },
      };
    });
  });
});

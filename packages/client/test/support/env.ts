// One test environment: a real etcd, a real primary with streaming standbys, and the
// test in the role of the primary's agent (it writes the leader record).
import { clusterKeys } from '@pgha/core';
import { Etcd3 } from 'etcd3';
import { startTestEtcd, type TestEtcd, uniqueKeyRoot } from '../../../../testing/etcd.js';
import {
  startTestCluster,
  type TestCluster,
  type TestServer,
  testPassword,
  testUser,
} from '../../../../testing/postgres.js';
import type { PoolOptions } from '../../src/index.js';
import { leaderRecord } from './records.js';

/** A running environment; `stop()` stops everything it started. */
export interface TestEnv {
  readonly etcd: TestEtcd;
  readonly pg: TestCluster;
  readonly admin: Etcd3;
  readonly cluster: string;
  readonly keyRoot: string;
  /** Writes the leader record naming `server` (the test plays the agent). */
  publishLeader(server: TestServer, term: number, options?: { writable?: boolean; member?: string }): Promise<void>;
  /** Deletes the leader record (the lease expired). */
  deleteLeader(): Promise<void>;
  /** Pool options for this cluster, with test-friendly timings, plus `extra`. */
  poolOptions(extra?: Partial<PoolOptions>): PoolOptions;
  stop(): Promise<void>;
}

/** Starts etcd and a primary with `standbys` standbys, and publishes the primary as leader of term 1. */
export async function startEnv(options: { standbys?: number; publish?: boolean } = {}): Promise<TestEnv> {
  const t0 = Date.now();
  const etcd = await startTestEtcd();
  const t1 = Date.now();
  let pgCluster: TestCluster;
  try {
    pgCluster = await startTestCluster({ standbys: options.standbys ?? 1 });
    if (process.env.PGHA_TEST_TIMING) console.log('START etcd', t1 - t0, 'pg', Date.now() - t1);
  } catch (error) {
    await etcd.stop();
    throw error;
  }
  const admin = new Etcd3({ hosts: etcd.endpoint });
  const cluster = 'demo';
  const keyRoot = uniqueKeyRoot();
  const keys = clusterKeys(cluster, keyRoot);
  const env: TestEnv = {
    etcd,
    pg: pgCluster,
    admin,
    cluster,
    keyRoot,
    async publishLeader(server, term, publishOptions = {}) {
      const record = leaderRecord({
        term,
        member: publishOptions.member ?? `demo-${server.name}`,
        host: server.host,
        port: server.port,
        writable: publishOptions.writable ?? true,
      });
      await admin.put(keys.leader).value(JSON.stringify(record));
    },
    async deleteLeader() {
      await admin.delete().key(keys.leader);
    },
    poolOptions(extra = {}) {
      return {
        etcd: { endpoints: [etcd.endpoint] },
        cluster,
        keyRoot,
        user: testUser,
        password: testPassword,
        database: 'postgres',
        rereadIntervalMillis: 1000,
        staleAfterMillis: 5000,
        primaryWaitTimeoutMillis: 10_000,
        drainTimeoutMillis: 1000,
        ...extra,
      } as PoolOptions;
    },
    async stop() {
      const t0 = Date.now();
      admin.close();
      await pgCluster.stop();
      const t1 = Date.now();
      await etcd.stop();
      if (process.env.PGHA_TEST_TIMING) console.log('STOP pg', t1 - t0, 'etcd', Date.now() - t1);
    },
  };
  if (options.publish ?? true) await env.publishLeader(pgCluster.primary, 1);
  return env;
}

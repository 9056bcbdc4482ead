// Discovery after an etcd outage: a real etcd frozen with SIGSTOP for 7 s, then
// resumed. Both pools (one with stalePolicy 'refuse') must be back within 0.5 s of
// etcd answering again, through the re-read and the watch.
import { clusterKeys } from '@pgha/core';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Pool } from '../src/index.js';
import { startEnv, type TestEnv } from './support/env.js';
import { leaderRecord } from './support/records.js';
import { until } from './support/wait.js';

/** Whether etcd answers its HTTP health check within `timeoutMillis`. */
async function etcdAnswers(endpoint: string, timeoutMillis: number): Promise<boolean> {
  try {
    const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(timeoutMillis) });
    return response.ok;
  } catch {
    return false;
  }
}

describe('discovery after etcd freezes and resumes', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await startEnv({ standbys: 0 });
  });
  afterAll(async () => {
    await env?.stop();
  });

  it('is back within 0.5 s of etcd answering again, for every pool in the process', async () => {
    const options = {
      etcd: { endpoints: [env.etcd.endpoint], callTimeoutMillis: 500 },
      staleAfterMillis: 2000,
      rereadIntervalMillis: 500,
    };
    const serving = new Pool(env.poolOptions(options));
    const refusing = new Pool(env.poolOptions({ ...options, stalePolicy: 'refuse' }));
    const pools = [serving, refusing];
    const staleAt: number[] = [];
    const held: Array<{ release(): void }> = [];
    for (const p of pools) {
      p.on('error', () => undefined);
      p.on('discovery-stale', () => staleAt.push(Date.now()));
    }
    try {
      // Both pools busy (watches open), as in an application under load.
      held.push(...(await Promise.all(pools.map((p) => p.connect()))));
      process.kill(env.etcd.pid, 'SIGSTOP');
      let answeredAt = 0;
      try {
        await until('both pools to go stale', () => pools.every((p) => p.discovery.staleSinceMillis !== null), 10_000);
        await new Promise((r) => setTimeout(r, 7000 - 2000)); // the rest of the 7 s freeze
      } finally {
        process.kill(env.etcd.pid, 'SIGCONT');
      }
      await until('etcd to answer its health check', () => etcdAnswers(env.etcd.endpoint, 200), 10_000);
      answeredAt = Date.now();
      // A leader change made now must reach both pools through the watch or the re-read
      // (written with a fresh etcd client: the test's own may still back off).
      const admin = new Etcd3({ hosts: env.etcd.endpoint });
      const record = leaderRecord({
        term: 2,
        member: `demo-${env.pg.primary.name}`,
        host: env.pg.primary.host,
        port: env.pg.primary.port,
      });
      const putDone = admin.put(clusterKeys(env.cluster, env.keyRoot).leader).value(JSON.stringify(record));
      const fresh = () =>
        pools.every((p) => p.discovery.staleSinceMillis === null && p.discovery.lastEtcdError === null);
      let freshAfter = Number.NaN;
      let seenAfter = Number.NaN;
      try {
        // The re-read (and the watch's reconnection) answer within 0.5 s of etcd.
        await until('both pools to hear from etcd again', fresh, 500);
        freshAfter = Date.now() - answeredAt;
        await putDone;
        const putAt = Date.now();
        // The change is delivered within 0.5 s of the write.
        await until('both pools to see term 2', () => pools.every((p) => p.discovery.term === 2), 500);
        seenAfter = Date.now() - putAt;
      } finally {
        console.log(
          `etcd answered its health check; both pools fresh ${freshAfter} ms later; the leader written then seen by both ${seenAfter} ms after the write (NaN: not within 500 ms)`,
          pools.map((p) => ({ stale: p.discovery.staleSinceMillis, term: p.discovery.term })),
        );
      }
      admin.close();
      expect((await refusing.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      // And they stay fresh: no discovery-stale over the next stale window.
      const watchedUntil = Date.now() + 2500;
      await until('the stale window to pass', () => Date.now() >= watchedUntil, 5000);
      expect(staleAt.filter((t) => t > answeredAt)).toEqual([]);
    } finally {
      for (const client of held.splice(0)) client.release();
      await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
    }
  });
});

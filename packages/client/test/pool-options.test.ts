// pool.options.host/port name the current primary (the client README's promise),
// against a real etcd and a real primary + standby: from the first discovery on,
// already inside every listener of the change (also listeners registered on a shared
// watcher before the pool, and another pool's), through a switchover and a cluster
// reset. The test plays the agents: it writes the leader and initialize records.
import { clusterKeys, type PrimaryEndpoint } from '@pgha/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClusterWatcher, Pool, ReplicaPool, watchCluster } from '../src/index.js';
import { startEnv, type TestEnv } from './support/env.js';
import { nextEvent } from './support/wait.js';

describe('pool.options names the current primary', () => {
  let env: TestEnv;

  beforeAll(async () => {
    env = await startEnv({ standbys: 1 });
  });
  afterAll(async () => {
    await env?.stop();
  });

  /** A sighting of a change: who heard it, the primary it named, and where each pool's options pointed then. */
  interface Sighting {
    readonly heardBy: string;
    readonly event: 'primary-changed' | 'no-primary';
    readonly named: string | null;
    readonly options: Record<string, string>;
  }

  const at = (endpoint: { host: string; port: number }) => `${endpoint.host}:${endpoint.port}`;

  it('names each new primary in pool.options before any primary-changed listener runs, on every pool of a shared watcher', async () => {
    const { primary } = env.pg;
    const standby = env.pg.standbys[0]!;
    const initializeKey = clusterKeys(env.cluster, env.keyRoot).initialize;
    const initialize = (systemId: string) =>
      JSON.stringify({ v: 1, member: 'demo-primary', systemId, at: new Date().toISOString() });
    await env.admin.put(initializeKey).value(initialize('7000000000000000001'));

    const watcher: ClusterWatcher = watchCluster({
      etcd: { endpoints: env.etcd.endpoint },
      cluster: env.cluster,
      keyRoot: env.keyRoot,
      rereadIntervalMillis: 1000,
    });
    const { etcd: _e, cluster: _c, keyRoot: _k, ...pgOnly } = env.poolOptions();
    const shared: Record<string, Pool> = {};
    const sightings: Sighting[] = [];
    const sight = (
      heardBy: string,
      pools: Record<string, pg.Pool>,
      event: Sighting['event'],
      named: PrimaryEndpoint | null,
    ) =>
      sightings.push({
        heardBy,
        event,
        named: named === null ? null : at(named),
        options: Object.fromEntries(
          Object.entries(pools).map(([name, p]) => [name, `${p.options.host}:${p.options.port}`]),
        ),
      });
    // Registered before any pool exists: it hears of each change before the pools do.
    watcher.on('primary-changed', (e) => sight('watcher', shared, 'primary-changed', e.current));
    watcher.on('no-primary', () => sight('watcher', shared, 'no-primary', null));

    // An unrouted Client (any class without pg's protocol handlers) connects wherever
    // pool.options point when pg-pool creates it.
    const unroutedConfigs: Array<{ host?: string; port?: number }> = [];
    function UnroutedClient(config: pg.ClientConfig) {
      unroutedConfigs.push({ host: config.host, port: config.port });
      return new pg.Client(config);
    }
    const a = new Pool({ ...pgOnly, discovery: watcher, host: 'configured.invalid', port: 1 });
    const b = new Pool({ ...pgOnly, discovery: watcher });
    const replicas = new ReplicaPool({ ...pgOnly, discovery: watcher });
    const unrouted = new Pool({ ...pgOnly, discovery: watcher, Client: UnroutedClient as unknown as typeof pg.Client });
    const own = new Pool(env.poolOptions({ host: 'configured.invalid', port: 2 }));
    Object.assign(shared, { a, b, replicas, unrouted });
    const all = [a, b, replicas, unrouted, own];
    for (const p of all) p.on('error', () => undefined);
    try {
      // Before any primary is known: what the user passed (pg-pool adds no default).
      expect([a.options.host, a.options.port]).toEqual(['configured.invalid', 1]);
      expect([b.options.host, b.options.port]).toEqual([undefined, undefined]);
      expect([own.options.host, own.options.port]).toEqual(['configured.invalid', 2]);

      for (const [name, p] of Object.entries(shared)) {
        p.on('primary-changed', (e) => sight(name, shared, 'primary-changed', e.current));
      }
      own.on('primary-changed', (e) => sight('own', { own }, 'primary-changed', e.current));
      own.on('no-primary', () => sight('own', { own }, 'no-primary', null));

      const changeTo = async (term: number, publish: () => Promise<void>) => {
        const heard = [a, own].map((p) => nextEvent(p, 'primary-changed', (e) => e.term === term));
        await publish();
        await Promise.all(heard);
      };

      // 1. Initial discovery.
      await Promise.all([a, own].map((p) => nextEvent(p, 'primary-changed', (e) => e.term === 1)));
      for (const p of all) expect(at(p.options as { host: string; port: number })).toBe(at(primary));
      expect((await a.query<{ port: number }>('SELECT inet_server_port() AS port')).rows[0]!.port).toBe(primary.port);

      // 2. A switchover: the leader of term 2 is installed (not writable: no-primary, the
      // options keep the last primary), then turns writable.
      await changeTo(2, async () => {
        await env.publishLeader(standby, 2, { writable: false });
        await env.publishLeader(standby, 2, { writable: true });
      });
      for (const p of all) expect(at(p.options as { host: string; port: number })).toBe(at(standby));
      // pg-pool creates a new unrouted client with the options of now.
      const client = await unrouted.connect();
      expect((await client.query('SELECT inet_server_port() AS port')).rows[0].port).toBe(standby.port);
      client.release(true);
      expect(unroutedConfigs.at(-1)).toEqual({ host: standby.host, port: standby.port });

      // 3. A cluster reset: a new incarnation whose terms restart, led by the old primary.
      await changeTo(1, async () => {
        await env.publishLeader(primary, 1, { member: 'demo-reborn', writable: false });
        await env.admin.put(initializeKey).value(initialize('7000000000000000002'));
        await env.publishLeader(primary, 1, { member: 'demo-reborn', writable: true });
      });
      for (const p of all) expect(at(p.options as { host: string; port: number })).toBe(at(primary));
      expect((await a.query<{ port: number }>('SELECT inet_server_port() AS port')).rows[0]!.port).toBe(primary.port);

      // Every listener, whenever it ran, saw the options of every pool following the
      // same watcher name the primary its event named; during the gap, the last one.
      // Three changes, each heard by six listeners (the watcher's, the four shared pools', own's).
      expect(sightings.filter((s) => s.event === 'primary-changed').length).toBe(3 * 6);
      let last: string | null = null;
      const wrong: Sighting[] = [];
      for (const s of sightings.filter((s) => s.heardBy !== 'own')) {
        if (s.named !== null) last = s.named;
        if (Object.values(s.options).some((o) => o !== last)) wrong.push(s);
      }
      last = null;
      for (const s of sightings.filter((s) => s.heardBy === 'own')) {
        if (s.named !== null) last = s.named;
        if (s.options.own !== last) wrong.push(s);
      }
      expect(wrong).toEqual([]);
      expect(
        sightings.filter((s) => s.event === 'no-primary' && s.heardBy === 'watcher').length,
      ).toBeGreaterThanOrEqual(1);
    } finally {
      await Promise.all(all.map((p) => p.end().catch(() => undefined)));
      await watcher.close();
    }
  });
});

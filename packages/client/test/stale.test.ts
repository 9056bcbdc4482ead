// Stale knowledge: etcd unreachable (a black-holing proxy in front of a real etcd)
// beyond the window, under both policies.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DiscoveryStaleError, Pool, type PoolOptions } from '../src/index.js';
import { startEnv, type TestEnv } from './support/env.js';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.js';
import { nextEvent } from './support/wait.js';

describe('stale discovery', () => {
  let env: TestEnv;
  let proxy: TcpProxy;
  const pools: Pool[] = [];

  beforeAll(async () => {
    env = await startEnv({ standbys: 0 });
  });
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => p.end().catch(() => undefined)));
    await proxy?.close();
  });
  afterAll(async () => {
    await env?.stop();
  });

  async function pool(extra: Partial<PoolOptions>): Promise<Pool> {
    proxy = await startTcpProxy(Number(new URL(env.etcd.endpoint).port));
    const p = new Pool(
      env.poolOptions({
        etcd: { endpoints: `http://127.0.0.1:${proxy.port}`, callTimeoutMillis: 300 },
        rereadIntervalMillis: 200,
        staleAfterMillis: 700,
        ...extra,
      }),
    );
    p.on('error', () => undefined);
    pools.push(p);
    await p.query('SELECT 1');
    return p;
  }

  it('serves the last known primary while stale (default policy) and emits stale, then restored', async () => {
    const p = await pool({});
    proxy.blackhole();
    const stale = await nextEvent(p, 'discovery-stale', () => true, 5000);
    expect(stale.sinceMillis).toBeGreaterThan(700);
    // Idle connections and new ones (role-checked) keep working.
    const client = await p.connect();
    client.release(new Error('force a new connection next time'));
    expect((await p.query('SELECT inet_server_port() AS port')).rows[0].port).toBe(env.pg.primary.port);
    proxy.cutAll();
    proxy.restore();
    await nextEvent(p, 'discovery-restored', () => true, 10_000);
  });

  it('refuses checkouts while stale under stalePolicy "refuse", and serves again once etcd answers', async () => {
    const p = await pool({ stalePolicy: 'refuse' });
    proxy.blackhole();
    await nextEvent(p, 'discovery-stale', () => true, 5000);
    const error = await p.query('SELECT 1').catch((e) => e);
    expect(error).toBeInstanceOf(DiscoveryStaleError);
    expect(error.code).toBe('discovery-stale');
    expect(error.retryable).toBe(true);
    const viaCallback = await new Promise<Error | undefined>((resolve) => p.connect((err) => resolve(err)));
    expect(viaCallback).toBeInstanceOf(DiscoveryStaleError);
    proxy.cutAll();
    proxy.restore();
    await nextEvent(p, 'discovery-restored', () => true, 10_000);
    expect((await p.query('SELECT 1 AS one')).rows[0].one).toBe(1);
  });
});

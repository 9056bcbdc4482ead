/**
 * The operator's leader watches (runtime/kubernetes/leader-watches.ts) on a real
 * etcd, through a TCP proxy the test can cut: a change of the leader record
 * enqueues the cluster's reconcile; after the connection is cut and restored, the
 * watch comes back on its own and delivers what changed meanwhile; an etcd that
 * never answers only logs; after `stop()` nothing more is enqueued.
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { clusterKeys } from '@pgha/core';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, type TestEtcd, uniqueKeyRoot } from '../../../testing/etcd.js';
import { createEtcdClient } from '../src/adapters/etcd.js';
import { findFreePort } from '../src/adapters/ports.js';
import { LeaderWatches, openEtcdLeaderWatch } from '../src/runtime/kubernetes/leader-watches.js';
import type { PgHaClusterObject } from '../src/runtime/kubernetes/pgha-cluster.js';

/** A TCP proxy to etcd whose connections can be cut (all destroyed, new ones refused) and restored. */
interface CuttableProxy {
  readonly url: string;
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

async function startProxy(upstream: string): Promise<CuttableProxy> {
  const target = new URL(upstream);
  const sockets = new Set<Socket>();
  let cut = false;
  const server: Server = createServer((client) => {
    if (cut) {
      client.destroy();
      return;
    }
    const up = tcpConnect(Number(target.port), target.hostname);
    for (const s of [client, up]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.pipe(up).pipe(client);
    client.on('close', () => up.destroy());
    up.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    cut() {
      cut = true;
      for (const s of sockets) s.destroy();
    },
    restore() {
      cut = false;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

let etcdServer: TestEtcd;
let direct: Etcd3;
let proxy: CuttableProxy;
let viaProxy: Etcd3;
const keyRoot = uniqueKeyRoot();
const keys = clusterKeys('demo', keyRoot);
const logs: string[] = [];
const enqueued: number[] = [];

const cluster = (endpoints: string[]): PgHaClusterObject => ({
  apiVersion: 'pgha.dev/v1alpha1',
  kind: 'PgHaCluster',
  metadata: { name: 'demo', namespace: 'db', uid: 'uid-demo' },
  spec: { etcd: { endpoints, keyRoot } },
});

async function until(what: string, ok: () => boolean, millis = 10_000): Promise<void> {
  const deadline = Date.now() + millis;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; log:\n${logs.join('\n')}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const watches = () =>
  new LeaderWatches({
    onChange: () => enqueued.push(Date.now()),
    log: { info: (m) => logs.push(m), warn: (m) => logs.push(`WARN ${m}`) },
    // as `pgha operator` builds them
    open: (target, events) => openEtcdLeaderWatch(viaProxy, clusterKeys(target.cluster, target.keyRoot).leader, events),
  });

beforeAll(async () => {
  etcdServer = await startTestEtcd();
  direct = new Etcd3({ hosts: etcdServer.endpoint });
  proxy = await startProxy(etcdServer.endpoint);
  viaProxy = createEtcdClient({ endpoints: proxy.url }, 1500, { maxWatchBackoffMillis: 1000 });
});

afterAll(async () => {
  viaProxy?.close();
  direct?.close();
  await proxy?.close();
  await etcdServer?.stop();
});

describe('leader watches on a real etcd', () => {
  it('enqueues a reconcile on each change, and comes back by itself after the connection is cut', async () => {
    const set = watches();
    set.sync('db/demo', cluster([proxy.url]));
    await until('the first connection', () => enqueued.length >= 1);

    let from = enqueued.length;
    const putAt = Date.now();
    await direct.put(keys.leader).value('{"first":true}');
    await until('the put', () => enqueued.length > from);
    console.log(`put delivered by the watch ${enqueued.at(-1)! - putAt} ms after it was written`);
    from = enqueued.length;
    await direct.delete().key(keys.leader);
    await until('the delete', () => enqueued.length > from);

    proxy.cut();
    await until('the disconnection logged', () => logs.some((l) => l.includes('leader watch disconnected')));
    from = enqueued.length;
    await direct.put(keys.leader).value('{"whileCut":true}'); // missed by a watch that is down
    const restoredAt = Date.now();
    proxy.restore();
    await until('a reconcile after the reconnection', () => enqueued.length > from);
    console.log(`watch back ${enqueued.at(-1)! - restoredAt} ms after the connection was restored`);
    expect(logs.some((l) => l.includes('leader watch connected again'))).toBe(true);

    set.stop();
    from = enqueued.length;
    // A second watch on the same client, connected first, proves the put was delivered.
    const probe = await viaProxy.watch().key(keys.leader).create();
    const seen = new Promise<void>((resolve) => probe.once('put', () => resolve()));
    await direct.put(keys.leader).value('{"afterStop":true}');
    await seen;
    void probe.cancel();
    expect(enqueued.length).toBe(from);
  });

  it('only logs while etcd never answers, and stops cleanly', async () => {
    const closedPort = await findFreePort();
    const lost = createEtcdClient({ endpoints: `http://127.0.0.1:${closedPort}` }, 500, { maxWatchBackoffMillis: 200 });
    const set = new LeaderWatches({
      onChange: () => enqueued.push(Date.now()),
      log: { info: (m) => logs.push(m), warn: (m) => logs.push(`WARN ${m}`) },
      open: (target, events) => openEtcdLeaderWatch(lost, clusterKeys(target.cluster, target.keyRoot).leader, events),
    });
    const from = enqueued.length;
    set.sync('db/lost', {
      ...cluster([`http://127.0.0.1:${closedPort}`]),
      metadata: { name: 'lost', namespace: 'db', uid: 'uid-lost' },
    });
    await until('the disconnection logged', () => logs.some((l) => l.startsWith('WARN db/lost: leader watch')));
    await new Promise((r) => setTimeout(r, 500)); // a few reconnection attempts (200 ms apart)
    expect(logs.filter((l) => l.startsWith('WARN db/lost')).length).toBe(1); // once per outage
    expect(enqueued.length).toBe(from);
    set.stop();
    lost.close();
  });
});

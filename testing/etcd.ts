// Test support: a real single-member etcd per test file, on free loopback ports,
// in a fresh temporary directory. Never a fake.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findFreePort } from '../packages/controller/src/adapters/ports.js';
import { startEtcdServer } from '../packages/controller/src/runtime/local/etcd-server.js';
import { makeEtcdDataDir } from './state-dir.js';

/** A running test etcd; `stop()` kills it and removes its directory. */
export interface TestEtcd {
  readonly endpoint: string;
  readonly pid: number;
  stop(): Promise<void>;
}

/** Starts etcd on free ports with its data in a new temporary directory. */
export async function startTestEtcd(): Promise<TestEtcd> {
  const dir = mkdtempSync(join(tmpdir(), 'pgha-etcd-'));
  const clientPort = await findFreePort();
  let peerPort = await findFreePort();
  while (peerPort === clientPort) peerPort = await findFreePort();
  const data = makeEtcdDataDir('pgha-etcd-data-'); // in memory: testing/state-dir.ts
  const server = await startEtcdServer({
    dataDir: data,
    clientPort,
    peerPort,
    logFile: join(dir, 'etcd.log'),
  });
  return {
    endpoint: server.endpoint,
    pid: server.pid,
    async stop() {
      await server.stop();
      rmSync(data, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A key root no other test uses, so tests sharing one etcd never see each other. */
export function uniqueKeyRoot(): string {
  return `/pgha-test-${process.pid}-${Math.random().toString(36).slice(2, 10)}/`;
}

// The bootstrap under a lapsed lease: a one-member cluster whose etcd is frozen
// (SIGSTOP) while initdb runs, for longer than the lease TTL, so the bootstrapping
// agent's leader record lapses before postgres was ever started. Seen in issue 13's
// soak on a machine at load average 25 (initdb took 40 s): the agent refused to start
// writable without the record and exited, and the cluster never came up. initdb is
// made slow on purpose (a wrapper that waits before running the real one) so that
// the freeze always falls inside it. The freeze (8 s) also outlasts the 5 s deadline
// of `pgha up`'s own etcd reads while it waits for the cluster: that wait must take
// a silent etcd as slow, not as gone (a CI run's `pgha up` exited on one such answer).
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clusterKeys, LeaderRecord } from '@pgha/core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { findFreePortRange, waitFor } from '../../../testing/cluster.js';
import { startTestEtcd, type TestEtcd } from '../../../testing/etcd.js';
import { createEtcdClient } from '../src/adapters/etcd.js';
import { findPostgresBinaries } from '../src/adapters/prerequisites.js';
import { createLogger } from '../src/log.js';
import { type LocalCluster, startLocalCluster } from '../src/runtime/local/local-cluster.js';

const cluster = 'bootlapse';
const leaseTtlMillis = 2000;
/** How long etcd is frozen: over the TTL, and over the 5 s deadline of `pgha up`'s reads. */
const freezeMillis = 8000;
/** How long the wrapper holds initdb back: the freeze starts after ~1 s. */
const initdbDelaySeconds = 10;

let dir: string;
let etcd: TestEtcd;
let c: LocalCluster | null = null;
let frozen = false;
const savedPgBin = process.env.PGHA_PG_BIN;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgha-bootlapse-'));
  chmodSync(dir, 0o755);
  // A bin directory like the real one, with a slow initdb.
  const real = (await findPostgresBinaries()).binDir;
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  chmodSync(bin, 0o755);
  for (const name of readdirSync(real)) if (name !== 'initdb') symlinkSync(join(real, name), join(bin, name));
  writeFileSync(join(bin, 'initdb'), `#!/bin/sh\nsleep ${initdbDelaySeconds}\nexec '${join(real, 'initdb')}' "$@"\n`);
  chmodSync(join(bin, 'initdb'), 0o755);
  process.env.PGHA_PG_BIN = bin;
  etcd = await startTestEtcd();
});

afterAll(async () => {
  if (frozen) process.kill(etcd.pid, 'SIGCONT');
  await c?.stop().catch(() => undefined);
  await etcd?.stop();
  if (savedPgBin === undefined) delete process.env.PGHA_PG_BIN;
  else process.env.PGHA_PG_BIN = savedPgBin;
  rmSync(dir, { recursive: true, force: true });
});

test('a lease that lapses during initdb: the bootstrapping member takes the leader record again and the cluster comes up', async () => {
  const stateDir = join(dir, 'state');
  mkdirSync(stateDir);
  chmodSync(stateDir, 0o711);
  let freeze: Promise<void> | null = null;
  const lines: string[] = [];
  const base = await findFreePortRange(2);
  c = await startLocalCluster({
    cluster,
    members: 1,
    stateDir,
    basePort: base,
    etcd: etcd.endpoint,
    leaseTtlMillis,
    log: createLogger('test', () => undefined),
    // No restart by a supervisor: an agent that exits must fail the start-up here.
    supervise: false,
    readyTimeoutMillis: 90_000,
    progress: (line) => {
      lines.push(line);
      if (freeze === null && /initializing/.test(line)) {
        frozen = true;
        process.kill(etcd.pid, 'SIGSTOP');
        freeze = new Promise<void>((resolve) =>
          setTimeout(() => {
            process.kill(etcd.pid, 'SIGCONT');
            frozen = false;
            resolve();
          }, freezeMillis),
        );
      }
    },
  });
  expect(freeze, 'etcd was frozen while initdb ran').not.toBeNull();
  await freeze;
  const client = createEtcdClient({ endpoints: etcd.endpoint }, 3000);
  try {
    const leader = await waitFor(
      'a writable leader',
      async () => {
        const text = await client.get(clusterKeys(cluster).leader).string();
        const l = text === null ? null : LeaderRecord.decode(text);
        return l?.writable ? l : undefined;
      },
      30_000,
    );
    // The record lapsed and was taken again: a later term than the first.
    expect(leader.term).toBeGreaterThan(1);
    expect(leader.member).toBe(`${cluster}-0`);
  } finally {
    client.close();
  }
  const log = readFileSync(c.members[0]!.logFile, 'utf8');
  expect(log).toMatch(/our leader record lapsed during initdb/);
  // The start-up wait saw etcd silent, said so, and waited.
  expect(lines.join('\n')).toMatch(/etcd did not answer .*waiting up to 30 s for it/);
});

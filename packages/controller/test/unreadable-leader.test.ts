// An agent's leadership against a leader record it cannot parse, on a real etcd (no
// cluster: the member's postgres is never started, so nothing here depends on it). A
// member must never take leadership because it could not read the record, a primary
// keeps its claim only while the key is under its own lease, and the unreadable record
// is logged once per change, not on every read.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { clusterKeys } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, type TestEtcd, uniqueKeyRoot } from '../../../testing/etcd.js';
import { createEtcdClient } from '../src/adapters/etcd.js';
import { findPostgresBinaries } from '../src/adapters/prerequisites.js';
import { Leadership } from '../src/agent/leadership.js';
import { PostgresMember } from '../src/agent/postgres-member.js';
import { systemClock } from '../src/clock.js';
import { createLogger } from '../src/log.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
/** Not JSON a record parser accepts, with an escape sequence in it. */
const garbage = '{"v":1,"term":"\u001b[2J';

let etcd: TestEtcd;
let client: Etcd3;
const dirs: string[] = [];
const started: Leadership[] = [];

beforeAll(async () => {
  etcd = await startTestEtcd();
  client = createEtcdClient({ endpoints: etcd.endpoint });
});

afterEach(async () => {
  await Promise.all(started.splice(0).map((l) => l.stop()));
  // The watchdog processes the leaderships started are gone (bounded wait).
  const deadline = Date.now() + 10_000;
  while (watchdogChildren().length > 0 && Date.now() < deadline) await delay(50);
  expect(watchdogChildren()).toEqual([]);
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

afterAll(async () => {
  client?.close();
  await etcd?.stop();
});

/** This process's child processes that are watchdogs. */
function watchdogChildren(): string[] {
  const found: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const command = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (ppid === process.pid && command.includes('watchdog')) found.push(`${entry}: ${command}`);
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

/** A started leadership of member `name` (its postgres down), and its log lines. */
async function leadership(cluster: string, keyRoot: string, name: string) {
  const memberDir = mkdtempSync(join(tmpdir(), 'pgha-unreadable-leader-'));
  dirs.push(memberDir);
  const lines: string[] = [];
  const log = createLogger(name, (line) => lines.push(line));
  const postgres = new PostgresMember({
    cluster,
    name,
    memberDir,
    listenAddresses: '127.0.0.1',
    port: 1,
    superuserPassword: 'unused-superuser-password',
    replicationPassword: 'unused-replication-password',
    appRole: null,
    allowedNetworks: [],
    sharedBuffers: '16MB',
    maxConnections: 20,
    tls: null,
    postgresParameters: {},
    queryTimeoutMillis: 5000,
    bins: await findPostgresBinaries(),
    user: null,
    log,
    clock: systemClock,
    onChange: () => undefined,
  });
  const lead = new Leadership(client, postgres, {
    name,
    host: '127.0.0.1',
    port: 1,
    memberDir,
    keys: clusterKeys(cluster, keyRoot),
    lease: { ttlMillis: 10_000, keepaliveIntervalMillis: 1000, fencingMarginMillis: 1000 },
    healthBoundMillis: 3000,
    cliPath: cli,
    log,
    clock: systemClock,
    poke: () => undefined,
    onRegranted: async () => undefined,
  });
  started.push(lead);
  await lead.start();
  const warnings = () => lines.filter((l) => l.includes('ignoring the leader record'));
  return { lead, warnings };
}

describe('an agent reading a leader record it cannot parse', () => {
  it('never takes leadership over it, and logs it once per change, not on every read', async () => {
    const keyRoot = uniqueKeyRoot();
    const keys = clusterKeys('c', keyRoot);
    await client.put(keys.leader).value(garbage);
    const { lead, warnings } = await leadership('c', keyRoot, 'c-1');
    for (let k = 0; k < 3; k++) {
      const view = await lead.read();
      expect(view.leader).toBeNull();
    }
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]).toContain(`revision`);
    expect(warnings()[0]).toContain(keys.leader);
    // The install is guarded by the key not existing: the unreadable record blocks it.
    expect(await lead.install(1, 1, null)).toBe(false);
    expect(lead.holdsLeader).toBe(false);
    expect(await client.get(keys.leader).string()).toBe(garbage);
    expect(await client.get(keys.term).string()).toBeNull();
    // Another unreadable value is another change: logged once more.
    await client.put(keys.leader).value(`${garbage}x`);
    await lead.read();
    await lead.read();
    expect(warnings()).toHaveLength(2);
  });

  it('lets a primary keep its claim while the key is under its lease, and lose it when overwritten', async () => {
    const keyRoot = uniqueKeyRoot();
    const keys = clusterKeys('c', keyRoot);
    const { lead, warnings } = await leadership('c', keyRoot, 'c-0');
    await lead.read();
    expect(await lead.install(1, 1, null)).toBe(true);
    expect(lead.holdsLeader).toBe(true);
    // Unreadable but still under our lease: the claim, and its deadline logic, stand.
    await client.put(keys.leader).value(garbage).lease(lead.lease.id);
    const kept = await lead.read();
    expect(lead.holdsLeader).toBe(true);
    expect(kept.leader?.member).toBe('c-0');
    expect(lead.lease.isValid()).toBe(true);
    // Overwritten under no lease: no longer ours, whatever the last record said.
    await client.put(keys.leader).value(`${garbage}x`);
    const lost = await lead.read();
    expect(lead.holdsLeader).toBe(false);
    expect(lost.leaderLease).toBe('0');
    expect(warnings()).toHaveLength(2);
  });
});

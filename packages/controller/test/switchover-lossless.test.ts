// A planned switchover loses nothing, even to a target that stopped receiving WAL
// without anything saying so: its WAL receiver is frozen (SIGSTOP), so its member
// record still says "streaming" while writes go on. The old primary shuts down
// cleanly and publishes its final position; the target must not take over without
// it (it declines, and another member that has everything is elected instead).
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { clusterKeys, HistoryRecord, LeaderRecord, MemberRecord } from '@pgha/core';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { childPids, commandLine, findFreePortRange, postmasterPid, waitFor } from '../../../testing/cluster.js';
import { startTestEtcd, type TestEtcd } from '../../../testing/etcd.js';
import { createAckTable, missingAcks, startWriter, type Writer } from '../../../testing/writer.js';
import { createLogger } from '../src/log.js';
import { cliPath, type LocalCluster, startLocalCluster } from '../src/runtime/local/local-cluster.js';

const cluster = 'lossless';
const keys = clusterKeys(cluster);
let stateDir: string;
let testEtcd: TestEtcd;
let c: LocalCluster | null = null;
let etcd: Etcd3;
const frozen = new Set<number>();
const writers: Writer[] = [];

beforeAll(async () => {
  stateDir = mkdtempSync(join(tmpdir(), 'pgha-lossless-'));
  testEtcd = await startTestEtcd();
  etcd = new Etcd3({ hosts: testEtcd.endpoint });
}, 60_000);

afterAll(async () => {
  for (const pid of frozen) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      /* gone */
    }
  }
  for (const w of writers) await w.stop().catch(() => undefined);
  await c?.stop();
  etcd?.close();
  await testEtcd?.stop();
  rmSync(stateDir, { recursive: true, force: true });
}, 120_000);

async function leader(): Promise<LeaderRecord | null> {
  const text = await etcd.get(keys.leader).string();
  return text === null ? null : LeaderRecord.decode(text);
}

async function healthy(): Promise<LeaderRecord> {
  return waitFor(
    'one writable primary and two streaming replicas',
    async () => {
      const l = await leader();
      if (l === null || !l.writable) return undefined;
      const all = Object.values(await etcd.getAll().prefix(keys.membersPrefix).strings()).map((v) =>
        MemberRecord.decode(v),
      );
      const ok = all.length === 3 && all.every((m) => m.state === 'running' && (m.name === l.member || m.streaming));
      return ok ? l : undefined;
    },
    60_000,
    100,
  );
}

test('a switchover to a replica whose WAL receiver froze loses no acknowledged write', async () => {
  const base = await findFreePortRange(3);
  c = await startLocalCluster({
    cluster,
    stateDir,
    members: 3,
    basePort: base,
    etcd: testEtcd.endpoint,
    log: createLogger('test', () => undefined),
  });
  const before = await healthy();
  const old = before.member;
  const targetName = c.members.find((m) => m.name !== old)!.name;
  const target = c.members.find((m) => m.name === targetName)!;
  await createAckTable(c.connectionString(old));
  const writer = startWriter({
    members: c.members.map((m) => ({ name: m.name, connectionString: c!.connectionString(m.name) })),
    follow: { pinned: old },
    intervalMillis: 5,
  });
  writers.push(writer);
  await waitFor('writes on the primary', () => writer.acks.length > 50, 20_000, 50);

  // Freeze the target's WAL receiver: it keeps its "streaming" status in shared memory.
  const postmaster = postmasterPid(target.memberDir)!;
  const receiver = childPids(postmaster).find((pid) => commandLine(pid).includes('walreceiver'));
  expect(receiver, 'the target runs a WAL receiver').toBeDefined();
  process.kill(receiver!, 'SIGSTOP');
  frozen.add(receiver!);
  const frozenAt = writer.acks.length;
  await waitFor('writes the target cannot have', () => writer.acks.length > frozenAt + 100, 20_000, 50);

  await promisify(execFile)(process.execPath, [
    cliPath(),
    'switchover',
    '--etcd',
    testEtcd.endpoint,
    '--cluster',
    cluster,
    '--to',
    targetName,
    '--timeout-millis',
    '5000',
  ]).catch(() => undefined); // it may report that the target did not take over; judged below
  const after = await waitFor(
    'a writable primary of a newer term',
    async () => {
      const l = await leader();
      return l !== null && l.writable && l.term > before.term ? l : undefined;
    },
    60_000,
    100,
  );
  await writer.stop();
  process.kill(receiver!, 'SIGCONT');
  frozen.delete(receiver!);
  const missing = await missingAcks(c.connectionString(after.member), writer.acks);
  console.log(
    `switchover ${old} -> ${after.member} (asked for ${targetName}, WAL receiver frozen): ${writer.acks.length} writes acknowledged, ${missing.length} missing`,
  );
  expect(missing).toEqual([]);
  const history = await waitFor(
    `the history record of term ${after.term}`,
    async () => {
      const text = await etcd.get(keys.history(after.term)).string();
      return text === null ? undefined : HistoryRecord.decode(text);
    },
    10_000,
  );
  expect(history.oldPrimary).toBe(old);
  // The new primary received the old one's shutdown checkpoint before installing:
  // the history states no possible loss.
  expect(history.lostBytes).toBe(0);
  await healthy();
}, 240_000);

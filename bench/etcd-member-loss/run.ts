// bench/etcd-member-loss: the write pause a pgha cluster sees when one member of a
// three-member etcd dies (its raft leader, or a follower). Measured, printed, never
// asserted: fault test (g) in packages/controller/test/partition.test.ts asserts the
// safety side (no failover, renewals before the fencing deadline); this prints how
// long writes paused.
//
//   npx tsx bench/etcd-member-loss/run.ts [--trials 3] [--kill leader|follower]
//       [--heartbeat 50] [--election 300]
//
// Every trial: a writer following the leader record inserts every 10 ms; one etcd
// member is killed with SIGKILL; the window is the etcd election plus two lease
// TTLs; the longest gap between acknowledgements in it is printed; the member is
// restarted on its data directory. Everything started is stopped by PID at the end.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { clusterKeys, defaultConfig, LeaderRecord } from '@pgha/core';
import { createEtcdClient } from '../../packages/controller/src/adapters/etcd.js';
import { createLogger } from '../../packages/controller/src/log.js';
import { startLocalEtcdCluster } from '../../packages/controller/src/runtime/local/etcd-cluster.js';
import { startLocalCluster } from '../../packages/controller/src/runtime/local/local-cluster.js';
import { alive, findFreePortRange, waitFor } from '../../testing/cluster.js';
import { createAckTable, startWriter } from '../../testing/writer.js';

const { values } = parseArgs({
  options: {
    trials: { type: 'string', default: '3' },
    kill: { type: 'string', default: 'leader' },
    heartbeat: { type: 'string', default: '50' },
    election: { type: 'string', default: '300' },
  },
});
const trials = Number(values.trials);
const kill = values.kill === 'follower' ? 'follower' : 'leader';
const heartbeat = Number(values.heartbeat);
const election = Number(values.election);

const cluster = 'etcdloss';
const keys = clusterKeys(cluster);
const stateDir = mkdtempSync(join(tmpdir(), 'pgha-bench-etcd-loss-'));
chmodSync(stateDir, 0o711); // postgres runs as its own OS user and must enter it
const base = await findFreePortRange(9);
// The three-member etcd of the local runtime (also what `pgha check` uses for its
// etcd-member-loss fault): members etcd-0..2, client ports base+3, +5, +7.
const etcdCluster = await startLocalEtcdCluster({
  dir: stateDir,
  size: 3,
  basePort: base + 3,
  heartbeatIntervalMillis: heartbeat,
  electionTimeoutMillis: election,
});
const names = etcdCluster.members.map((m) => m.name);
const endpoints = etcdCluster.endpoints;
const etcdPids = new Set(etcdCluster.members.map((m) => m.pid()!));
const statuses = () => etcdCluster.statuses();

const results: Array<{ longest: number; electedIn: number }> = [];
let exitCode = 0;
const c = await startLocalCluster({
  cluster,
  stateDir: join(stateDir, 'cluster'),
  basePort: base,
  members: 3,
  controllers: 1,
  etcd: endpoints,
  log: createLogger('bench', () => undefined),
  readyTimeoutMillis: 120_000,
});
const etcd = createEtcdClient({ endpoints });
try {
  const leader = async () => {
    const text = await etcd.get(keys.leader).string();
    return text === null ? null : LeaderRecord.decode(text);
  };
  const first = await waitFor(
    'a writable leader',
    async () => ((await leader())?.writable ? leader() : undefined),
    60_000,
  );
  await createAckTable(c.connectionString(first!.member));
  for (let trial = 1; trial <= trials; trial++) {
    const w = startWriter({
      members: c.members.map((m) => ({ name: m.name, connectionString: c.connectionString(m.name) })),
      follow: { etcd, cluster },
      firstId: trial * 1_000_000_000,
    });
    await waitFor('writes flowing', () => w.acks.length > 50, 10_000, 20);
    const before = await statuses();
    const raftLeader = before.findIndex((s) => s !== null && s.id === s.leader);
    const k = kill === 'leader' ? raftLeader : [0, 1, 2].find((j) => j !== raftLeader)!;
    const faultAt = Date.now();
    etcdCluster.kill(k);
    const electedAt = await waitFor(
      'the surviving members to agree on a leader',
      async () => {
        const now = (await statuses()).filter((_, j) => j !== k);
        const ok = now.every(
          (s) => s !== null && s.leader !== '0' && s.leader !== before[k]!.id && s.leader === now[0]!.leader,
        );
        return ok ? Date.now() : undefined;
      },
      15_000,
      20,
    );
    const windowEnd = Math.max(electedAt, faultAt) + 2 * defaultConfig.leaseTtlMillis;
    await waitFor('the end of the window', () => Date.now() >= windowEnd, 30_000, 20);
    await w.stop();
    const inWindow = [
      w.acks.filter((a) => a.at < faultAt).at(-1)!,
      ...w.acks.filter((a) => a.at >= faultAt && a.at <= windowEnd),
    ];
    let longest = windowEnd - inWindow.at(-1)!.at;
    for (let j = 1; j < inWindow.length; j++) longest = Math.max(longest, inWindow[j]!.at - inWindow[j - 1]!.at);
    results.push({ longest, electedIn: electedAt - faultAt });
    console.log(
      `trial ${trial}: killed ${names[k]} (${kill}); etcd elected in ${electedAt - faultAt} ms; ${inWindow.length - 1} writes in the ${windowEnd - faultAt} ms window; longest write gap ${longest} ms`,
    );
    await etcdCluster.restart(k);
    etcdPids.add(etcdCluster.members[k]!.pid()!);
    await waitFor(
      'all three members to agree on a leader',
      async () => {
        const now = await statuses();
        return now.every((s) => s !== null && s.leader !== '0' && s.leader === now[0]!.leader);
      },
      20_000,
      100,
    );
  }
  const gaps = results.map((r) => r.longest).sort((a, b) => a - b);
  console.log(
    `etcd ${kill} loss (heartbeat ${heartbeat} ms, election ${election} ms), ${results.length} trials: longest write gap min ${gaps[0]} ms, median ${gaps[Math.floor(gaps.length / 2)]} ms, max ${gaps.at(-1)} ms`,
  );
} catch (error) {
  console.error(`failed: ${(error as Error).message}`);
  exitCode = 1;
} finally {
  etcd.close();
  await c.stop().catch(() => undefined);
  await etcdCluster.stop();
  for (const pid of alive([...etcdPids])) process.kill(pid, 'SIGKILL');
  rmSync(stateDir, { recursive: true, force: true });
}
process.exit(exitCode);

// bench/client: @pgha/client's Pool against plain pg.Pool on the same server in the
// same run, then reroute timings. See README.md for the command and measured numbers.
//
//   pnpm run build && npx tsx bench/client/run.ts [--duration-ms 15000] [--slice-ms 100] [--warm-ms 1000]
//     [--cells select1:1,...] [--switches 20] [--promotion-ms 40] [--pools 1000] [--json FILE]
//
// 1. throughput and p50/p99 latency of `SELECT 1` and a small insert at 1, 10 and 50
//    concurrent callers: pgha / pg ratios, and a second plain pg.Pool as an A/A
//    control (short slices rotate between the three pools, so the noise of a shared
//    machine falls on all alike and the control shows how large it is);
// 2. reroute: time from the new primary's leader record turning writable to the first
//    successful query through a busy pool, over --switches switches, with the
//    promotion phase of a real failover (record installed not writable first) and
//    without it;
// 3. --pools pools in one process (sharing one watcher) rerouting on one change.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
// The built package, as applications get it (run `pnpm run build` first).
import { Pool, watchCluster } from '../../packages/client/dist/index.js';
import { Etcd3 } from '../../packages/client/node_modules/etcd3/lib/index.js';
import { startTestEtcd, type TestEtcd, uniqueKeyRoot } from '../../testing/etcd.js';
import { startTestCluster, type TestCluster, type TestServer, testPassword, testUser } from '../../testing/postgres.js';
import { compare, type Interval, Series } from './stats.js';

const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${line}\n`);

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

type Workload = 'select1' | 'insert';
const statements: Record<Workload, (caller: number) => [string, unknown[]]> = {
  select1: () => ['SELECT 1', []],
  insert: (caller) => ['INSERT INTO bench_writes (caller, payload) VALUES ($1, $2)', [caller, 'x'.repeat(64)]],
};

async function warm(pool: pg.Pool, workload: Workload, callers: number, millis: number): Promise<void> {
  // Open every connection, prepare the server's caches and let V8 optimize the code.
  await slice(pool, workload, callers, millis, new Series());
}

/** Runs `callers` closed-loop callers against `pool` for `millis`, as one round of `into`. */
async function slice(pool: pg.Pool, workload: Workload, callers: number, millis: number, into: Series) {
  into.begin();
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const deadline = started + millis;
  await Promise.all(
    Array.from({ length: callers }, async (_, caller) => {
      const [text, values] = statements[workload](caller);
      while (performance.now() < deadline) {
        const t = performance.now();
        await pool.query(text, values);
        into.record(performance.now() - t);
      }
    }),
  );
  const elapsed = performance.now() - started;
  const cpu = process.cpuUsage(cpuBefore);
  into.end(elapsed, cpu.user + cpu.system);
}

function pct(value: number): string {
  return `${value >= 0 ? '+' : ''}${value.toFixed(1)} %`;
}

/** A 95 % interval as printed: [low, high]. */
function range(interval: Interval, digits: number, unit = ''): string {
  const show = (v: number) => (unit === '%' && v >= 0 ? '+' : '') + v.toFixed(digits);
  return `[${show(interval[0])}, ${show(interval[1])}${unit ? ` ${unit}` : ''}]`;
}

async function publish(admin: Etcd3, key: string, server: TestServer, term: number, writable = true): Promise<void> {
  await admin.put(key).value(
    JSON.stringify({
      v: 1,
      term,
      member: `bench-${server.name}`,
      host: server.host,
      port: server.port,
      timeline: 1,
      since: new Date().toISOString(),
      writable,
    }),
  );
}

/** `pid` and every process below it (postgres forks its auxiliary processes). */
function processTree(pid: number): number[] {
  const children: number[] = [];
  for (const task of safeReaddir(`/proc/${pid}/task`)) {
    const text = safeRead(`/proc/${pid}/task/${task}/children`);
    for (const child of text.split(/\s+/).filter(Boolean)) children.push(...processTree(Number(child)));
  }
  return [pid, ...children];
}

function safeReaddir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/**
 * How steady this machine is: a fixed CPU loop on the client's CPU, counted in 100 ms
 * windows for `millis`. Its relative standard deviation between windows is the noise
 * floor every comparison below is measured against.
 */
function machineSteadiness(millis: number): { windows: number; relativeSdPercent: number; minOfMedianPercent: number } {
  const counts: number[] = [];
  const end = performance.now() + millis;
  let sink = 0;
  while (performance.now() < end) {
    const windowEnd = performance.now() + 100;
    let n = 0;
    while (performance.now() < windowEnd) {
      for (let i = 0; i < 1000; i++) sink += Math.sqrt(i + n);
      n += 1;
    }
    counts.push(n);
  }
  if (sink < 0) log('unreachable');
  const mean = counts.reduce((a, b) => a + b, 0) / counts.length;
  const sd = Math.sqrt(counts.reduce((a, b) => a + (b - mean) ** 2, 0) / counts.length);
  const sorted = [...counts].sort((a, b) => a - b);
  return {
    windows: counts.length,
    relativeSdPercent: (sd / mean) * 100,
    minOfMedianPercent: (sorted[0]! / sorted[Math.floor(sorted.length / 2)]!) * 100,
  };
}

/** Sets the CPU affinity of `pids` (every thread) to `cpuList` (taskset syntax). */
function pin(pids: readonly number[], cpuList: string): void {
  for (const pid of pids) execFileSync('taskset', ['-a', '-p', '-c', cpuList, String(pid)], { stdio: 'ignore' });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'duration-ms': { type: 'string', default: '15000' },
      'slice-ms': { type: 'string', default: '100' },
      'warm-ms': { type: 'string', default: '1000' },
      switches: { type: 'string', default: '20' },
      'promotion-ms': { type: 'string', default: '40' },
      pools: { type: 'string', default: '1000' },
      cells: { type: 'string', default: 'select1:1,select1:10,select1:50,insert:1,insert:10,insert:50' },
      json: { type: 'string' },
      pin: { type: 'boolean', default: true },
    },
    allowNegative: true,
  });
  const cells = values.cells.split(',').map((cell) => {
    const [workload, callers] = cell.split(':');
    if ((workload !== 'select1' && workload !== 'insert') || !(Number(callers) > 0)) {
      throw new Error(`--cells: "${cell}" is not WORKLOAD:CALLERS with WORKLOAD select1 or insert`);
    }
    return { workload: workload as Workload, callers: Number(callers) };
  });
  const durationMillis = Number(values['duration-ms']);
  const sliceMillis = Number(values['slice-ms']);
  const warmMillis = Number(values['warm-ms']);
  const switches = Number(values.switches);
  const promotionMillis = Number(values['promotion-ms']);
  const poolCount = Number(values.pools);
  const results: Record<string, unknown> = {
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
  };

  let etcd: TestEtcd | undefined;
  const clusters: TestCluster[] = [];
  const cleanup = async () => {
    await Promise.all(clusters.map((c) => c.stop().catch(() => undefined)));
    await etcd?.stop().catch(() => undefined);
  };
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    log('starting etcd and two independent primaries (trust auth, max_connections 1200)');
    etcd = await startTestEtcd();
    const settings = { max_connections: 1200, shared_buffers: "'128MB'" };
    clusters.push(await startTestCluster({ standbys: 0, settings, auth: 'trust' }));
    clusters.push(await startTestCluster({ standbys: 0, settings, auth: 'trust' }));
    const [a, b] = [clusters[0]!.primary, clusters[1]!.primary];
    // With --pin (default) the client (this process) runs on CPU 0 and the servers
    // (postgres, forking its backends from the pinned postmaster, and etcd) on the
    // others, as an application and its database on separate machines would. Unpinned,
    // client and server compete for both cores, and the A/A control strayed by up to
    // 15 % (README.md).
    const cpuCount = cpus().length;
    if (values.pin && cpuCount >= 2) {
      const serverCpus = cpuCount === 2 ? '1' : `1-${cpuCount - 1}`;
      pin([process.pid], '0');
      pin([...processTree(a.pid!), ...processTree(b.pid!), ...processTree(etcd.pid)], serverCpus);
      log(`pinned: client on CPU 0, postgres and etcd on CPU ${serverCpus}`);
    }
    results.pinned = Boolean(values.pin && cpuCount >= 2);
    const steadiness = machineSteadiness(3000);
    results.machineSteadiness = steadiness;
    log(
      `machine steadiness: a fixed CPU loop on the client's CPU varies ${steadiness.relativeSdPercent.toFixed(1)} % (SD) between 100 ms windows; slowest window ${steadiness.minOfMedianPercent.toFixed(0)} % of the median`,
    );
    for (const server of [a, b]) {
      await server.query('CREATE TABLE bench_writes (id bigserial PRIMARY KEY, caller int, payload text)');
    }
    const admin = new Etcd3({ hosts: etcd.endpoint });
    const keyRoot = uniqueKeyRoot();
    const leaderKey = `${keyRoot}bench/leader`;
    let term = 1;
    await publish(admin, leaderKey, a, term);
    const discovery = { etcd: { endpoints: etcd.endpoint }, cluster: 'bench', keyRoot };
    const credentials = { user: testUser, password: testPassword, database: 'postgres' };

    // 1. Throughput and latency against plain pg.Pool.
    const table: Array<Record<string, unknown>> = [];
    for (const { workload, callers } of cells) {
      {
        // The pools stay open; short slices rotate between them (the order reversed
        // every other round), so slow drifts of a shared VM fall on all alike. `control`
        // is a second plain pg.Pool: pg vs control (A/A) shows the noise of the method.
        const pools = {
          pg: new pg.Pool({ ...credentials, host: a.host, port: a.port, max: callers }),
          pgha: new Pool({ ...credentials, ...discovery, max: callers }),
          control: new pg.Pool({ ...credentials, host: a.host, port: a.port, max: callers }),
        };
        const kinds = ['pg', 'pgha', 'control'] as const;
        const series = { pg: new Series(), pgha: new Series(), control: new Series() };
        for (const kind of kinds) await warm(pools[kind], workload, callers, warmMillis);
        const rounds = Math.max(2, Math.round(durationMillis / sliceMillis));
        for (let i = 0; i < rounds; i++) {
          const rotated = [...kinds.slice(i % 3), ...kinds.slice(0, i % 3)];
          const order = Math.floor(i / 3) % 2 === 0 ? rotated : rotated.reverse();
          for (const kind of order) await slice(pools[kind], workload, callers, sliceMillis, series[kind]);
        }
        for (const kind of kinds) await pools[kind].end();
        const stats = { pg: series.pg.summary(), pgha: series.pgha.summary(), control: series.control.summary() };
        const [pghaCi, controlCi] = compare(series.pg, [series.pgha, series.control]);
        const row = {
          workload,
          callers,
          pgOpsPerSecond: Math.round(stats.pg.opsPerSecond),
          pghaOpsPerSecond: Math.round(stats.pgha.opsPerSecond),
          throughputRatio: stats.pgha.opsPerSecond / stats.pg.opsPerSecond,
          throughputRatioCi: pghaCi!.ratio,
          pgP50Millis: stats.pg.p50Millis,
          pghaP50Millis: stats.pgha.p50Millis,
          pgP99Millis: stats.pg.p99Millis,
          pghaP99Millis: stats.pgha.p99Millis,
          p99DeltaPercent: (stats.pgha.p99Millis / stats.pg.p99Millis - 1) * 100,
          p99DeltaPercentCi: pghaCi!.p99DeltaPercent,
          pgCpuMicrosPerOp: stats.pg.cpuMicrosPerOp,
          pghaCpuMicrosPerOp: stats.pgha.cpuMicrosPerOp,
          controlThroughputRatio: stats.control.opsPerSecond / stats.pg.opsPerSecond,
          controlThroughputRatioCi: controlCi!.ratio,
          controlCpuMicrosPerOp: stats.control.cpuMicrosPerOp,
          controlP99DeltaPercent: (stats.control.p99Millis / stats.pg.p99Millis - 1) * 100,
          controlP99DeltaPercentCi: controlCi!.p99DeltaPercent,
        };
        table.push(row);
        for (const kind of kinds) {
          const st = stats[kind];
          log(
            `  ${kind.padEnd(7)} p50 ${st.p50Millis.toFixed(3)} p90 ${st.p90Millis.toFixed(3)} p99 ${st.p99Millis.toFixed(3)} p99.9 ${st.p999Millis.toFixed(3)} ms, ${st.ops} ops`,
          );
        }
        log(
          `${workload.padEnd(7)} ${String(callers).padStart(2)} callers: pg ${row.pgOpsPerSecond} ops/s, pgha ${row.pghaOpsPerSecond} ops/s | ratio ${row.throughputRatio.toFixed(3)} ${range(row.throughputRatioCi, 3)}, p99 ${pct(row.p99DeltaPercent)} ${range(row.p99DeltaPercentCi, 1, '%')} | A/A ratio ${row.controlThroughputRatio.toFixed(3)} ${range(row.controlThroughputRatioCi, 3)}, p99 ${pct(row.controlP99DeltaPercent)} ${range(row.controlP99DeltaPercentCi, 1, '%')} | client CPU/op pg ${row.pgCpuMicrosPerOp.toFixed(1)}, pgha ${row.pghaCpuMicrosPerOp.toFixed(1)}, A/A ${row.controlCpuMicrosPerOp.toFixed(1)} µs`,
        );
      }
    }
    results.throughput = table;

    // 2. Reroute of a busy pool: leader record writable -> first success on the new primary.
    //    `promotion`: as in a real failover or switchover, the new leader's record is
    //    first installed not writable, and turned writable --promotion-ms later (the
    //    agent's promotion; 37-71 ms measured with `pgha switchover`). `direct`: the
    //    record names a new server already writable (no promotion phase to use).
    const reroutes: Record<string, unknown> = {};
    const modes = switches <= 0 ? [] : promotionMillis > 0 ? (['promotion', 'direct'] as const) : (['direct'] as const);
    for (const mode of modes) {
      const pool = new Pool({ ...credentials, ...discovery, max: 10, drainTimeoutMillis: 1000 });
      pool.on('error', () => undefined);
      let current = a;
      const firstSuccess = new Map<number, number>(); // port -> time of the first success since armed
      let armedPort = -1;
      let failures = 0;
      let running = true;
      const callers = Array.from({ length: 10 }, async () => {
        while (running) {
          try {
            const { rows } = await pool.query('SELECT inet_server_port() AS port');
            const port = rows[0].port as number;
            if (port === armedPort && !firstSuccess.has(port)) firstSuccess.set(port, performance.now());
          } catch {
            failures += 1;
          }
        }
      });
      await new Promise((r) => setTimeout(r, 300));
      const samples: number[] = [];
      const putSamples: number[] = [];
      const eventSamples: number[] = [];
      let eventAt = 0;
      pool.on('primary-changed', () => {
        eventAt = performance.now();
      });
      for (let i = 0; i < switches; i++) {
        const next = current === a ? b : a;
        firstSuccess.clear();
        armedPort = next.port;
        term += 1;
        if (mode === 'promotion') {
          await publish(admin, leaderKey, next, term, false);
          await new Promise((r) => setTimeout(r, promotionMillis));
          if (firstSuccess.has(next.port))
            throw new Error(`switch ${i}: a query reached ${next.port} before it was writable`);
        }
        const t0 = performance.now();
        eventAt = 0;
        await publish(admin, leaderKey, next, term);
        putSamples.push(performance.now() - t0);
        const deadline = Date.now() + 10_000;
        while (!firstSuccess.has(next.port) && Date.now() < deadline) await new Promise((r) => setImmediate(r));
        if (!firstSuccess.has(next.port)) throw new Error(`switch ${i}: no success on ${next.port} within 10 s`);
        samples.push(firstSuccess.get(next.port)! - t0);
        eventSamples.push(eventAt - t0);
        current = next;
        await new Promise((r) => setTimeout(r, 200));
      }
      running = false;
      await Promise.all(callers);
      await pool.end();
      const raw = samples.map((total, i) => ({ put: putSamples[i], event: eventSamples[i], total }));
      samples.sort((x, y) => x - y);
      putSamples.sort((x, y) => x - y);
      eventSamples.sort((x, y) => x - y);
      reroutes[mode] = {
        switches,
        promotionMillis: mode === 'promotion' ? promotionMillis : 0,
        etcdPutP50Millis: percentile(putSamples, 50),
        etcdPutP99Millis: percentile(putSamples, 99),
        watchEventP50Millis: percentile(eventSamples, 50),
        watchEventP99Millis: percentile(eventSamples, 99),
        p50Millis: percentile(samples, 50),
        p99Millis: percentile(samples, 99),
        maxMillis: samples[samples.length - 1],
        failedQueries: failures,
        raw,
      };
      log(
        `reroute, ${mode === 'promotion' ? `${promotionMillis} ms promotion` : 'direct'} (busy pool, 10 callers, ${switches} switches): p50 ${percentile(samples, 50).toFixed(1)} ms, p99 ${percentile(samples, 99).toFixed(1)} ms, max ${samples[samples.length - 1]!.toFixed(1)} ms, failed queries ${failures} (etcd put p50 ${percentile(putSamples, 50).toFixed(1)} / p99 ${percentile(putSamples, 99).toFixed(1)} ms, watch event p50 ${percentile(eventSamples, 50).toFixed(1)} / p99 ${percentile(eventSamples, 99).toFixed(1)} ms after the put began)`,
      );
    }
    results.reroute = reroutes;

    // 3. Many pools in one process on one change.
    if (poolCount > 0) {
      const watcher = watchCluster(discovery);
      await watcher.ready;
      const pools = Array.from(
        { length: poolCount },
        () => new Pool({ ...credentials, discovery: watcher, max: 1, idleTimeoutMillis: 0 }),
      );
      for (const p of pools) p.on('error', () => undefined);
      const from = watcher.primary!.port === a.port ? a : b;
      const to = from === a ? b : a;
      log(`${poolCount} pools: opening one connection each to the current primary`);
      for (let i = 0; i < pools.length; i += 50) {
        await Promise.all(pools.slice(i, i + 50).map((p) => p.query('SELECT 1')));
      }
      const routed: number[] = [];
      const queried: number[] = [];
      let t0 = 0;
      const done = Promise.all(
        pools.map(
          (p) =>
            new Promise<void>((resolve, reject) => {
              p.once('primary-changed', () => {
                routed.push(performance.now() - t0);
                // Queried on the next turn, so one pool's connection setup is not counted in the next one's routing.
                setImmediate(() =>
                  p.query('SELECT inet_server_port() AS port').then((r: pg.QueryResult) => {
                    if (r.rows[0].port !== to.port) reject(new Error('query went to the old primary'));
                    queried.push(performance.now() - t0);
                    resolve();
                  }, reject),
                );
              });
            }),
        ),
      );
      term += 1;
      t0 = performance.now();
      await publish(admin, leaderKey, to, term);
      await done;
      routed.sort((x, y) => x - y);
      queried.sort((x, y) => x - y);
      results.manyPools = {
        pools: poolCount,
        routedP50Millis: percentile(routed, 50),
        routedP99Millis: percentile(routed, 99),
        firstQueryP50Millis: percentile(queried, 50),
        firstQueryP99Millis: percentile(queried, 99),
      };
      log(
        `${poolCount} pools, one change: route switched p50 ${percentile(routed, 50).toFixed(1)} / p99 ${percentile(routed, 99).toFixed(1)} ms; first query on the new primary (opens a connection) p50 ${percentile(queried, 50).toFixed(1)} / p99 ${percentile(queried, 99).toFixed(1)} ms`,
      );
      await Promise.all(pools.map((p) => p.end()));
      await watcher.close();
    }
    admin.close();
    process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    if (values.json) writeFileSync(values.json, `${JSON.stringify(results, null, 2)}\n`);
  } finally {
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);

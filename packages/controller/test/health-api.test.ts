// The agent's health API on a real local cluster (real etcd, real postgres): the
// endpoints probes and load balancers use answer 200 on exactly the members they
// should, before and after a switchover, and the address is published for
// `pgha status`. The agents' /metrics (and the controller's) are scraped before and
// after the switchover.
//
// The cluster runs with TLS on every member's PostgreSQL and agent API (the local
// runtime's certificates, as `pgha up --secure` makes them): every request here goes
// over HTTPS verified against the cluster's CA, every SQL connection with
// sslmode=verify-full, and the switchover's rewind and re-pointing run over TLS.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { clusterKeys, MemberRecord } from '@pgha/core';
import { Etcd3 } from 'etcd3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { findFreePortRange, waitFor } from '../../../testing/cluster.js';
import { startTestEtcd, type TestEtcd } from '../../../testing/etcd.js';
import { httpGet } from '../../../testing/http-get.js';
import { type Exposition, scrape, scrapeWithCa } from '../../../testing/prometheus-text.js';
import { makeTestStateDir, removeTestStateDir } from '../../../testing/state-dir.js';
import type { HealthBody } from '../src/decide/health.js';
import { createLogger } from '../src/log.js';
import { cliPath, type LocalCluster, startLocalCluster } from '../src/runtime/local/local-cluster.js';

const cluster = 'health';
const keys = clusterKeys(cluster);
const run = promisify(execFile);
let stateDir: string;
let testEtcd: TestEtcd;
let etcd: Etcd3;
let c: LocalCluster;
/** The cluster's CA (PEM): the members' API and PostgreSQL certificates chain to it. */
let ca: string;

beforeAll(async () => {
  stateDir = makeTestStateDir('pgha-health-');
  testEtcd = await startTestEtcd();
  etcd = new Etcd3({ hosts: testEtcd.endpoint });
  const basePort = await findFreePortRange(3);
  let apiBase = await findFreePortRange(3);
  while (Math.abs(apiBase - basePort) < 3) apiBase = await findFreePortRange(3);
  let metricsBase = await findFreePortRange(1);
  while ([basePort, apiBase].some((b) => metricsBase >= b && metricsBase < b + 3))
    metricsBase = await findFreePortRange(1);
  c = await startLocalCluster({
    cluster,
    stateDir,
    members: 3,
    basePort,
    apiBasePort: apiBase,
    metricsBasePort: metricsBase,
    etcd: testEtcd.endpoint,
    log: createLogger('test', () => undefined),
    readyTimeoutMillis: 90_000,
    memberTls: true,
  });
  ca = readFileSync(c.caFile!, 'utf8');
}, 150_000);

afterAll(async () => {
  await c?.stop();
  etcd?.close();
  await testEtcd?.stop();
  removeTestStateDir(stateDir);
}, 150_000);

interface Answer {
  readonly status: number;
  readonly body: HealthBody & { error?: string };
}

async function get(member: string, path: string, method = 'GET'): Promise<Answer> {
  const m = c.members.find((x) => x.name === member)!;
  const res = await httpGet(`${m.api}${path}`, { method, ca, timeoutMillis: 3000 });
  return { status: res.status, body: JSON.parse(res.text) as Answer['body'] };
}

/** Each member's status for `path`, by name. */
async function statuses(path: string): Promise<Record<string, number>> {
  const answers = await Promise.all(c.members.map(async (m) => [m.name, (await get(m.name, path)).status] as const));
  return Object.fromEntries(answers);
}

/** Waits until every member answers `path` as `expected` says (200 for the names given, 503 for the others). */
function waitForStatuses(path: string, ok: readonly string[], timeoutMillis = 15_000) {
  const expected = Object.fromEntries(c.members.map((m) => [m.name, ok.includes(m.name) ? 200 : 503]));
  return waitFor(
    `${path} to answer ${JSON.stringify(expected)}`,
    async () => {
      const seen = await statuses(path);
      return JSON.stringify(seen) === JSON.stringify(expected) ? seen : false;
    },
    timeoutMillis,
  );
}

/** Each member's /metrics, by name. */
async function agentMetrics(): Promise<Record<string, Exposition>> {
  return Object.fromEntries(
    await Promise.all(c.members.map(async (m) => [m.name, await scrapeWithCa(`${m.api}/metrics`, ca)])),
  );
}

async function sql(member: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: c.connectionString(member), connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

describe('the health API of a running cluster', () => {
  test('/primary answers 200 on exactly the primary and /replica on exactly the streaming replicas', async () => {
    const primary = c.primaryAtStart;
    const replicas = c.members.map((m) => m.name).filter((n) => n !== primary);
    for (const path of ['/primary', '/leader', '/read-write']) await waitForStatuses(path, [primary]);
    for (const path of ['/replica', '/read-only']) await waitForStatuses(path, replicas);
    const all = c.members.map((m) => m.name);
    for (const path of ['/liveness', '/readiness', '/health']) await waitForStatuses(path, all);

    const p = await get(primary, '/primary');
    expect(p.body).toMatchObject({ member: primary, check: 'primary', role: 'primary', leader: primary, reason: null });
    expect(p.body.term).toBeGreaterThanOrEqual(1);
    expect(p.body.timeline).toBeGreaterThanOrEqual(1);
    expect(p.body.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    const r = await get(replicas[0]!, '/primary');
    expect(r.body).toMatchObject({ role: 'replica', leader: primary, reason: `${primary} holds the leader record` });
    expect((await get(primary, '/replica')).body.reason).toBe('postgres is out of recovery');

    // /metrics on each role: 200 in the Prometheus text format (scrape() checks both),
    // the role gauge agreeing with the endpoints above; HEAD without a body.
    const metrics = await agentMetrics();
    for (const m of c.members) {
      const role = m.name === primary ? 'primary' : 'replica';
      expect(metrics[m.name]!.value('pgha_role', { role, cluster, member: m.name })).toBe(1);
      expect(metrics[m.name]!.value('pgha_leader')).toBe(m.name === primary ? 1 : 0);
    }
    const head = await httpGet(`${c.members[0]!.api}/metrics`, { method: 'HEAD', ca, timeoutMillis: 3000 });
    expect(head.status).toBe(200);
    expect(head.text).toBe('');
  });

  test('answers 404 for an unknown path, 405 for a write, 400 for a lag that is not a size', async () => {
    const name = c.members[0]!.name;
    expect((await get(name, '/nope')).status).toBe(404);
    expect((await get(name, '/primary', 'POST')).status).toBe(405);
    const bad = await get(name, '/replica?lag=lots');
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatch(/lag=lots is not a size/);
    // The controller's metrics endpoint serves /metrics only.
    const controller = c.controllerMetrics[0]!;
    expect((await fetch(controller.replace(/\/metrics$/, '/nope'), { signal: AbortSignal.timeout(3000) })).status).toBe(
      404,
    );
    expect((await fetch(controller, { method: 'POST', signal: AbortSignal.timeout(3000) })).status).toBe(405);
  });

  test('publishes each API address in the member record and in `pgha status --json`', async () => {
    const records = Object.values(await etcd.getAll().prefix(keys.membersPrefix).strings()).map((v) =>
      MemberRecord.decode(v),
    );
    expect(Object.fromEntries(records.map((r) => [r.name, r.api]))).toEqual(
      Object.fromEntries(c.members.map((m) => [m.name, m.api])),
    );
    const { stdout } = await run(process.execPath, [
      cliPath(),
      'status',
      '--json',
      '--etcd',
      testEtcd.endpoint,
      '--cluster',
      cluster,
      '--ssl-ca',
      c.caFile!,
    ]);
    const status = JSON.parse(stdout) as {
      members: Array<{ name: string; api: string | null }>;
      urls: { readWrite: string; readOnly: string };
    };
    expect(status.members.map((m) => m.api)).toEqual(c.members.map((m) => m.api));
    for (const m of c.members) expect(m.api).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    // The connection strings ask for verified TLS against the CA given.
    expect(status.urls.readWrite).toContain(`sslmode=verify-full&sslrootcert=${encodeURIComponent(c.caFile!)}`);
  });

  test('the API answers over HTTPS verified against the CA only: plain HTTP and an unknown CA fail', async () => {
    const m = c.members[0]!;
    expect((await httpGet(`${m.api}/liveness`, { ca })).status).toBe(200);
    // The same port spoken to in plain HTTP: the TLS server drops it, no answer.
    await expect(httpGet(`${m.api!.replace(/^https:/, 'http:')}/liveness`)).rejects.toThrow();
    // Without the cluster's CA the certificate is not trusted.
    await expect(httpGet(`${m.api}/liveness`)).rejects.toThrow(/self[- ]signed|unable to (get|verify)/i);
  });

  test('PostgreSQL serves TLS only: replication is encrypted and a connection without TLS is refused', async () => {
    const primary = c.members.find((m) => m.name === c.primaryAtStart)!;
    const client = new pg.Client({ connectionString: c.connectionString(primary.name), connectionTimeoutMillis: 5000 });
    await client.connect();
    try {
      const own = await client.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      expect(own.rows).toEqual([{ ssl: true }]);
      // Each replica streams over TLS (its walsender's connection).
      const replication = await waitFor(
        'both replicas to stream',
        async () => {
          const { rows } = await client.query(
            'SELECT r.application_name AS member, s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) ORDER BY 1',
          );
          return rows.length === 2 ? rows : undefined;
        },
        15_000,
      );
      expect(replication.every((r: { ssl: boolean }) => r.ssl)).toBe(true);
    } finally {
      await client.end();
    }
    const plain = new pg.Client({
      connectionString: c.connectionString(primary.name).replace(/\?.*$/, '?sslmode=disable'),
      connectionTimeoutMillis: 5000,
    });
    await expect(plain.connect()).rejects.toThrow(/no pg_hba\.conf entry .*no encryption/);
  });

  test('?lag=0 fails on a replica whose replay is behind and passes again once it caught up', async () => {
    const primary = c.primaryAtStart;
    const replica = c.members.find((m) => m.name !== primary)!.name;
    await waitFor(
      'the idle replica to be 0 bytes behind',
      async () => (await get(replica, '/replica?lag=0')).status === 200,
      15_000,
    );
    await sql(replica, 'SELECT pg_wal_replay_pause()');
    try {
      await sql(
        primary,
        'CREATE TABLE lag_probe AS SELECT g, repeat($$x$$, 100) AS pad FROM generate_series(1, 2000) g',
      );
      const behind = await waitFor(
        'the paused replica to fail ?lag=0',
        async () => {
          const a = await get(replica, '/replica?lag=0');
          return a.status === 503 ? a : false;
        },
        15_000,
      );
      expect(behind.body.reason).toMatch(/^lag \d+ B exceeds 0 B$/);
      expect(behind.body.lagBytes).toBeGreaterThan(0);
      // Still a streaming replica, and within a looser bound.
      expect((await get(replica, '/replica')).status).toBe(200);
      expect((await get(replica, '/replica?lag=16MB')).status).toBe(200);
    } finally {
      await sql(replica, 'SELECT pg_wal_replay_resume()');
    }
    await waitFor(
      'the resumed replica to pass ?lag=0',
      async () => (await get(replica, '/replica?lag=0')).status === 200,
      15_000,
    );
  });

  test('after a switchover /primary moves to the new primary and the old one answers /replica', async () => {
    const old = c.primaryAtStart;
    const next = c.members.find((m) => m.name !== old)!.name;
    const before = await agentMetrics();
    const [controllerBefore] = await Promise.all(c.controllerMetrics.map(scrape));
    expect(controllerBefore!.value('pgha_controller_active')).toBe(1);
    await run(process.execPath, [
      cliPath(),
      'switchover',
      '--etcd',
      testEtcd.endpoint,
      '--cluster',
      cluster,
      '--to',
      next,
      '--timeout-millis',
      '20000',
    ]);
    await waitForStatuses('/primary', [next]);
    await waitForStatuses(
      '/replica',
      c.members.map((m) => m.name).filter((n) => n !== next),
      30_000,
    );
    expect((await get(next, '/primary')).body).toMatchObject({ member: next, role: 'primary', leader: next });
    await waitForStatuses(
      '/liveness',
      c.members.map((m) => m.name),
    );

    // The metrics saw it: the roles swapped, the term moved on, and the controller
    // counted one switchover (and no failover).
    const after = await agentMetrics();
    expect(before[next]!.value('pgha_role', { role: 'replica' })).toBe(1);
    expect(after[next]!.value('pgha_role', { role: 'primary' })).toBe(1);
    expect(after[next]!.value('pgha_leader')).toBe(1);
    expect(after[old]!.value('pgha_role', { role: 'replica' })).toBe(1);
    expect(after[old]!.value('pgha_leader')).toBe(0);
    expect(after[next]!.value('pgha_term')).toBeGreaterThan(before[next]!.value('pgha_term'));
    expect(after[next]!.value('pgha_timeline')).toBeGreaterThan(before[next]!.value('pgha_timeline'));
    const controllerAfter = await waitFor(
      'the controller to count the switchover',
      async () => {
        const m = await scrape(c.controllerMetrics[0]!);
        return m.value('pgha_promotions_total', { reason: 'switchover' }) > 0 ? m : undefined;
      },
      15_000,
    );
    const counted = (reason: string) =>
      controllerAfter.value('pgha_promotions_total', { reason }) -
      controllerBefore!.value('pgha_promotions_total', { reason });
    expect(counted('switchover')).toBe(1);
    expect(counted('failover')).toBe(0);
    expect(controllerAfter.value('pgha_without_primary_seconds')).toBe(0);
  });
});

test('an agent whose health API port is taken exits at once, naming the flag to change', async () => {
  const holder: Server = createServer();
  await new Promise<void>((resolve) => holder.listen({ port: 0, host: '127.0.0.1' }, resolve));
  const port = (holder.address() as { port: number }).port;
  const dir = mkdtempSync(join(tmpdir(), 'pgha-health-busy-'));
  try {
    const failure = await run(
      process.execPath,
      [cliPath(), 'agent', '--name', 'busy-0', '--member-dir', dir, '--port', '5999', '--api-port', String(port)],
      {
        env: { ...process.env, PGHA_SUPERUSER_PASSWORD: 'superuser-0123', PGHA_REPLICATION_PASSWORD: 'replica-0123' },
        timeout: 20_000,
      },
    ).then(
      () => null,
      (error: { code: number; stderr: string }) => error,
    );
    expect(failure).not.toBeNull();
    expect(failure!.code).toBe(2);
    expect(failure!.stderr).toContain(
      `the health API cannot listen on http://127.0.0.1:${port}: the port is already in use`,
    );
    expect(failure!.stderr).toContain('--api-port');
  } finally {
    holder.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

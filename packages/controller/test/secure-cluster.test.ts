// A secure local cluster (`pgha up --secure` through startLocalCluster): etcd with
// TLS and client-certificate authentication, one etcd user per process with the
// least rights it needs. Shows that (a) a Pool with the read-only client certificate
// works and cannot write; (b) a member's certificate cannot write another member's
// record, the config, the target or history; (c) a client without a certificate, or
// with one etcd has no user for, is refused with a clear error; (d) a failover
// completes with the roles as they are (every agent and controller write is
// permitted: no "permission denied" in any log); (f) no password is in a log,
// `pgha status`, etcd or a command line; (g) `pgha operator` with its own etcd
// certificate reads the leader record and runs the cluster's failover controller.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Pool } from '@pgha/client';
import { clusterKeys, LeaderRecord, MemberRecord, PghaError } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { alive, findFreePortRange, postgresProcesses, postmasterPid, waitFor } from '../../../testing/cluster.js';
import { KubeApiServer } from '../../../testing/kube-api/api-server.js';
import { apiCaller, pollUntil, prepareNamespace } from '../../../testing/kube-api/test-client.js';
import { type AuditedText, commandLines, etcdContents, findLeaks, logFiles } from '../../../testing/password-audit.js';
import { makeTestStateDir, removeTestStateDir } from '../../../testing/state-dir.js';
import { assertEtcdReachable, castEtcdError, createEtcdClient, type EtcdConnection } from '../src/adapters/etcd.js';
import { createLogger } from '../src/log.js';
import { cliPath, type LocalCluster, startLocalCluster } from '../src/runtime/local/local-cluster.js';

const run = promisify(execFile);
const _repo = resolve(import.meta.dirname, '../../..');
const cluster = 'sec';
const keys = clusterKeys(cluster);
const members = ['sec-0', 'sec-1'];
let stateDir: string;
let c: LocalCluster;
/** A primary's health probe may take long on a loaded host: nothing here tests its bound. */
const slowHostArgs = ['--health-timeout-millis', '15000'];
/** Clients the tests open, closed after them. */
const clients: Etcd3[] = [];

/** An etcd client as `user` (its client certificate), closed after the file. */
function as(user: string): Etcd3 {
  const client = createEtcdClient(c.tls!.connection(user), 3000);
  clients.push(client);
  return client;
}

function client(connection: EtcdConnection): Etcd3 {
  const etcd = createEtcdClient(connection, 2000);
  clients.push(etcd);
  return etcd;
}

/**
 * The running cluster's state directory and the PIDs of everything it runs (etcd,
 * agents, controllers, postmasters): for tests that inspect the secure cluster's
 * processes, logs and files.
 */
export function secureClusterProcesses(): {
  stateDir: string;
  etcdPid: number | null;
  agentPids: number[];
  controllerPids: number[];
  postgresPids: number[];
} {
  return {
    stateDir,
    etcdPid: c.etcdPid,
    agentPids: alive(c.members.map((m) => m.agentPid())),
    controllerPids: alive(c.controllerPids()),
    postgresPids: c.members.flatMap((m) => {
      const pid = postmasterPid(m.memberDir);
      return pid === null ? [] : postgresProcesses(pid);
    }),
  };
}

async function leader(): Promise<LeaderRecord | null> {
  const text = await as(`${cluster}-client`).get(keys.leader).string();
  return text === null ? null : LeaderRecord.decode(text);
}

/** Waits for a writable leader (other than `not`) with every member running and the replicas streaming. */
/** A writable leader (of a term after `afterTerm`, when given) and every member running on its timeline. */
async function healthy(afterTerm?: number): Promise<LeaderRecord> {
  const etcd = as(`${cluster}-client`);
  return waitFor(
    'a healthy cluster',
    async () => {
      const l = await leader();
      if (l === null || !l.writable || (afterTerm !== undefined && l.term <= afterTerm)) return undefined;
      const all = Object.values(await etcd.getAll().prefix(keys.membersPrefix).strings()).map((v) =>
        MemberRecord.decode(v),
      );
      const ok = members.every((name) => {
        const r = all.find((m) => m.name === name);
        if (r === undefined || r.state !== 'running' || r.timeline !== l.timeline) return false;
        return name === l.member ? r.role === 'primary' : r.role === 'replica' && r.streaming;
      });
      return ok ? l : undefined;
    },
    150_000,
  );
}

/** The error `p` rejects with. */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection, it succeeded');
}

beforeAll(async () => {
  stateDir = makeTestStateDir('pgha-secure-');
  const base = await findFreePortRange(6);
  c = await startLocalCluster({
    cluster,
    stateDir,
    basePort: base,
    etcdPort: base + 2,
    members: members.length,
    secure: true,
    // Nothing here measures fencing or failover times: a long lease keeps a loaded
    // host (TLS handshakes, initdb) from expiring it during bootstrap.
    leaseTtlMillis: 10_000,
    keepaliveIntervalMillis: 1000,
    fencingMarginMillis: 2000,
    memberArgs: () => slowHostArgs,
    log: createLogger('test', () => undefined),
    readyTimeoutMillis: 200_000,
  });
  // Certificates (RSA keys) and a first start over TLS are slow on a loaded host.
}, 300_000);

afterAll(async () => {
  for (const etcd of clients) etcd.close();
  if (c !== undefined) {
    const pids = secureClusterProcesses();
    await c.stop();
    const all = [pids.etcdPid, ...pids.agentPids, ...pids.controllerPids, ...pids.postgresPids];
    await waitFor('every process of the cluster to exit', () => alive(all).length === 0, 30_000);
  }
  removeTestStateDir(stateDir);
});

describe('pgha up --secure', () => {
  test('etcd serves https only; keys are 0600 and the tls directory closed to others', () => {
    expect(c.etcdEndpoint).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const dir = c.tls!.layout.dir;
    expect(statSync(dir).mode & 0o077 & ~0o011).toBe(0); // 0700, or 0711 for postgres's OS user
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.key')))
      expect((statSync(join(dir, file)).mode & 0o777).toString(8), file).toBe('600');
    expect(readdirSync(dir).sort()).toEqual(
      [
        'ca',
        'etcd',
        'root',
        'sec-admin',
        'sec-controller',
        'sec-member-sec-0',
        'sec-member-sec-1',
        'sec-client',
        'postgres-sec-0',
        'postgres-sec-1',
        'api-sec-0',
        'api-sec-1',
      ]
        .flatMap((n) => [`${n}.crt`, `${n}.key`])
        .sort(),
    );
  });

  test('(a) a Pool with the read-only client certificate finds the primary and queries; its certificate cannot write', async () => {
    const files = c.tls!.client(`${cluster}-client`);
    const pool = new Pool({
      etcd: {
        endpoints: c.etcdEndpoint,
        credentials: {
          rootCertificate: readFileSync(c.tls!.layout.ca.cert),
          certChain: readFileSync(files.cert),
          privateKey: readFileSync(files.key),
        },
      },
      cluster,
      user: 'postgres',
      password: c.superuserPassword,
      database: 'postgres',
      // --secure turns PostgreSQL's TLS on too: pg_hba.conf takes TLS connections only.
      ssl: { ca: readFileSync(c.tls!.layout.ca.cert, 'utf8') },
      max: 1,
      // A loaded host: a postgres connection once took more than 5 s here.
      connectionTimeoutMillis: 30_000,
      primaryWaitTimeoutMillis: 30_000,
    });
    try {
      const { rows } = await pool.query<{ port: number }>('select current_setting($1)::int as port', ['port']);
      const l = await leader();
      expect(rows[0]!.port).toBe(c.members.find((m) => m.name === l!.member)!.port);
    } finally {
      await pool.end();
    }
    const error = await rejection(as(`${cluster}-client`).put(keys.leader).value('{}').exec());
    expect(error.message).toMatch(/permission denied/);
    const cast = castEtcdError(error, c.etcdEndpoint, 'writing the leader');
    expect(cast.message).toMatch(/lacks the permission/);
  });

  test("(b) a member's certificate writes its own record, not another member's, the config, the target or history", async () => {
    const m0 = as(`${cluster}-member-sec-0`);
    for (const key of [keys.member('sec-1'), keys.config, keys.target, `${keys.historyPrefix}x`, keys.controller]) {
      const error = await rejection(m0.put(key).value('{}').exec());
      expect(error.message, key).toMatch(/permission denied/);
    }
    // Its own record: written back as it is, on the lease it has (the agent rewrites it anyway).
    const own = await m0.get(keys.member('sec-0')).string();
    expect(own).not.toBeNull();
    await m0.put(keys.member('sec-0')).value(own!).ignoreLease();
    // The controller's certificate cannot write a member's record or the leader either.
    const controller = as(`${cluster}-controller`);
    for (const key of [keys.member('sec-0'), keys.leader, keys.config]) {
      const error = await rejection(controller.put(key).value('{}').exec());
      expect(error.message, key).toMatch(/permission denied/);
    }
  });

  test('(c) a client without a certificate, or with one etcd has no user for, is refused with a clear error', async () => {
    const layout = c.tls!.layout;
    const noCert = await rejection(
      assertEtcdReachable(client({ endpoints: c.etcdEndpoint, tls: { caFile: layout.ca.cert } }), c.etcdEndpoint),
    );
    expect(noCert).toBeInstanceOf(PghaError);
    expect(noCert.message).toMatch(/requires a client certificate signed by its CA; pass --etcd-cert and --etcd-key/);
    const plain = await rejection(
      assertEtcdReachable(client({ endpoints: c.etcdEndpoint.replace('https:', 'http:') }), c.etcdEndpoint),
    );
    expect(plain.message).toMatch(/cannot reach etcd|refused/);
    // etcd's own server certificate is signed by the CA, but its CN ("etcd") is no user.
    const stranger = client({
      endpoints: c.etcdEndpoint,
      tls: { caFile: layout.ca.cert, certFile: layout.etcd.cert, keyFile: layout.etcd.key },
    });
    const denied = await rejection(stranger.get(keys.leader).string());
    expect(castEtcdError(denied, c.etcdEndpoint, 'reading the leader').message).toMatch(/refused reading the leader/);
    // The CLI: without a certificate it says what to pass; with the banner's flags it works.
    const cli = cliPath();
    const refused = await rejection(
      run(
        process.execPath,
        [cli, 'status', '--etcd', c.etcdEndpoint, '--cluster', cluster, '--etcd-ca', layout.ca.cert],
        {
          timeout: 30_000,
        },
      ),
    );
    expect((refused as Error & { stderr: string }).stderr).toMatch(/--etcd-cert/);
    const files = c.tls!.client(`${cluster}-client`);
    const ok = await run(
      process.execPath,
      [
        cli,
        'status',
        '--etcd',
        c.etcdEndpoint,
        '--etcd-ca',
        layout.ca.cert,
        '--etcd-cert',
        files.cert,
        '--etcd-key',
        files.key,
        '--cluster',
        cluster,
        '--json',
      ],
      { timeout: 30_000 },
    );
    expect(JSON.parse(ok.stdout).leader.member).toBe((await leader())!.member);
  });

  test('(d) a failover (kill -9 of the primary agent) completes with the roles as they are', async () => {
    const before = await healthy();
    const agent = c.members.find((m) => m.name === before.member)!.agentPid()!;
    process.kill(agent, 'SIGKILL');
    // The supervisor restarts the agent: it rejoins as a replica of the new primary,
    // or, holding the most WAL, wins the new term itself (a CI run waited 150 s for
    // another member to lead).
    const after = await healthy(before.term);
    expect(after.term).toBeGreaterThan(before.term);
    const history = await as(`${cluster}-client`).get(keys.history(after.term)).string();
    expect(history).not.toBeNull();
    // No process was refused anything on the way (bootstrap, failover, rejoin).
    const logs = join(stateDir, 'logs');
    for (const file of readdirSync(logs).filter((f) => f !== 'etcd.log')) {
      expect(readFileSync(join(logs, file), 'utf8'), file).not.toMatch(/permission denied/i);
    }
  }, 300_000);

  test('(f) no password is in a log, pgha status, etcd (the whole keyspace) or any command line', async () => {
    const state = JSON.parse(readFileSync(join(stateDir, 'cluster.json'), 'utf8'));
    const passwords = { superuser: state.superuserPassword, replication: state.replicationPassword };
    // The audit finds a password where there is one (cluster.json keeps them, mode 0600).
    expect(findLeaks([{ place: 'cluster.json', text: JSON.stringify(state) }], passwords)).toHaveLength(2);
    const texts: AuditedText[] = [];
    const logs = logFiles(stateDir);
    // The agents', controllers' and etcd's logs, and each member's postgres log.
    expect(logs.map((l) => l.place.slice(stateDir.length + 1))).toEqual(
      expect.arrayContaining(['logs/sec-0.log', 'logs/sec-1.log', 'sec-0/postgres.log', 'sec-1/postgres.log']),
    );
    texts.push(...logs);
    const files = c.tls!.client(`${cluster}-client`);
    for (const extra of [[], ['--json']]) {
      const out = await run(
        process.execPath,
        [
          cliPath(),
          'status',
          '--etcd',
          c.etcdEndpoint,
          '--etcd-ca',
          c.tls!.layout.ca.cert,
          '--etcd-cert',
          files.cert,
          '--etcd-key',
          files.key,
          '--ssl-ca',
          c.tls!.layout.ca.cert,
          '--cluster',
          cluster,
          ...extra,
        ],
        { timeout: 30_000 },
      );
      expect(out.stdout).toMatch(/sec-0/);
      texts.push({ place: `pgha status ${extra.join(' ')}`, text: out.stdout + out.stderr });
    }
    const contents = await etcdContents(as('root'));
    expect(contents.some((k) => k.place.startsWith(`etcd ${keys.membersPrefix}`))).toBe(true);
    texts.push(...contents);
    const commands = commandLines();
    // This cluster's agents run (their passwords in the environment, not in argv).
    expect(commands.filter((p) => p.text.includes(stateDir) && / agent .*--name sec-\d/.test(p.text))).toHaveLength(
      members.length,
    );
    texts.push(...commands);
    expect(findLeaks(texts, passwords)).toEqual([]);
  }, 120_000);

  test('(e) a whole-cluster restart comes back secure without the flag (remembered), same certificates and users', async () => {
    const ca = readFileSync(c.tls!.layout.ca.cert, 'utf8');
    const before = await leader();
    for (const etcd of clients.splice(0)) etcd.close();
    await c.stop();
    c = await startLocalCluster({
      stateDir,
      leaseTtlMillis: 10_000,
      keepaliveIntervalMillis: 1000,
      fencingMarginMillis: 2000,
      memberArgs: () => slowHostArgs,
      log: createLogger('test', () => undefined),
      readyTimeoutMillis: 200_000,
    });
    expect(c.etcdEndpoint).toMatch(/^https:/);
    expect(readFileSync(c.tls!.layout.ca.cert, 'utf8')).toBe(ca);
    const after = await healthy();
    expect(after.term).toBeGreaterThanOrEqual(before!.term);
    const error = await rejection(as(`${cluster}-member-sec-1`).put(keys.member('sec-0')).value('{}').exec());
    expect(error.message).toMatch(/permission denied/);
  }, 300_000);

  test("(g) pgha operator reaches the secure etcd with its own certificate (PGHA_ETCD_*): it reads the leader and runs the cluster's failover controller", async () => {
    const l = await healthy();
    const api = await KubeApiServer.start();
    const call = apiCaller(() => api.url);
    const dir = mkdtempSync(join(tmpdir(), 'pgha-secure-operator-'));
    const admin = c.tls!.connection(`${cluster}-admin`).tls!;
    let output = '';
    let operator: ChildProcess | undefined;
    try {
      await prepareNamespace(call, 'db', cluster);
      // As deploy/examples/operator-etcd-tls.patch.yaml sets it: the files through the environment.
      operator = spawn(
        process.execPath,
        [cliPath(), 'operator', '--kubeconfig', api.writeKubeconfig(dir), '--health-port', '0'],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: {
            ...process.env,
            PGHA_ETCD_CA: admin.caFile,
            PGHA_ETCD_CERT: admin.certFile,
            PGHA_ETCD_KEY: admin.keyFile,
          },
        },
      );
      operator.stdout!.on('data', (d) => {
        output += d;
      });
      operator.stderr!.on('data', (d) => {
        output += d;
      });
      await call('POST', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters', {
        apiVersion: 'pgha.dev/v1alpha1',
        kind: 'PgHaCluster',
        metadata: { name: cluster },
        spec: { etcd: { endpoints: [c.etcdEndpoint] } },
      });
      const conditions = async () =>
        ((await call('GET', `/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/${cluster}`)).body.status?.conditions ??
          []) as { type: string; status: string; message: string }[];
      // Its failover controller connected and campaigns (this cluster's own controller holds the key).
      const ready = await pollUntil(
        'FailoverControllerReady True',
        conditions,
        (cs) => cs.some((x) => x.type === 'FailoverControllerReady' && x.status === 'True'),
        { millis: 120_000, intervalMillis: 250, context: () => output },
      );
      expect(ready.find((x) => x.type === 'FailoverControllerReady')!.message).not.toMatch(/denied|certificate/i);
      // The leader record, read over TLS as the operator's user, is in the status.
      const status = await pollUntil(
        `${l.member} as the primary in the status`,
        async () => (await call('GET', `/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/${cluster}`)).body.status,
        (st) => st?.primary === l.member,
        { millis: 60_000, intervalMillis: 250, context: () => output },
      );
      expect(status.term).toBe(l.term);
      expect(output).not.toMatch(/permission denied|certificate required|authentication/i);
    } finally {
      if (operator !== undefined && operator.exitCode === null) {
        const exited = new Promise((r) => operator!.once('exit', r));
        operator.kill('SIGKILL');
        await exited;
      }
      await api.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 240_000);
});

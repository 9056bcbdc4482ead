import { describe, expect, it } from 'vitest';
import { type PgHaClusterObject, parsePgHaCluster } from './pgha-cluster.js';

const cluster = (spec: Record<string, unknown> = {}): PgHaClusterObject => ({
  apiVersion: 'pgha.dev/v1alpha1',
  kind: 'PgHaCluster',
  metadata: { name: 'demo', namespace: 'db', uid: 'uid-1' },
  spec: { etcd: { endpoints: ['http://etcd:2379'] }, ...spec },
});
const problems = (spec: Record<string, unknown>) => {
  const r = parsePgHaCluster(cluster(spec));
  return r.ok ? [] : r.problems;
};

describe('parsePgHaCluster', () => {
  it('applies the defaults of the new fields', () => {
    expect(parsePgHaCluster(cluster())).toMatchObject({
      ok: true,
      spec: {
        storage: { size: '10Gi', pvcRetention: { whenDeleted: 'Retain', whenScaled: 'Retain' } },
        credentialsSecret: 'demo-credentials',
        credentialsSecretGenerated: true,
        postgresParameters: {},
        synchronous: { mode: 'off', count: 1, strict: false },
      },
    });
  });

  it('marks a named credentials Secret as not to be generated, even under the default name', () => {
    for (const name of ['mine', 'demo-credentials'])
      expect(parsePgHaCluster(cluster({ credentialsSecret: name }))).toMatchObject({
        ok: true,
        spec: { credentialsSecret: name, credentialsSecretGenerated: false },
      });
  });

  it('reads storage.pvcRetention and refuses other values', () => {
    expect(
      parsePgHaCluster(cluster({ storage: { pvcRetention: { whenDeleted: 'Delete', whenScaled: 'Delete' } } })),
    ).toMatchObject({ ok: true, spec: { storage: { pvcRetention: { whenDeleted: 'Delete', whenScaled: 'Delete' } } } });
    expect(problems({ storage: { pvcRetention: { whenDeleted: 'delete' } } })).toEqual([
      'spec.storage.pvcRetention.whenDeleted "delete" is not one of Retain, Delete',
    ]);
    expect(problems({ storage: { pvcRetention: 'Retain' } })).toContain('spec.storage.pvcRetention must be an object');
  });

  it('reads postgresParameters, names lowercased', () => {
    expect(
      parsePgHaCluster(cluster({ postgresParameters: { Work_Mem: '64MB', 'auto_explain.log_min_duration': '1s' } })),
    ).toMatchObject({
      ok: true,
      spec: { postgresParameters: { work_mem: '64MB', 'auto_explain.log_min_duration': '1s' } },
    });
  });

  it('refuses parameters pgha owns, names that are not identifiers and values that are not strings', () => {
    for (const name of [
      'port',
      'listen_addresses',
      'hba_file',
      'primary_conninfo',
      'wal_level',
      'hot_standby',
      'max_wal_senders',
      'max_replication_slots',
      'synchronous_standby_names',
      'PORT',
    ])
      expect(problems({ postgresParameters: { [name]: 'x' } })).toEqual([
        `spec.postgresParameters: ${name} is set by pgha and cannot be overridden`,
      ]);
    expect(problems({ postgresParameters: { 'work mem': '1' } })).toEqual([
      'spec.postgresParameters: "work mem" is not a parameter name (an identifier)',
    ]);
    expect(problems({ postgresParameters: { work_mem: 64 } })).toEqual([
      'spec.postgresParameters.work_mem must be a string, not 64',
    ]);
    expect(problems({ postgresParameters: ['work_mem=1'] })).toEqual([
      'spec.postgresParameters must be a map of parameter names to string values',
    ]);
  });

  it('reads synchronous: mode off or quorum, count (default 1) and strict (default false)', () => {
    expect(parsePgHaCluster(cluster({ synchronous: { mode: 'off' } }))).toMatchObject({
      ok: true,
      spec: { synchronous: { mode: 'off', count: 1, strict: false } },
    });
    expect(parsePgHaCluster(cluster({ synchronous: { mode: 'quorum' } }))).toMatchObject({
      ok: true,
      spec: { synchronous: { mode: 'quorum', count: 1, strict: false } },
    });
    expect(
      parsePgHaCluster(cluster({ instances: 5, synchronous: { mode: 'quorum', count: 4, strict: true } })),
    ).toMatchObject({
      ok: true,
      spec: { synchronous: { mode: 'quorum', count: 4, strict: true } },
    });
  });

  it('refuses a synchronous count the standbys cannot reach, and values of the wrong type', () => {
    expect(problems({ synchronous: { mode: 'quorum', count: 3 } })).toEqual([
      'spec.synchronous.count 3 is more than the 2 standbys of 3 instances: lower it to at most 2 or raise spec.instances',
    ]);
    expect(problems({ instances: 1, synchronous: { mode: 'quorum' } })).toEqual([
      'spec.synchronous.mode quorum needs at least 2 instances (a primary and a standby to confirm its commits): raise spec.instances or set mode "off"',
    ]);
    // Off: the count is not checked against the instances (kept for when quorum returns).
    expect(parsePgHaCluster(cluster({ instances: 1, synchronous: { mode: 'off', count: 2 } }))).toMatchObject({
      ok: true,
      spec: { synchronous: { mode: 'off', count: 2 } },
    });
    expect(problems({ synchronous: { mode: 'quorum', count: 0 } })).toEqual([
      'spec.synchronous.count must be a whole number from 1 to 8, not 0',
    ]);
    expect(problems({ synchronous: { mode: 'quorum', count: 1.5 } })).toHaveLength(1);
    expect(problems({ synchronous: { mode: 'quorum', strict: 'yes' } })).toEqual([
      'spec.synchronous.strict must be true or false, not "yes"',
    ]);
    expect(problems({ synchronous: { mode: 'sync' } })).toEqual([
      'spec.synchronous.mode "sync" is not one of off, quorum',
    ]);
    // YAML's bare off is a boolean.
    expect(problems({ synchronous: { mode: false } })).toEqual([
      'spec.synchronous.mode false is not one of off, quorum (a bare off in YAML is a boolean: quote it, "off")',
    ]);
    expect(problems({ synchronous: 'quorum' })).toEqual([
      'spec.synchronous must be an object such as {mode: quorum, count: 1}',
    ]);
  });

  it('reads the etcd, postgres and API Secrets, and refuses names that are not Secret names', () => {
    expect(
      parsePgHaCluster(
        cluster({
          etcd: { endpoints: ['https://etcd:2379'], credentialsSecret: 'etcd-auth', tlsSecret: 'etcd-tls' },
          postgres: { tlsSecret: 'pg-tls' },
          api: { tlsSecret: 'api.tls' },
        }),
      ),
    ).toMatchObject({
      ok: true,
      spec: {
        etcd: { credentialsSecret: 'etcd-auth', tlsSecret: 'etcd-tls' },
        postgres: { tlsSecret: 'pg-tls' },
        api: { tlsSecret: 'api.tls' },
      },
    });
    const none = parsePgHaCluster(cluster());
    expect(none).toMatchObject({ ok: true, spec: { postgres: {}, api: {} } });
    if (none.ok) expect(none.spec.etcd).toEqual({ endpoints: ['http://etcd:2379'], keyRoot: '/pgha/' });
    expect(problems({ etcd: { endpoints: ['http://etcd:2379'], credentialsSecret: '' } })).toEqual([
      'spec.etcd.credentialsSecret must be the name of a Secret in the cluster\'s namespace, not ""',
    ]);
    expect(problems({ postgres: { tlsSecret: 'Bad_Name' }, api: 'tls' })).toEqual([
      'spec.postgres.tlsSecret must be the name of a Secret in the cluster\'s namespace, not "Bad_Name"',
      'spec.api must be an object such as {tlsSecret: my-api-tls}',
    ]);
  });

  it('refuses an etcd TLS Secret with plain http endpoints', () => {
    expect(
      problems({ etcd: { endpoints: ['https://etcd-0:2379', 'http://etcd-1:2379'], tlsSecret: 'etcd-tls' } }),
    ).toEqual([
      "spec.etcd.endpoints: http://etcd-1:2379 is plain http but spec.etcd.tlsSecret is set: use https:// endpoints (etcd's --listen-client-urls with TLS)",
    ]);
  });
});

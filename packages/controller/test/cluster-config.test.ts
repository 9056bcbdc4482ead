// The cluster's settings (the `config` record) against a real etcd: the adapter's
// create-if-absent, guarded update and malformed-record handling, and the built
// `pgha config show|set` CLI run as a child process.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type ClusterKeys, ConfigRecord, clusterKeys, defaultConfig, PghaError } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, type TestEtcd, uniqueKeyRoot } from '../../../testing/etcd.js';
import {
  createClusterConfigIfAbsent,
  effectiveConfig,
  readClusterConfig,
  updateClusterConfig,
} from '../src/adapters/cluster-config.js';
import { createEtcdClient } from '../src/adapters/etcd.js';
import { applyConfigAssignments } from '../src/decide/config-change.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const run = promisify(execFile);

let etcdServer: TestEtcd;
let etcd: Etcd3;

beforeAll(async () => {
  etcdServer = await startTestEtcd();
  etcd = createEtcdClient({ endpoints: etcdServer.endpoint });
});

afterAll(async () => {
  etcd?.close();
  await etcdServer?.stop();
});

function freshKeys(): ClusterKeys {
  return clusterKeys('demo', uniqueKeyRoot());
}

/** The raw key as etcd holds it: value and mod revision (null when absent). */
async function raw(keys: ClusterKeys): Promise<{ value: string; modRevision: string } | null> {
  const kv = (await etcd.get(keys.config).exec()).kvs[0];
  return kv === undefined ? null : { value: kv.value.toString(), modRevision: String(kv.mod_revision) };
}

/** Runs the built CLI; resolves with its exit code and output (never rejects on a non-zero exit). */
async function pgha(keys: ClusterKeys, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const root = keys.prefix.slice(0, -'demo/'.length);
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      [cli, ...args, '--etcd', etcdServer.endpoint, '--cluster', 'demo', '--key-root', root],
      { timeout: 30_000 },
    );
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw error;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('the config record in etcd', () => {
  it('is absent at first; create-if-absent stores it once and then returns what etcd holds', async () => {
    const keys = freshKeys();
    expect(await readClusterConfig(etcd, keys)).toBeNull();
    const mine = { ...defaultConfig, synchronousMode: 'quorum' as const, updatedBy: 'test' };
    const first = await createClusterConfigIfAbsent(etcd, keys, mine);
    expect(first).toMatchObject({ created: true, record: mine });
    const second = await createClusterConfigIfAbsent(etcd, keys, { ...defaultConfig, updatedBy: 'other' });
    expect(second).toEqual({ ...first, created: false });
    expect(await readClusterConfig(etcd, keys)).toEqual({ record: mine, modRevision: first.modRevision });
    expect((await raw(keys))?.modRevision).toBe(first.modRevision);
  });

  it('updates with version + 1 guarded by the mod revision: concurrent updates all land, none is lost', async () => {
    const keys = freshKeys();
    await createClusterConfigIfAbsent(etcd, keys, defaultConfig);
    let calls = 0;
    const updates = await Promise.all(
      [1, 2, 3, 4].map((i) =>
        updateClusterConfig(
          etcd,
          keys,
          (current) => {
            calls++;
            return { ...current, synchronousCount: current.synchronousCount + 1 };
          },
          { base: defaultConfig, updatedBy: `writer ${i}`, now: () => new Date('2026-01-02T03:04:05.000Z') },
        ),
      ),
    );
    const stored = await readClusterConfig(etcd, keys);
    // Each update read the one before it: 1 + 4 increments, versions 2..5.
    expect(stored?.record).toMatchObject({ synchronousCount: 5, version: 5, updatedAt: '2026-01-02T03:04:05.000Z' });
    expect(updates.map((u) => u.record.version).sort()).toEqual([2, 3, 4, 5]);
    for (const u of updates) expect(u.record.version).toBe(u.previous!.version + 1);
    // The losers of a round read again and re-applied their change.
    expect(calls).toBeGreaterThan(4);
  });

  it('never overwrites a change it did not read: a stale guard fails and the retry sees the other writer', async () => {
    const keys = freshKeys();
    const created = await createClusterConfigIfAbsent(etcd, keys, defaultConfig);
    let seen: number[] = [];
    const update = await updateClusterConfig(
      etcd,
      keys,
      (current) => {
        seen.push(current.synchronousCount);
        return { ...current, synchronousStrict: true };
      },
      { base: defaultConfig, updatedBy: 'test' },
    );
    expect(update.previous?.version).toBe(created.record.version);
    // A writer that read before this update and writes with its old mod revision loses.
    const stale = await etcd
      .if(keys.config, 'Mod', '==', created.modRevision)
      .then(etcd.put(keys.config).value(ConfigRecord.encode({ ...created.record, version: 2 })))
      .commit();
    expect(stale.succeeded).toBe(false);
    seen = [];
    await etcd.put(keys.config).value(ConfigRecord.encode({ ...update.record, version: 7, synchronousCount: 4 }));
    const again = await updateClusterConfig(etcd, keys, (c) => ({ ...c, synchronousMode: 'quorum' }), {
      base: defaultConfig,
      updatedBy: 'test',
    });
    expect(seen).toEqual([]);
    expect(again.record).toMatchObject({ version: 8, synchronousCount: 4, synchronousStrict: true });
  });

  it('writes nothing for a change that alters no setting, and nothing when the change throws', async () => {
    const keys = freshKeys();
    const created = await createClusterConfigIfAbsent(etcd, keys, defaultConfig);
    const same = await updateClusterConfig(etcd, keys, (c) => ({ ...c }), { base: defaultConfig, updatedBy: 't' });
    expect(same.written).toBe(false);
    await expect(
      updateClusterConfig(etcd, keys, (c) => applyConfigAssignments(c, ['synchronousCount=0']).next, {
        base: defaultConfig,
        updatedBy: 't',
      }),
    ).rejects.toMatchObject({ code: 'invalid-option' });
    expect((await raw(keys))?.modRevision).toBe(created.modRevision);
  });

  it('creates the record from the caller base when there is none', async () => {
    const keys = freshKeys();
    const base = { ...defaultConfig, leaseTtlMillis: 3000 };
    const update = await updateClusterConfig(etcd, keys, (c) => ({ ...c, synchronousMode: 'quorum' }), {
      base,
      updatedBy: 'test',
    });
    expect(update.previous).toBeNull();
    expect(update.record).toMatchObject({ version: 1, leaseTtlMillis: 3000, synchronousMode: 'quorum' });
  });

  it('names the key and the repair when the record is malformed; replaces it only when asked', async () => {
    const keys = freshKeys();
    await etcd.put(keys.config).value('{"v":1,"version":4,"leaseTtlMillis":"soon"}');
    const error = await readClusterConfig(etcd, keys).catch((e) => e);
    expect(error).toBeInstanceOf(PghaError);
    expect(error.code).toBe('protocol');
    expect(error.message).toContain(`the cluster settings at ${keys.config} cannot be read (config record: malformed`);
    expect(error.message).toContain('pgha config set --replace-malformed KEY=VALUE');
    await expect(
      updateClusterConfig(etcd, keys, (c) => c, { base: defaultConfig, updatedBy: 't' }),
    ).rejects.toMatchObject({ code: 'protocol' });
    const replaced = await updateClusterConfig(etcd, keys, (c) => ({ ...c, synchronousCount: 2 }), {
      base: defaultConfig,
      updatedBy: 't',
      replaceMalformed: true,
    });
    expect(replaced.record).toMatchObject({ version: 5, synchronousCount: 2, leaseTtlMillis: 2000 });
  });

  it('effectiveConfig: the record when there is one, else the flags over the defaults', () => {
    const record = { ...defaultConfig, version: 9, maximumLagOnFailoverBytes: 1 };
    expect(effectiveConfig(record, { maximumLagOnFailoverBytes: 5 })).toBe(record);
    expect(effectiveConfig(null, { maximumLagOnFailoverBytes: 5, leaseTtlMillis: undefined })).toEqual({
      ...defaultConfig,
      maximumLagOnFailoverBytes: 5,
    });
  });
});

describe('pgha config', () => {
  it('show prints the defaults and says nothing is stored yet; --json is a valid record', async () => {
    const keys = freshKeys();
    const shown = await pgha(keys, 'config', 'show', '--json');
    expect(shown.code).toBe(0);
    expect(shown.stderr).toMatch(/^no settings are stored yet for cluster demo \(.*\/demo\/config\)/);
    expect(ConfigRecord.parse(JSON.parse(shown.stdout))).toEqual(defaultConfig);
    expect(await raw(keys)).toBeNull();
  });

  it('set with an invalid value exits non-zero, says why, and leaves the record (value and mod revision) unchanged', async () => {
    const keys = freshKeys();
    await createClusterConfigIfAbsent(etcd, keys, { ...defaultConfig, updatedBy: 'test' });
    const before = await raw(keys);
    const bad = await pgha(keys, 'config', 'set', 'postgresParameters.work_mem=8MB', 'synchronousMode=sometimes');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe(
      'pgha: synchronousMode=sometimes is not a mode: use off or quorum, e.g. synchronousMode=quorum\n',
    );
    expect(bad.stdout).toBe('');
    expect(await raw(keys)).toEqual(before);
  });

  it('set prints each change and bumps the version; show --json round-trips what etcd holds', async () => {
    const keys = freshKeys();
    const set = await pgha(
      keys,
      'config',
      'set',
      'synchronousMode=quorum',
      'maximumLagOnFailoverBytes=1MB',
      'postgresParameters.work_mem=8MB',
    );
    expect(set.code).toBe(0);
    expect(set.stdout).toContain('no settings were stored');
    expect(set.stdout).toMatch(/synchronousMode: off -> quorum +\(live: the primary's agent applies it\)/);
    expect(set.stdout).toMatch(/maximumLagOnFailoverBytes: 16777216 -> 1048576 +\(at the controller's next decision\)/);
    expect(set.stdout).toMatch(/postgresParameters\.work_mem: \(not set\) -> 8MB +\(reloaded/);
    expect(set.stdout).toMatch(/written: version 1\n$/);
    const first = await readClusterConfig(etcd, keys);
    expect(first?.record).toMatchObject({ version: 1, updatedBy: 'pgha config set' });

    const again = await pgha(keys, 'config', 'set', 'postgresParameters.work_mem=', 'synchronousCount=2', '--json');
    expect(again.code).toBe(0);
    const report = JSON.parse(again.stdout);
    expect(report).toMatchObject({
      written: true,
      previousVersion: 1,
      changes: [
        { key: 'postgresParameters.work_mem', from: '8MB', to: null },
        { key: 'synchronousCount', from: '1', to: '2' },
      ],
      record: { version: 2, synchronousCount: 2, postgresParameters: {} },
    });
    const stored = await readClusterConfig(etcd, keys);
    expect(report.modRevision).toBe(stored?.modRevision);

    const shown = await pgha(keys, 'config', 'show', '--json');
    expect(shown.code).toBe(0);
    expect(shown.stderr).toBe('');
    expect(ConfigRecord.parse(JSON.parse(shown.stdout))).toEqual(stored?.record);
    const text = await pgha(keys, 'config', 'show');
    expect(text.stdout).toMatch(/^Settings of cluster demo \(.*\): version 2, written .* by pgha config set\n/);
    expect(text.stdout).toMatch(/ {2}synchronousCount +2 +\(live/);
  });

  it('set refuses a malformed record with the repair, and --replace-malformed replaces it', async () => {
    const keys = freshKeys();
    await etcd.put(keys.config).value('not json');
    const before = await raw(keys);
    const refused = await pgha(keys, 'config', 'set', 'synchronousCount=2');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/the cluster settings at .*\/demo\/config cannot be read .*--replace-malformed/);
    expect(await raw(keys)).toEqual(before);
    const replaced = await pgha(keys, 'config', 'set', '--replace-malformed', 'synchronousCount=2');
    expect(replaced.code).toBe(0);
    expect((await readClusterConfig(etcd, keys))?.record).toMatchObject({ version: 1, synchronousCount: 2 });
  });
});

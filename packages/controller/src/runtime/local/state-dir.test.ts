import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PghaError } from '@pgha/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { OsUser } from '../../adapters/os-user.js';
import {
  assertReachableBy,
  type LocalClusterState,
  randomPassword,
  readState,
  stateFileName,
  writeState,
} from './state-dir.js';

// Literal fixtures built with small override factories.
function state(overrides: Partial<LocalClusterState> = {}): LocalClusterState {
  return {
    v: 1,
    cluster: 'demo',
    members: 3,
    basePort: 5432,
    etcdPort: 2379,
    superuserPassword: 'superuser-password-0123456789',
    replicationPassword: 'replication-password-0123456789',
    createdAt: '2024-05-01T12:00:00.000Z',
    ...overrides,
  };
}

/** Runs `fn` and returns the PghaError it throws. */
function thrown(fn: () => unknown): PghaError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(PghaError);
    return error as PghaError;
  }
  throw new Error('expected a PghaError, nothing was thrown');
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pgha-state-test-'));
});
afterEach(() => {
  chmodSync(dir, 0o700);
  rmSync(dir, { recursive: true, force: true });
});

describe('readState', () => {
  it('treats a directory that does not exist as new', () => {
    expect(readState(join(dir, 'absent'), 'demo')).toBeNull();
  });

  it('treats an empty directory as new', () => {
    expect(readState(dir, 'demo')).toBeNull();
  });

  it('returns the state of its own cluster', () => {
    writeState(dir, state());
    expect(readState(dir, 'demo')).toEqual(state());
  });

  it('returns the state whatever its cluster when none is asked for', () => {
    writeState(dir, state({ cluster: 'other' }));
    expect(readState(dir, undefined)).toEqual(state({ cluster: 'other' }));
  });

  it('refuses a directory that belongs to another cluster and says which flag to pass', () => {
    writeState(dir, state({ cluster: 'other' }));
    const error = thrown(() => readState(dir, 'mine'));
    expect(error.code).toBe('conflict');
    expect(error.message).toBe(
      `state directory ${dir} belongs to cluster "other", not "mine": pass --cluster other or choose another --state-dir`,
    );
  });

  it('refuses a non-empty directory without a state file as not a pgha state directory', () => {
    writeFileSync(join(dir, 'notes.txt'), 'mine\n');
    const error = thrown(() => readState(dir, 'demo'));
    expect(error.code).toBe('conflict');
    expect(error.message).toBe(
      `state directory ${dir} is not empty and has no ${stateFileName}: it is not a pgha state directory; choose another --state-dir`,
    );
  });

  it('refuses a directory holding only a subdirectory', () => {
    mkdirSync(join(dir, 'data'));
    expect(thrown(() => readState(dir, 'demo')).code).toBe('conflict');
  });

  it('takes a directory holding only an empty etcd directory, or a link to one, as new (etcd on a disk of its own)', () => {
    const elsewhere = mkdtempSync(join(tmpdir(), 'pgha-etcd-disk-'));
    try {
      symlinkSync(elsewhere, join(dir, 'etcd'));
      expect(readState(dir, 'demo')).toBeNull();
      writeFileSync(join(elsewhere, 'member'), '');
      expect(thrown(() => readState(dir, 'demo')).code).toBe('conflict');
    } finally {
      rmSync(elsewhere, { recursive: true, force: true });
    }
    rmSync(join(dir, 'etcd'));
    mkdirSync(join(dir, 'etcd'));
    expect(readState(dir, 'demo')).toBeNull();
    mkdirSync(join(dir, 'data'));
    expect(thrown(() => readState(dir, 'demo')).code).toBe('conflict');
  });

  it.each([
    ['not JSON', '{"v":1,'],
    ['an empty file', ''],
    ['a JSON array', '[]'],
    ['an unknown version', JSON.stringify(state({ v: 2 as 1 }))],
    ['a short password', JSON.stringify(state({ superuserPassword: 'short' }))],
    ['a port out of range', JSON.stringify(state({ basePort: 70000 }))],
    ['zero members', JSON.stringify(state({ members: 0 }))],
    ['a missing field', JSON.stringify({ ...state(), cluster: undefined })],
  ])('refuses a corrupt state file holding %s, keeping the cause', (_what, text) => {
    writeFileSync(join(dir, stateFileName), text);
    const error = thrown(() => readState(dir, 'demo'));
    expect(error.code).toBe('conflict');
    expect(error.message).toBe(
      `${join(dir, stateFileName)} is unreadable or corrupt; fix or remove it (the data of the cluster is beside it)`,
    );
    expect(error.cause).toBeDefined();
  });

  it('leaves the files it refuses unchanged', () => {
    writeFileSync(join(dir, stateFileName), '{"v":1,');
    thrown(() => readState(dir, 'demo'));
    expect(readFileSync(join(dir, stateFileName), 'utf8')).toBe('{"v":1,');
  });
});

describe('writeState', () => {
  it('writes a state file only its owner can read, in a directory others can traverse but not list', () => {
    const target = join(dir, 'new', 'state');
    writeState(target, state());
    expect(statSync(join(target, stateFileName)).mode & 0o777).toBe(0o600);
    expect(statSync(target).mode & 0o777).toBe(0o711);
    expect(JSON.parse(readFileSync(join(target, stateFileName), 'utf8'))).toEqual(state());
  });
});

describe('randomPassword', () => {
  it('makes long URL-safe passwords that differ each time', () => {
    const a = randomPassword();
    expect(a).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(randomPassword()).not.toBe(a);
  });
});

describe('assertReachableBy', () => {
  const stranger: OsUser = { name: 'pgha-stranger', uid: 4_000_001, gid: 4_000_001 };

  it('checks nothing when postgres runs as the current user', () => {
    chmodSync(dir, 0o700);
    expect(() => assertReachableBy(join(dir, 'state'), null)).not.toThrow();
  });

  it('refuses a directory below an ancestor another user cannot enter, naming it and its mode', () => {
    const blocked = join(dir, 'blocked');
    mkdirSync(blocked, { mode: 0o700 });
    chmodSync(blocked, 0o700);
    chmodSync(dir, 0o755);
    const error = thrown(() => assertReachableBy(join(blocked, 'state'), stranger));
    expect(error.code).toBe('invalid-option');
    expect(error.message).toContain(`"pgha-stranger", which cannot enter ${blocked} (mode 700)`);
    expect(error.message).toContain(`chmod o+x ${blocked}`);
  });

  it('refuses when any ancestor up the path blocks, even a distant one', () => {
    chmodSync(dir, 0o700);
    const deep = join(dir, 'a', 'b');
    mkdirSync(deep, { recursive: true, mode: 0o755 });
    const error = thrown(() => assertReachableBy(join(deep, 'state'), stranger));
    expect(error.message).toContain(`cannot enter ${dir} (mode 700)`);
  });

  it('accepts ancestors that others may search without listing them', () => {
    const open = join(dir, 'open');
    mkdirSync(open);
    chmodSync(open, 0o711);
    chmodSync(dir, 0o711);
    expect(() => assertReachableBy(join(open, 'state'), stranger)).not.toThrow();
  });

  it('accepts an ancestor the user owns and may search', () => {
    chmodSync(dir, 0o700);
    const { uid } = statSync(dir);
    expect(() => assertReachableBy(join(dir, 'state'), { ...stranger, uid })).not.toThrow();
  });

  it('accepts an ancestor whose group the user is in and may search', () => {
    chmodSync(dir, 0o710);
    const { gid } = statSync(dir);
    expect(() => assertReachableBy(join(dir, 'state'), { ...stranger, gid })).not.toThrow();
  });

  it('refuses an ancestor the user owns but may not search', () => {
    chmodSync(dir, 0o600);
    const { uid } = statSync(dir);
    expect(thrown(() => assertReachableBy(join(dir, 'state'), { ...stranger, uid })).code).toBe('invalid-option');
  });
});

import { clusterKeys } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import {
  decideEtcdAccess,
  decideRoleChanges,
  type EtcdPermission,
  etcdUserNames,
  prefixRangeEnd,
} from './etcd-permissions.js';

const keys = clusterKeys('demo');
const plan = decideEtcdAccess('demo', keys, ['demo-0', 'demo-1']);
const role = (name: string) => plan.roles.find((r) => r.name === name)!;

/** Whether `perms` let a user do `op` on `key` (etcd: any permission whose range holds the key). */
function allows(perms: readonly EtcdPermission[], op: 'read' | 'write', key: string): boolean {
  return perms.some((p) => {
    const inRange = p.rangeEnd === '' ? key === p.key : key >= p.key && key < p.rangeEnd;
    return inRange && (p.type === 'readwrite' || p.type === op);
  });
}

describe('decideEtcdAccess', () => {
  it('names root, the admin, the controller, one user per member and the client, each with its own role', () => {
    expect(plan.users.map((u) => u.name)).toEqual(etcdUserNames('demo', ['demo-0', 'demo-1']));
    expect(plan.users.map((u) => u.name)).toEqual([
      'root',
      'demo-admin',
      'demo-controller',
      'demo-member-demo-0',
      'demo-member-demo-1',
      'demo-client',
    ]);
    expect(plan.users[0]!.roles).toEqual(['root']);
    for (const u of plan.users.slice(1)) expect(u.roles).toEqual([u.name]);
  });

  it('lets every user read the whole cluster prefix and nothing outside it', () => {
    for (const r of plan.roles) {
      expect(allows(r.permissions, 'read', keys.leader), r.name).toBe(true);
      expect(allows(r.permissions, 'read', keys.history(7)), r.name).toBe(true);
      expect(allows(r.permissions, 'read', '/pgha/other/leader'), r.name).toBe(false);
      expect(allows(r.permissions, 'read', '/pgha/demo'), r.name).toBe(false);
      expect(allows(r.permissions, 'write', '/pgha/demo0'), r.name).toBe(false);
    }
  });

  it('lets a member write its own record and the primary keys, never another member, config, target, controller or history', () => {
    const m0 = role('demo-member-demo-0').permissions;
    for (const key of [
      keys.member('demo-0'),
      keys.leader,
      keys.term,
      keys.lastPrimary,
      keys.sync,
      keys.failsafe,
      keys.initialize,
      keys.switchover,
    ])
      expect(allows(m0, 'write', key), key).toBe(true);
    for (const key of [
      keys.member('demo-1'),
      keys.config,
      keys.target,
      keys.controller,
      keys.history(1),
      keys.removed('demo-1'),
    ])
      expect(allows(m0, 'write', key), key).toBe(false);
  });

  it('lets the controller write controller, target, switchover and history only', () => {
    const c = role('demo-controller').permissions;
    for (const key of [keys.controller, keys.target, keys.switchover, keys.history(1), keys.history(123456)])
      expect(allows(c, 'write', key), key).toBe(true);
    for (const key of [keys.leader, keys.term, keys.member('demo-0'), keys.config, keys.lastPrimary, keys.sync])
      expect(allows(c, 'write', key), key).toBe(false);
  });

  it('gives the client no write and the admin every key of the cluster', () => {
    const client = role('demo-client').permissions;
    const admin = role('demo-admin').permissions;
    for (const key of [keys.leader, keys.config, keys.member('demo-0'), keys.switchover]) {
      expect(allows(client, 'write', key), key).toBe(false);
      expect(allows(admin, 'write', key), key).toBe(true);
    }
  });

  it('follows the key root', () => {
    const other = decideEtcdAccess('demo', clusterKeys('demo', '/apps/x/'), ['demo-0']);
    expect(other.roles[0]!.permissions).toEqual([
      { type: 'readwrite', key: '/apps/x/demo/', rangeEnd: '/apps/x/demo0' },
    ]);
  });
});

describe('prefixRangeEnd', () => {
  it("increments the prefix's last character, as etcdctl --prefix does", () => {
    expect(prefixRangeEnd('/pgha/demo/')).toBe('/pgha/demo0');
    expect(prefixRangeEnd('a')).toBe('b');
    expect(prefixRangeEnd('')).toBe('\0');
  });
});

describe('decideRoleChanges', () => {
  const read: EtcdPermission = { type: 'read', key: '/p/', rangeEnd: '/p0' };
  const leader: EtcdPermission = { type: 'readwrite', key: '/p/leader', rangeEnd: '' };

  it('changes nothing when the role holds what is wanted', () => {
    expect(decideRoleChanges([read, leader], [leader, read])).toEqual({ grant: [], revoke: [] });
  });

  it('grants what is missing, grants again a range held with another type, revokes what is not wanted', () => {
    const stale: EtcdPermission = { type: 'readwrite', key: '/p/config', rangeEnd: '' };
    const weaker: EtcdPermission = { ...leader, type: 'read' };
    expect(decideRoleChanges([weaker, stale], [read, leader])).toEqual({ grant: [read, leader], revoke: [stale] });
  });
});

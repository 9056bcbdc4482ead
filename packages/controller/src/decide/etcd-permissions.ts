import type { ClusterKeys } from '@pgha/core';

/**
 * Which etcd users a pgha cluster has, and what each may read and write: least
 * privilege for etcd's role-based access control.
 *
 * | user | may |
 * | --- | --- |
 * | `root` | everything (etcd's own; setting up users and roles) |
 * | `C-admin` | read and write the cluster's prefix (`pgha up`, `config`, `switchover`, `failover`, the operator) |
 * | `C-controller` | read the prefix; write `controller`, `target`, `history/`, `switchover` |
 * | `C-member-<name>` | read the prefix; write `members/<name>`, `leader`, `term`, `last-primary`, `sync`, `failsafe`, `initialize`, `switchover` |
 * | `C-client` | read the prefix (the Pool, `pgha status`) |
 *
 * Each user holds one role of the same name. etcd checks a transaction against the
 * read permission of every compared key and the write permission of every key it
 * puts or deletes, and a lease revoke against the write permission of every key
 * attached to the lease: an agent's lease holds only its member record and the
 * leader record, the controller's only `controller` and `target`.
 */

/** etcd's permission types. */
export const etcdPermissionTypes = ['read', 'write', 'readwrite'] as const;
/** One of {@link etcdPermissionTypes}. */
export type EtcdPermissionType = (typeof etcdPermissionTypes)[number];

/** One permission of a role: a key, or the range `[key, rangeEnd)` (a prefix). */
export interface EtcdPermission {
  readonly type: EtcdPermissionType;
  readonly key: string;
  /** Exclusive end of the range; `''` for the single key. */
  readonly rangeEnd: string;
}

/** A role and its permissions. */
export interface EtcdRole {
  readonly name: string;
  readonly permissions: readonly EtcdPermission[];
}

/** A user and its roles. */
export interface EtcdUser {
  readonly name: string;
  readonly roles: readonly string[];
}

/** Every user and role a cluster needs. */
export interface EtcdAccessPlan {
  readonly users: readonly EtcdUser[];
  /** Roles pgha manages (not `root`, which is etcd's own). */
  readonly roles: readonly EtcdRole[];
}

/** The user names of cluster `cluster`: its admin, controller, one per member, client. */
export function etcdUserNames(cluster: string, members: readonly string[]): string[] {
  return [
    'root',
    etcdUser.admin(cluster),
    etcdUser.controller(cluster),
    ...members.map((m) => etcdUser.member(cluster, m)),
    etcdUser.client(cluster),
  ];
}

/** Builders of the user names (with client-certificate authentication: the certificates' CNs). */
export const etcdUser = {
  admin: (cluster: string) => `${cluster}-admin`,
  controller: (cluster: string) => `${cluster}-controller`,
  member: (cluster: string, member: string) => `${cluster}-member-${member}`,
  client: (cluster: string) => `${cluster}-client`,
} as const;

/**
 * The end of the range of every key starting with `prefix` (etcd's `--prefix`): its
 * last character incremented. pgha's prefixes end in `/`, so the end ends in `0`.
 */
export function prefixRangeEnd(prefix: string): string {
  if (prefix === '') return '\0'; // every key
  return `${prefix.slice(0, -1)}${String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)}`;
}

const one = (type: EtcdPermissionType, key: string): EtcdPermission => ({ type, key, rangeEnd: '' });
const prefix = (type: EtcdPermissionType, key: string): EtcdPermission => ({
  type,
  key,
  rangeEnd: prefixRangeEnd(key),
});

/** The users and roles of a cluster whose keys are `keys`, with members `members`. */
export function decideEtcdAccess(cluster: string, keys: ClusterKeys, members: readonly string[]): EtcdAccessPlan {
  const readAll = prefix('read', keys.prefix);
  const roles: EtcdRole[] = [
    { name: etcdUser.admin(cluster), permissions: [prefix('readwrite', keys.prefix)] },
    {
      name: etcdUser.controller(cluster),
      permissions: [
        readAll,
        one('readwrite', keys.controller),
        one('readwrite', keys.target),
        one('readwrite', keys.switchover),
        prefix('readwrite', keys.historyPrefix),
      ],
    },
    ...members.map(
      (m): EtcdRole => ({
        name: etcdUser.member(cluster, m),
        permissions: [
          readAll,
          one('readwrite', keys.member(m)),
          one('readwrite', keys.leader),
          one('readwrite', keys.term),
          one('readwrite', keys.lastPrimary),
          one('readwrite', keys.sync),
          one('readwrite', keys.failsafe),
          one('readwrite', keys.initialize),
          one('readwrite', keys.switchover),
        ],
      }),
    ),
    { name: etcdUser.client(cluster), permissions: [readAll] },
  ];
  return {
    users: [{ name: 'root', roles: ['root'] }, ...roles.map((r) => ({ name: r.name, roles: [r.name] }))],
    roles,
  };
}

/** What to change in a stored role to make it `wanted`. */
export interface RoleChanges {
  readonly grant: readonly EtcdPermission[];
  /** Permissions the role holds and should not (their key and range; etcd revokes by range). */
  readonly revoke: readonly EtcdPermission[];
}

/**
 * The grants and revocations that turn the permissions a role holds (`current`) into
 * `wanted`: a permission whose range is held with another type is granted again (etcd
 * replaces it), one held and not wanted is revoked, one held as wanted is left alone.
 */
export function decideRoleChanges(current: readonly EtcdPermission[], wanted: readonly EtcdPermission[]): RoleChanges {
  const range = (p: EtcdPermission) => `${p.key}\u0000${p.rangeEnd}`;
  const held = new Map(current.map((p) => [range(p), p]));
  const want = new Map(wanted.map((p) => [range(p), p]));
  return {
    grant: [...want.values()].filter((p) => held.get(range(p))?.type !== p.type),
    revoke: [...held.values()].filter((p) => !want.has(range(p))),
  };
}

import { PghaError } from '@pgha/core';
import { type Etcd3, EtcdRoleExistsError, EtcdUserExistsError, type IPermission } from 'etcd3';
import {
  decideRoleChanges,
  type EtcdAccessPlan,
  type EtcdPermission,
  type EtcdPermissionType,
} from '../decide/etcd-permissions.js';

/** What {@link applyEtcdAccess} did. */
export interface EtcdAccessResult {
  /** Users and roles created now. */
  readonly created: readonly string[];
  /** Roles whose permissions changed, users whose roles or password changed. */
  readonly changed: readonly string[];
  /** Whether authentication is on now (it was asked to be enabled). */
  readonly enabled: boolean;
}

const toType: Record<IPermission['permType'], EtcdPermissionType> = {
  Read: 'read',
  Write: 'write',
  Readwrite: 'readwrite',
};
const fromType: Record<EtcdPermissionType, IPermission['permType']> = {
  read: 'Read',
  write: 'Write',
  readwrite: 'Readwrite',
};

/**
 * Creates or updates the users and roles of `plan` in etcd, idempotently (run it
 * again after adding a member), then enables authentication when `enable` is set.
 * Needs root's rights once authentication is on. A user without a password in
 * `passwords` gets none (etcd's no-password user): it can sign in only with a client
 * certificate whose CN is its name. Passwords are never logged or returned.
 *
 * @throws PghaError `etcd-unavailable` when etcd refuses (permission denied: connect
 *   as root, by its certificate or password).
 */
export async function applyEtcdAccess(
  etcd: Etcd3,
  plan: EtcdAccessPlan,
  options: { readonly passwords?: ReadonlyMap<string, string>; readonly enable: boolean },
): Promise<EtcdAccessResult> {
  const created: string[] = [];
  const changed: string[] = [];
  const passwords = options.passwords ?? new Map<string, string>();
  for (const role of plan.roles) {
    try {
      await etcd.auth.roleAdd({ name: role.name });
      created.push(`role ${role.name}`);
    } catch (error) {
      if (!(error instanceof EtcdRoleExistsError)) throw error;
    }
    const held = (await etcd.auth.roleGet({ role: role.name })).perm.map(
      (p): EtcdPermission => ({
        type: toType[p.permType],
        key: p.key.toString('latin1'),
        rangeEnd: p.range_end.toString('latin1'),
      }),
    );
    const changes = decideRoleChanges(held, role.permissions);
    for (const p of changes.revoke) {
      await etcd.auth.roleRevokePermission({
        role: role.name,
        key: Buffer.from(p.key, 'latin1'),
        range_end: Buffer.from(p.rangeEnd, 'latin1'),
      });
    }
    for (const p of changes.grant) {
      await etcd.auth.roleGrantPermission({
        name: role.name,
        perm: {
          permType: fromType[p.type],
          key: Buffer.from(p.key, 'latin1'),
          range_end: Buffer.from(p.rangeEnd, 'latin1'),
        },
      });
    }
    if (changes.grant.length + changes.revoke.length > 0 && !created.includes(`role ${role.name}`))
      changed.push(`role ${role.name}`);
  }
  for (const user of plan.users) {
    const password = passwords.get(user.name);
    let isNew = false;
    try {
      await etcd.auth.userAdd(
        password === undefined
          ? { name: user.name, password: '', options: { no_password: true } }
          : { name: user.name, password },
      );
      created.push(`user ${user.name}`);
      isNew = true;
    } catch (error) {
      if (!(error instanceof EtcdUserExistsError)) throw error;
    }
    if (!isNew && password !== undefined) {
      await etcd.auth.userChangePassword({ name: user.name, password });
      changed.push(`user ${user.name} (password)`);
    }
    const roles = new Set((await etcd.auth.userGet({ name: user.name })).roles);
    for (const role of user.roles) {
      if (roles.has(role)) continue;
      await etcd.auth.userGrantRole({ user: user.name, role });
      if (!isNew) changed.push(`user ${user.name} (role ${role})`);
    }
  }
  // etcd 3.4 has no call telling whether authentication is on (AuthStatus came with
  // 3.5); enabling it again is a no-op that succeeds.
  if (options.enable) await etcd.auth.authEnable();
  return { created, changed, enabled: options.enable };
}

/** Throws a clear error when etcd refuses the caller (not root). */
export function explainAuthFailure(error: unknown): PghaError | unknown {
  const message = error instanceof Error ? error.message : String(error);
  if (/permission denied|user name not found|authentication failed|not root/i.test(message)) {
    return new PghaError(
      'invalid-option',
      `etcd refused to manage users and roles (${message.split('\n')[0]}): connect as etcd's root user, with its client certificate (--etcd-cert/--etcd-key, CN root) or --etcd-user root and its password`,
      { cause: error },
    );
  }
  return error;
}

import { PghaError } from './errors.js';

/**
 * Cluster and member names are DNS-1123 labels (lower-case letters, digits and
 * dashes, at most 63 characters, starting and ending alphanumeric) so the same
 * name works as a StatefulSet pod name, an etcd key segment and a host name.
 */
const labelPattern = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Whether `name` is usable as a cluster or member name. */
export function isValidName(name: unknown): name is string {
  return typeof name === 'string' && labelPattern.test(name);
}

/**
 * Returns `name` when it is a valid cluster or member name.
 *
 * @throws PghaError `invalid-option` naming the rule and the offending value.
 */
export function assertValidName(kind: 'cluster' | 'member', name: string): string {
  if (!isValidName(name)) {
    throw new PghaError(
      'invalid-option',
      `invalid ${kind} name "${String(name).slice(0, 80)}": use 1-63 lower-case letters, digits and dashes, starting and ending with a letter or digit`,
    );
  }
  return name;
}

/** The member name of ordinal `index` in `cluster`, like a StatefulSet pod: `<cluster>-<index>`. */
export function memberName(cluster: string, index: number): string {
  return `${cluster}-${index}`;
}

/**
 * The physical replication slot a primary keeps for `member`. Slot names allow only
 * `[a-z0-9_]`, so dashes become underscores.
 */
export function slotNameFor(member: string): string {
  return `pgha_${member.replace(/[^a-z0-9_]/g, '_')}`;
}

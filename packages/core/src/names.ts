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

/** PostgreSQL names (slot names included) hold at most NAMEDATALEN - 1 = 63 bytes. */
const maxSlotNameLength = 63;

/**
 * The physical replication slot a primary keeps for `member`. Slot names allow only
 * `[a-z0-9_]` and at most 63 characters, so dashes become underscores, and a name
 * that would be longer is cut and ends in a hash of the whole member name (so two
 * long members sharing a prefix still get distinct slots).
 */
export function slotNameFor(member: string): string {
  const slot = `pgha_${member.replace(/[^a-z0-9_]/g, '_')}`;
  if (slot.length <= maxSlotNameLength) return slot;
  const suffix = `_${fnv1a32(member).toString(16).padStart(8, '0')}`;
  return slot.slice(0, maxSlotNameLength - suffix.length) + suffix;
}

/** 32-bit FNV-1a over UTF-16 code units: a stable, dependency-free short hash. */
function fnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/**
 * What the client makes of the bytes it reads from etcd, before any routing decision:
 * a leader record becomes an observation (valid, or invalid with the reason), a member
 * record is accepted or refused with the reason. Pure (no etcd, no clock): the watcher
 * (discovery.ts) calls these on every read and watch event, and the fuzz tests drive
 * them with hostile bytes.
 *
 * A record is refused when it does not parse (malformed, hostile, too large, an unknown
 * version, a term that is not a safe integer), when a member record sits under another
 * member's key, or when it names a host outside the `allowedHosts` allowlist.
 */
import { type ClusterKeys, LeaderRecord, MemberRecord, PghaError } from '@pgha/core';
import { type HostAllowlist, hostRejection } from './host-allowlist.js';
import type { LeaderObservation } from './routing.js';

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** The observation of the `leader` key's value `value` at etcd revision `revision`. */
export function observeLeader(
  value: string | Uint8Array,
  revision: number,
  allowlist: HostAllowlist | null,
): LeaderObservation {
  let record: LeaderRecord;
  try {
    record = LeaderRecord.decode(value);
  } catch (error) {
    return { kind: 'invalid', error: asError(error), revision };
  }
  const refused = hostRejection(
    allowlist,
    `leader record of term ${record.term} (member ${record.member})`,
    record.host,
  );
  if (refused !== null) return { kind: 'invalid', error: new PghaError('protocol', refused), revision };
  return { kind: 'record', record, revision };
}

/** A member record the client may use, or why not. */
export type MemberAcceptance =
  | { readonly accepted: true; readonly record: MemberRecord }
  | { readonly accepted: false; readonly error: Error };

/** Whether the member record `value` stored at `key` may be used (replica routing). */
export function acceptMember(
  keys: ClusterKeys,
  key: string,
  value: string | Uint8Array,
  allowlist: HostAllowlist | null,
): MemberAcceptance {
  let record: MemberRecord;
  try {
    record = MemberRecord.decode(value);
  } catch (error) {
    return { accepted: false, error: asError(error) };
  }
  const parsed = keys.parse(key);
  if (parsed?.kind !== 'member' || parsed.name !== record.name) {
    return {
      accepted: false,
      error: new PghaError('protocol', `member record at ${key} names member "${record.name}"; ignored it`),
    };
  }
  const refused = hostRejection(allowlist, `member record of ${record.name}`, record.host);
  if (refused !== null) return { accepted: false, error: new PghaError('protocol', refused) };
  return { accepted: true, record };
}

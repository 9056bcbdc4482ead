import { ProtocolError } from './errors.js';

/**
 * A PostgreSQL write-ahead-log position as text, e.g. `16/B374D848`
 * (`pg_current_wal_lsn()` output: two hexadecimal halves of a 64-bit byte position).
 */
export type LsnText = string;

const lsnPattern = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

/** Whether `text` is a well-formed LSN. */
export function isLsn(text: unknown): text is LsnText {
  return typeof text === 'string' && lsnPattern.test(text);
}

/**
 * Parses an LSN into its byte position.
 *
 * @throws ProtocolError when `text` is not of the form `X/Y` with at most 8 hex digits per half.
 * @example parseLsn('0/3000060') === 0x3000060n
 */
export function parseLsn(text: string): bigint {
  const match = lsnPattern.exec(text);
  if (match === null) {
    throw new ProtocolError(
      'lsn',
      `"${String(text).slice(0, 40)}" is not a WAL position; expected two hex halves like 0/3000060`,
    );
  }
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`);
}

/** Formats a byte position as PostgreSQL prints it (upper-case hex, no padding). */
export function formatLsn(position: bigint): LsnText {
  if (position < 0n || position > 0xffffffffffffffffn) {
    throw new ProtocolError('lsn', `${position} is outside the 64-bit WAL range`);
  }
  const high = (position >> 32n).toString(16).toUpperCase();
  const low = (position & 0xffffffffn).toString(16).toUpperCase();
  return `${high}/${low}`;
}

/** Orders two LSNs: negative when `a` is behind `b`, 0 when equal, positive when ahead. */
export function compareLsn(a: LsnText, b: LsnText): number {
  const x = parseLsn(a);
  const y = parseLsn(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Bytes by which `behind` trails `ahead`, never negative (a replica that reports a
 * position past the primary's last published one is 0 bytes behind, not ahead).
 * Returned as a number: WAL distances that matter for lag fit easily in 2^53.
 */
export function lsnLagBytes(ahead: LsnText, behind: LsnText): number {
  const diff = parseLsn(ahead) - parseLsn(behind);
  return diff > 0n ? Number(diff) : 0;
}

/** The greater of two LSNs (null counts as the least). */
export function maxLsn(a: LsnText | null, b: LsnText | null): LsnText | null {
  if (a === null) return b;
  if (b === null) return a;
  return compareLsn(a, b) >= 0 ? a : b;
}

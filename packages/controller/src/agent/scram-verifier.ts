/**
 * SCRAM-SHA-256 verifiers (RFC 5802/7677, as PostgreSQL stores them): the agent sends
 * `PASSWORD 'SCRAM-SHA-256$…'` instead of the password itself, so a statement that
 * postgres logs (a failed CREATE ROLE is logged with its text, as is any statement
 * under log_statement) never holds a password. PostgreSQL stores a verifier it is
 * given as is (what psql's \password does too).
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';

/** Iterations PostgreSQL uses by default (scram_iterations). */
export const scramIterations = 4096;

/**
 * Whether `password` is one whose SASLprep form is itself (printable ASCII): for those
 * the verifier computed here is exactly the one postgres would compute. Others are
 * sent as they are (postgres normalises them itself).
 */
export function scramPreparable(password: string): boolean {
  return /^[\x20-\x7e]+$/.test(password);
}

/**
 * The verifier `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` of a
 * printable-ASCII password (see {@link scramPreparable}); `salt` is random unless given.
 */
export function scramVerifier(password: string, salt: Buffer = randomBytes(16), iterations = scramIterations): string {
  const salted = pbkdf2Sync(Buffer.from(password, 'utf8'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/** What to write after `PASSWORD` for `password`: its verifier when it can be computed here, else the password. */
export function passwordForSql(password: string): string {
  return scramPreparable(password) ? scramVerifier(password) : password;
}

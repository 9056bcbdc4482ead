import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { passwordForSql, scramVerifier } from './scram-verifier.js';

describe('scramVerifier', () => {
  it('has the layout PostgreSQL stores and parses', () => {
    expect(scramVerifier('secret-password')).toMatch(
      /^SCRAM-SHA-256\$4096:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$/,
    );
  });

  it('proves a SCRAM exchange for the password it was made from (RFC 7677 example)', () => {
    // RFC 7677 section 3: user "user", password "pencil", this salt and nonces; the
    // client proof of that exchange must verify against the StoredKey.
    const salt = Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64');
    const verifier = scramVerifier('pencil', salt);
    const [, keys] = verifier.split('$').slice(1);
    const storedKey = Buffer.from(keys!.split(':')[0]!, 'base64');
    const authMessage =
      'n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0';
    const proof = Buffer.from('dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=', 'base64');
    const signature = createHmac('sha256', storedKey).update(authMessage).digest();
    const clientKey = Buffer.from(proof.map((b, i) => b ^ signature[i]!));
    expect(createHash('sha256').update(clientKey).digest().equals(storedKey)).toBe(true);
    // And the server key matches the RFC's server signature.
    const salted = pbkdf2Sync('pencil', salt, 4096, 32, 'sha256');
    const serverKey = createHmac('sha256', salted).update('Server Key').digest();
    expect(createHmac('sha256', serverKey).update(authMessage).digest('base64')).toBe(
      '6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
    );
  });

  it('never returns a printable password itself', () => {
    expect(passwordForSql('pw-123')).not.toContain('pw-123');
    expect(passwordForSql('pw-123')).toMatch(/^SCRAM-SHA-256\$/);
    expect(passwordForSql('pässwort')).toBe('pässwort');
  });
});

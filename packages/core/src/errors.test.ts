import { describe, expect, it } from 'vitest';
import { errorCodes, isPghaError, PghaError, ProtocolError } from './errors.js';

describe('PghaError', () => {
  it('carries its code and is not retryable by default', () => {
    const error = new PghaError('timeout', 'waited 5000 ms for the leader key');
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe('PghaError');
    expect(error.code).toBe('timeout');
    expect(error.retryable).toBe(false);
    expect(error.message).toBe('waited 5000 ms for the leader key');
    expect('cause' in error).toBe(false);
  });

  it('passes retryable and cause through', () => {
    const cause = new Error('UNAVAILABLE');
    const error = new PghaError('etcd-unavailable', 'etcd did not answer', { retryable: true, cause });
    expect(error.retryable).toBe(true);
    expect(error.cause).toBe(cause);
  });

  it('lists each code once', () => {
    expect(new Set(errorCodes).size).toBe(errorCodes.length);
    expect(errorCodes).toContain('protocol');
  });
});

describe('ProtocolError', () => {
  it('is a non-retryable protocol PghaError naming its subject', () => {
    const cause = new SyntaxError('Unexpected token');
    const error = new ProtocolError('leader record', 'not valid JSON', { cause });
    expect(error).toBeInstanceOf(PghaError);
    expect(error.name).toBe('ProtocolError');
    expect(error.code).toBe('protocol');
    expect(error.retryable).toBe(false);
    expect(error.subject).toBe('leader record');
    expect(error.message).toBe('leader record: not valid JSON');
    expect(error.cause).toBe(cause);
  });
});

describe('isPghaError', () => {
  it('recognizes pgha errors, optionally of one code', () => {
    const error = new ProtocolError('lsn', 'bad');
    expect(isPghaError(error)).toBe(true);
    expect(isPghaError(error, 'protocol')).toBe(true);
    expect(isPghaError(error, 'timeout')).toBe(false);
  });

  it.each([new Error('plain'), { code: 'protocol' }, null, undefined, 'protocol'])('rejects %s', (value) => {
    expect(isPghaError(value)).toBe(false);
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from './errors.js';
import { compareLsn, formatLsn, isLsn, lsnLagBytes, maxLsn, parseLsn } from './lsn.js';

const position = fc.bigInt({ min: 0n, max: 0xffffffffffffffffn });
const lsnText = position.map(formatLsn);

const malformed = [
  '',
  '0',
  '/',
  '0/',
  '/0',
  '0/0/0',
  '123456789/0',
  '0/123456789',
  'G/0',
  '0/g',
  ' 0/1',
  '0/1 ',
  '0/1\n',
  '0x1/0',
  '-1/0',
  '+1/0',
  '0/1.5',
  '0\\1',
  '０/1',
];

describe('parseLsn', () => {
  it('reads the two hexadecimal halves as one 64-bit position', () => {
    expect(parseLsn('0/3000060')).toBe(0x3000060n);
    expect(parseLsn('16/B374D848')).toBe(0x16b374d848n);
    expect(parseLsn('0/0')).toBe(0n);
    expect(parseLsn('FFFFFFFF/FFFFFFFF')).toBe(0xffffffffffffffffn);
  });

  it('accepts lower case and leading zeros', () => {
    expect(parseLsn('16/b374d848')).toBe(parseLsn('16/B374D848'));
    expect(parseLsn('00000016/0B374D848'.replace('0B', 'B'))).toBe(0x16b374d848n);
  });

  it.each(malformed)('rejects the malformed LSN %j', (text) => {
    expect(isLsn(text)).toBe(false);
    expect(() => parseLsn(text)).toThrow(ProtocolError);
    expect(() => parseLsn(text)).toThrow(/is not a WAL position/);
  });

  it('keeps the message short for a huge input', () => {
    let caught: unknown;
    try {
      parseLsn(`1/${'A'.repeat(100_000)}`);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ProtocolError);
    expect((caught as ProtocolError).code).toBe('protocol');
    expect((caught as ProtocolError).message.length).toBeLessThan(200);
  });
});

describe('isLsn', () => {
  it('accepts what PostgreSQL prints', () => {
    expect(isLsn('0/3000060')).toBe(true);
    expect(isLsn('16/B374D848')).toBe(true);
  });

  it.each([null, undefined, 0, 0n, {}, ['0/1']])('rejects the non-string %s', (value) => {
    expect(isLsn(value)).toBe(false);
  });
});

describe('formatLsn', () => {
  it('prints upper-case hex without padding, like PostgreSQL', () => {
    expect(formatLsn(0x3000060n)).toBe('0/3000060');
    expect(formatLsn(0x16b374d848n)).toBe('16/B374D848');
    expect(formatLsn(0n)).toBe('0/0');
    expect(formatLsn(0x100000000n)).toBe('1/0');
  });

  it('round-trips every 64-bit position through parseLsn', () => {
    fc.assert(
      fc.property(position, (value) => {
        const text = formatLsn(value);
        expect(text).toMatch(/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/);
        expect(isLsn(text)).toBe(true);
        expect(parseLsn(text)).toBe(value);
        expect(formatLsn(parseLsn(text))).toBe(text);
      }),
    );
  });

  it.each([-1n, 0x10000000000000000n])('refuses the out-of-range position %s', (value) => {
    expect(() => formatLsn(value)).toThrow(ProtocolError);
  });
});

describe('compareLsn', () => {
  it('orders by position, not by text', () => {
    expect(compareLsn('0/2', '0/10')).toBeLessThan(0);
    expect(compareLsn('1/0', '0/FFFFFFFF')).toBeGreaterThan(0);
    expect(compareLsn('0/A', '0/a')).toBe(0);
    expect(compareLsn('0/0000000A', '0/A')).toBe(0);
  });

  it('agrees with the order of positions and is antisymmetric', () => {
    fc.assert(
      fc.property(position, position, (a, b) => {
        const result = compareLsn(formatLsn(a), formatLsn(b));
        expect(result).toBe(a < b ? -1 : a > b ? 1 : 0);
        expect(compareLsn(formatLsn(b), formatLsn(a))).toBe(b < a ? -1 : b > a ? 1 : 0);
      }),
    );
  });

  it('rejects a malformed side', () => {
    expect(() => compareLsn('0/1', 'bogus')).toThrow(ProtocolError);
    expect(() => compareLsn('bogus', '0/1')).toThrow(ProtocolError);
  });
});

describe('lsnLagBytes', () => {
  it('counts the bytes behind trails ahead', () => {
    expect(lsnLagBytes('0/3000060', '0/3000000')).toBe(0x60);
    expect(lsnLagBytes('1/0', '0/FFFFFFFF')).toBe(1);
    expect(lsnLagBytes('0/5', '0/5')).toBe(0);
  });

  it('reports a replica ahead of the primary as 0 bytes behind', () => {
    expect(lsnLagBytes('0/3000000', '0/3000060')).toBe(0);
    expect(lsnLagBytes('0/0', 'FFFFFFFF/FFFFFFFF')).toBe(0);
  });

  it('is never negative and exact for distances below 2^53', () => {
    fc.assert(
      fc.property(position, position, (a, b) => {
        const lag = lsnLagBytes(formatLsn(a), formatLsn(b));
        expect(lag).toBeGreaterThanOrEqual(0);
        const diff = a - b;
        if (diff <= 0n) expect(lag).toBe(0);
        else if (diff < 2n ** 53n) expect(lag).toBe(Number(diff));
      }),
    );
  });

  it('rejects malformed input', () => {
    expect(() => lsnLagBytes('0/1', '')).toThrow(ProtocolError);
  });
});

describe('maxLsn', () => {
  it('treats null as the least position', () => {
    expect(maxLsn(null, null)).toBeNull();
    expect(maxLsn(null, '0/1')).toBe('0/1');
    expect(maxLsn('0/1', null)).toBe('0/1');
  });

  it('returns the greater position, not the greater text', () => {
    expect(maxLsn('0/2', '0/10')).toBe('0/10');
    expect(maxLsn('1/0', '0/FFFFFFFF')).toBe('1/0');
  });

  it('returns one of its arguments and is never behind either', () => {
    fc.assert(
      fc.property(fc.option(lsnText), fc.option(lsnText), (a, b) => {
        const result = maxLsn(a, b);
        expect([a, b]).toContain(result);
        if (result === null) {
          expect(a).toBeNull();
          expect(b).toBeNull();
        } else {
          if (a !== null) expect(compareLsn(result, a)).toBeGreaterThanOrEqual(0);
          if (b !== null) expect(compareLsn(result, b)).toBeGreaterThanOrEqual(0);
        }
      }),
    );
  });
});

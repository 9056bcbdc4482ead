import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PghaError } from './errors.js';
import { clusterKeys } from './keys.js';
import { assertValidName, isValidName, memberName, slotNameFor } from './names.js';

const validName = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/);

describe('isValidName', () => {
  it.each(['a', '0', 'demo', 'demo-0', 'a-b-c', '0abc', 'a'.repeat(63)])('accepts the DNS-1123 label %j', (name) => {
    expect(isValidName(name)).toBe(true);
  });

  it.each([
    '',
    'Demo',
    'demo_0',
    '-demo',
    'demo-',
    'a'.repeat(64),
    '../x',
    'a/b',
    'a.b',
    'de mo',
    'démo',
    'demo\n',
    ' demo',
  ])('rejects %j', (name) => {
    expect(isValidName(name)).toBe(false);
  });

  it.each([null, undefined, 1, {}, ['demo'], true])('rejects the non-string %j', (value) => {
    expect(isValidName(value)).toBe(false);
  });
});

describe('assertValidName', () => {
  it('returns a valid name unchanged', () => {
    expect(assertValidName('member', 'demo-0')).toBe('demo-0');
  });

  it('throws invalid-option naming the kind, the value and the rule', () => {
    let caught: unknown;
    try {
      assertValidName('cluster', 'Bad_Name');
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(PghaError);
    expect((caught as PghaError).code).toBe('invalid-option');
    expect((caught as PghaError).retryable).toBe(false);
    expect((caught as PghaError).message).toMatch(
      /invalid cluster name "Bad_Name".*lower-case letters, digits and dashes/,
    );
  });

  it('keeps the message short when the name is huge', () => {
    expect(() => assertValidName('member', 'X'.repeat(100_000))).toThrow(
      expect.objectContaining({ message: expect.stringMatching(/^.{1,300}$/s) }),
    );
  });
});

describe('memberName', () => {
  it('names ordinal members like StatefulSet pods', () => {
    expect(memberName('demo', 0)).toBe('demo-0');
    expect(memberName('demo', 12)).toBe('demo-12');
  });

  it('yields a valid member name that round-trips through the member key', () => {
    fc.assert(
      fc.property(
        validName.filter((name) => name.length <= 52),
        fc.nat({ max: 9_999_999 }),
        (cluster, index) => {
          const name = memberName(cluster, index);
          expect(isValidName(name)).toBe(true);
          const keys = clusterKeys(cluster);
          expect(keys.parse(keys.member(name))).toEqual({ kind: 'member', name });
        },
      ),
    );
  });
});

describe('slotNameFor', () => {
  it('prefixes pgha_ and turns dashes into underscores', () => {
    expect(slotNameFor('demo-0')).toBe('pgha_demo_0');
  });

  it('yields only [a-z0-9_] for any input', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 80 }), (member) => {
        expect(slotNameFor(member)).toMatch(/^pgha_[a-z0-9_]*$/);
      }),
    );
  });

  it('yields a name PostgreSQL accepts (at most 63 characters) for every valid member name', () => {
    fc.assert(
      fc.property(validName, (member) => {
        expect(slotNameFor(member)).toMatch(/^[a-z0-9_]{1,63}$/);
      }),
    );
    expect(slotNameFor('a'.repeat(63))).toHaveLength(63);
  });

  it('leaves names that fit untouched', () => {
    const member = 'a'.repeat(58);
    expect(slotNameFor(member)).toBe(`pgha_${member}`);
  });

  it('gives distinct slots to long members that share a prefix', () => {
    const base = 'a'.repeat(60);
    const slots = new Set(['-b1', '-b2', 'bb2', 'b-b'].map((tail) => slotNameFor(base + tail)));
    expect(slots.size).toBe(4);
  });

  it('gives distinct valid member names distinct slots', () => {
    fc.assert(
      fc.property(validName, validName, (a, b) => {
        fc.pre(a !== b);
        expect(slotNameFor(a)).not.toBe(slotNameFor(b));
      }),
    );
  });

  it('is stable for the same member', () => {
    const member = `${'x'.repeat(62)}1`;
    expect(slotNameFor(member)).toBe(slotNameFor(member));
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PghaError } from './errors.js';
import { clusterKeys, defaultKeyRoot, keyKinds } from './keys.js';

const validName = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/);
const historyTerm = fc.integer({ min: 1, max: 999_999_999_999 });

function expectInvalidOption(fn: () => unknown): PghaError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(PghaError);
  expect((caught as PghaError).code).toBe('invalid-option');
  return caught as PghaError;
}

describe('clusterKeys', () => {
  it('lays out every key below /pgha/<cluster>/ by default', () => {
    const keys = clusterKeys('demo');
    expect(defaultKeyRoot).toBe('/pgha/');
    expect(keys).toMatchObject({
      prefix: '/pgha/demo/',
      initialize: '/pgha/demo/initialize',
      config: '/pgha/demo/config',
      leader: '/pgha/demo/leader',
      lastPrimary: '/pgha/demo/last-primary',
      term: '/pgha/demo/term',
      target: '/pgha/demo/target',
      switchover: '/pgha/demo/switchover',
      membersPrefix: '/pgha/demo/members/',
      historyPrefix: '/pgha/demo/history/',
    });
    expect(keys.member('demo-0')).toBe('/pgha/demo/members/demo-0');
    expect(keys.history(7)).toBe('/pgha/demo/history/000000000007');
  });

  it('uses a custom root in place of /pgha/', () => {
    const keys = clusterKeys('demo', '/apps/ha/');
    expect(keys.prefix).toBe('/apps/ha/demo/');
    expect(keys.leader).toBe('/apps/ha/demo/leader');
    expect(keys.member('demo-1')).toBe('/apps/ha/demo/members/demo-1');
  });

  it.each(['initialize', 'config', 'leader', 'term', 'target', 'switchover'] as const)(
    'parses the %s key back to its kind',
    (kind) => {
      const keys = clusterKeys('demo');
      expect(keys.parse(keys[kind])).toEqual({ kind });
    },
  );

  it('parses the last-primary key back to its kind', () => {
    const keys = clusterKeys('demo');
    expect(keys.parse(keys.lastPrimary)).toEqual({ kind: 'last-primary' });
  });

  it('parses a key of every kind it knows', () => {
    const keys = clusterKeys('demo');
    const built = [
      keys.initialize,
      keys.config,
      keys.sync,
      keys.member('demo-0'),
      keys.leader,
      keys.lastPrimary,
      keys.term,
      keys.target,
      keys.switchover,
      keys.history(1),
      keys.controller,
      keys.removed('demo-3'),
      keys.failsafe,
    ];
    expect(built.map((key) => keys.parse(key)?.kind)).toEqual([...keyKinds]);
  });

  it('round-trips every valid member name through removed and parse', () => {
    fc.assert(
      fc.property(validName, validName, (cluster, member) => {
        const keys = clusterKeys(cluster);
        const key = keys.removed(member);
        expect(key).toBe(`/pgha/${cluster}/removed/${member}`);
        expect(key.startsWith(keys.removedPrefix)).toBe(true);
        expect(keys.parse(key)).toEqual({ kind: 'removed', name: member });
      }),
    );
  });

  it('refuses to build a removal mark for an invalid member name, and does not parse one', () => {
    const keys = clusterKeys('demo');
    expectInvalidOption(() => keys.removed('Demo_3'));
    expect(keys.parse('/pgha/demo/removed/Demo_3')).toBeNull();
    expect(keys.parse('/pgha/demo/removed/')).toBeNull();
  });

  it('round-trips every valid member name through member and parse', () => {
    fc.assert(
      fc.property(validName, validName, (cluster, member) => {
        const keys = clusterKeys(cluster);
        const key = keys.member(member);
        expect(key.startsWith(keys.membersPrefix)).toBe(true);
        expect(keys.parse(key)).toEqual({ kind: 'member', name: member });
      }),
    );
  });

  it('round-trips every term through history and parse', () => {
    fc.assert(
      fc.property(historyTerm, (term) => {
        const keys = clusterKeys('demo');
        const key = keys.history(term);
        expect(key.startsWith(keys.historyPrefix)).toBe(true);
        expect(keys.parse(key)).toEqual({ kind: 'history', term });
      }),
    );
  });

  it('round-trips the largest term a history key can hold', () => {
    const keys = clusterKeys('demo');
    expect(keys.parse(keys.history(999_999_999_999))).toEqual({ kind: 'history', term: 999_999_999_999 });
  });

  it('sorts history keys in term order byte for byte', () => {
    const keys = clusterKeys('demo');
    const terms = [100, 9, 10, 1, 99, 1000];
    const sorted = terms.map((t) => keys.history(t)).sort();
    expect(sorted.map((key) => keys.parse(key))).toEqual(
      [1, 9, 10, 99, 100, 1000].map((term) => ({ kind: 'history', term })),
    );
  });

  it('orders any two history keys as their terms', () => {
    fc.assert(
      fc.property(historyTerm, historyTerm, (a, b) => {
        const keys = clusterKeys('demo');
        const byKey = Math.sign(Buffer.compare(Buffer.from(keys.history(a)), Buffer.from(keys.history(b))));
        expect(byKey).toBe(Math.sign(a - b));
      }),
    );
  });

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 1e12, Number.MAX_SAFE_INTEGER])(
    'refuses to build a history key for term %s',
    (term) => {
      expect(() => clusterKeys('demo').history(term)).toThrow(/term/);
    },
  );

  it.each(['Demo-0', 'demo_0', '../x', 'a/b', '', '-demo', 'demo-', 'a'.repeat(64), 'démo'])(
    'refuses to build a member key for the invalid name %j',
    (name) => {
      const error = expectInvalidOption(() => clusterKeys('demo').member(name));
      expect(error.message).toMatch(/member name/);
    },
  );

  it.each(['', 'Demo', 'demo_1', '-demo', 'demo-', 'a'.repeat(64), '../x', 'a/b', 'de mo', 'démo'])(
    'rejects the invalid cluster name %j',
    (cluster) => {
      const error = expectInvalidOption(() => clusterKeys(cluster));
      expect(error.message).toMatch(/cluster name/);
    },
  );

  it.each(['', 'pgha', '/pgha', 'pgha/'])('rejects the key root %j that does not start and end with "/"', (root) => {
    const error = expectInvalidOption(() => clusterKeys('demo', root));
    expect(error.message).toMatch(/must start and end with "\/"/);
  });

  it.each([
    ['another cluster', '/pgha/other/leader'],
    ['a cluster whose name extends this one', '/pgha/demo-2/leader'],
    ['a cluster that is a prefix of this one', '/pgha/dem/leader'],
    ['another root', '/other/demo/leader'],
    ['no root at all', 'demo/leader'],
    ['the bare prefix', '/pgha/demo/'],
    ['the prefix without its slash', '/pgha/demo'],
    ['the bare members prefix', '/pgha/demo/members/'],
    ['a nested member path', '/pgha/demo/members/demo-0/x'],
    ['a path-traversal member', '/pgha/demo/members/../leader'],
    ['an upper-case member', '/pgha/demo/members/Demo-0'],
    ['the bare history prefix', '/pgha/demo/history/'],
    ['an unpadded history term', '/pgha/demo/history/7'],
    ['a 13-digit history term', '/pgha/demo/history/0000000000007'],
    ['history term zero', '/pgha/demo/history/000000000000'],
    ['a signed history term', '/pgha/demo/history/-00000000007'],
    ['a history term in exponent form', '/pgha/demo/history/0000000001e3'],
    ['a single key with a suffix', '/pgha/demo/leader/x'],
    ['a single key with extra letters', '/pgha/demo/leaders'],
    ['an upper-case single key', '/pgha/demo/LEADER'],
    ['an unknown key', '/pgha/demo/secrets'],
    ['the empty string', ''],
  ])('parses a key of %s to null', (_what, key) => {
    expect(clusterKeys('demo').parse(key)).toBeNull();
  });

  it('never parses one cluster’s keys as another’s', () => {
    fc.assert(
      fc.property(validName, validName, validName, historyTerm, (a, b, member, term) => {
        fc.pre(a !== b);
        const theirs = clusterKeys(b);
        const ours = clusterKeys(a);
        for (const key of [theirs.leader, theirs.term, theirs.config, theirs.member(member), theirs.history(term)]) {
          expect(ours.parse(key)).toBeNull();
        }
      }),
    );
  });

  it('never parses keys below another root', () => {
    const other = clusterKeys('demo', '/elsewhere/');
    const keys = clusterKeys('demo');
    expect([other.leader, other.member('demo-0'), other.history(1)].map((key) => keys.parse(key))).toEqual([
      null,
      null,
      null,
    ]);
  });
});

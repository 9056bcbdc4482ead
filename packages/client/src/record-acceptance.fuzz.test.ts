/**
 * Hostile records against the client's acceptance and routing decisions (pure, many
 * runs): the bytes of the `leader` key pass through `observeLeader` and
 * `decideLeaderObservation` exactly as the watcher applies them, member records
 * through `acceptMember`. The watcher over a real etcd is driven by the same kind of
 * sequences in test/hostile-records.test.ts.
 *
 * Fixed seed and bounded runs; `PGHA_FUZZ_RUNS=<n>` / `PGHA_FUZZ_SEED=<n>` run longer or
 * another seed (docs/testing.md). A failure prints the seed and shrunk counterexample.
 */
import { clusterKeys, isPghaError, maxRecordBytes, type PrimaryEndpoint } from '@pgha/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isHostAllowed, parseHostAllowlist } from './host-allowlist.js';
import { acceptMember, observeLeader } from './record-acceptance.js';
import { type DiscoveryState, decideLeaderObservation, initialDiscoveryState } from './routing.js';

const fuzz = {
  seed: Number(process.env.PGHA_FUZZ_SEED ?? 15),
  numRuns: Number(process.env.PGHA_FUZZ_RUNS ?? 100),
};

const allowedHosts = ['10.0.0.0/24', 'db-1.internal', '::1'];
const allowlist = parseHostAllowlist(allowedHosts)!;
const allowedHost = fc.oneof(
  fc.integer({ min: 0, max: 255 }).map((n) => `10.0.0.${n}`),
  fc.constantFrom('db-1.internal', 'DB-1.Internal', '::1', '[::1]', '0:0:0:0:0:0:0:1'),
);
const outsideHost = fc.oneof(
  fc.integer({ min: 0, max: 255 }).map((n) => `10.0.1.${n}`),
  fc.constantFrom('evil.example', 'db-1.internal.evil', 'db-2.internal', '127.0.0.1', '::2', '10.0.0.256', 'localhost'),
  fc.ipV4().filter((ip) => !ip.startsWith('10.0.0.')),
);
const member = fc.constantFrom('demo-0', 'demo-1', 'demo-2');

function leaderText(fields: Record<string, unknown>): string {
  return JSON.stringify({
    v: 1,
    member: 'demo-0',
    port: 5432,
    timeline: 1,
    since: '2024-05-01T12:00:00.000Z',
    writable: true,
    ...fields,
  });
}

/** One value written to the leader key: a good record (the next term), or something hostile. */
type Write =
  | { readonly kind: 'good'; readonly member: string; readonly host: string; readonly step: number }
  | { readonly kind: 'hostile'; readonly text: string | Uint8Array; readonly label: string };

/** Hostile values relative to the newest good term `term` (filled in when the sequence runs). */
const hostile = (term: number): fc.Arbitrary<Write> =>
  fc.oneof(
    fc.uint8Array({ maxLength: 200 }).map((bytes) => ({ kind: 'hostile' as const, text: bytes, label: 'bytes' })),
    fc.jsonValue({ maxDepth: 3 }).map((v) => ({ kind: 'hostile' as const, text: JSON.stringify(v), label: 'json' })),
    fc
      .record({ host: outsideHost, bump: fc.integer({ min: 1, max: 1000 }), member })
      .map(({ host, bump, member: m }) => ({
        kind: 'hostile' as const,
        text: leaderText({ term: term + bump, host, member: m }),
        label: 'outside host, newer term',
      })),
    fc.record({ host: allowedHost, member, back: fc.integer({ min: 1, max: 3 }) }).map(({ host, member: m, back }) => ({
      kind: 'hostile' as const,
      // Before any good record there is no older term: a term-0 record is invalid instead.
      text: leaderText({ term: Math.max(0, term - back), host, member: m }),
      label: 'older term',
    })),
    fc
      .constantFrom<unknown>(1e300, -1, 0, 1.5, '7', null, Number.MAX_SAFE_INTEGER + 2, [term + 1])
      .map((t) => ({ kind: 'hostile' as const, text: leaderText({ term: t, host: '10.0.0.9' }), label: 'bad term' })),
    fc
      .constantFrom<Record<string, unknown>>(
        { host: 'a'.repeat(300) },
        { host: 42 },
        { host: '' },
        { host: '10.0.0.1; rm -rf /' },
        { port: 0 },
        { port: 70000 },
        { port: '5432' },
        { writable: 'yes' },
        { member: '../leader' },
        { v: 2 },
        { padding: 'x'.repeat(maxRecordBytes) },
      )
      .map((f) => ({
        kind: 'hostile' as const,
        text: leaderText({ term: term + 1, host: '10.0.0.9', ...f }),
        label: 'bad field',
      })),
  );

/** A sequence of writes: good records in increasing terms, hostile ones between them. */
const writes: fc.Arbitrary<Write[]> = fc
  .array(
    fc.oneof(
      { weight: 1, arbitrary: fc.record({ member, host: allowedHost, step: fc.integer({ min: 1, max: 5 }) }) },
      { weight: 2, arbitrary: fc.constant(null) },
    ),
    { minLength: 1, maxLength: 15 },
  )
  .chain((shape) => {
    // Terms of the good records, then a hostile write per null relative to the term before it.
    let term = 0;
    const parts: fc.Arbitrary<Write>[] = shape.map((s) => {
      if (s === null) return hostile(term);
      term += s.step;
      return fc.constant({ kind: 'good' as const, ...s });
    });
    return fc.tuple(...parts);
  });

/** The term of each good write, in order (terms add up the steps). */
function withTerms(sequence: readonly Write[]): Array<{ write: Write; term: number | null }> {
  let term = 0;
  return sequence.map((write) => {
    if (write.kind !== 'good') return { write, term: null };
    term += write.step;
    return { write, term };
  });
}

/** The bytes of a write. */
function textOf(write: Write, term: number | null): string | Uint8Array {
  return write.kind === 'good' ? leaderText({ term, member: write.member, host: write.host }) : write.text;
}

describe('the client under hostile leader records (pure)', () => {
  it('never crashes, never routes outside the allowlist or back to an older term, and ends on the last good record', () => {
    fc.assert(
      fc.property(writes, (sequence) => {
        let state: DiscoveryState = initialDiscoveryState;
        let lastGood: { member: string; host: string; term: number } | null = null;
        let newest = 0;
        const announced: PrimaryEndpoint[] = [];
        withTerms(sequence).forEach(({ write, term }, index) => {
          const observation = observeLeader(textOf(write, term), index + 1, allowlist);
          const decision = decideLeaderObservation(state, observation);
          state = decision.next;
          for (const event of decision.events) {
            if (event.type === 'primary-changed') announced.push(event.current);
            if (event.type === 'discovery-error') expect(event.error).toBeInstanceOf(Error);
          }
          if (write.kind === 'good') lastGood = { member: write.member, host: write.host, term: term! };
          if (state.leader !== null) expect(isHostAllowed(allowlist, state.leader.host)).toBe(true);
          expect(state.newestTerm).toBeGreaterThanOrEqual(newest);
          newest = state.newestTerm;
        });
        for (let i = 1; i < announced.length; i++)
          expect(announced[i]!.term).toBeGreaterThanOrEqual(announced[i - 1]!.term);
        if (lastGood !== null) {
          const good = lastGood as { member: string; host: string; term: number };
          expect(state.leader).toMatchObject({ member: good.member, host: good.host, term: good.term, writable: true });
          expect(state.newestTerm).toBe(good.term);
        } else {
          expect(state.leader).toBeNull();
        }
      }),
      fuzz,
    );
    // About 1 s at the default runs; the bound is for a machine under heavy load.
  }, 30_000);

  it('reports every refused leader record as a discovery-error naming why, with the host when it is outside', () => {
    const observation = observeLeader(leaderText({ term: 9, host: 'evil.example' }), 1, allowlist);
    expect(observation.kind).toBe('invalid');
    const message = observation.kind === 'invalid' ? observation.error.message : '';
    expect(message).toMatch(/leader record of term 9 \(member demo-0\) names host "evil.example"/);
    expect(message).toMatch(/not in allowedHosts \(10\.0\.0\.0\/24, db-1\.internal, ::1\)/);
    expect(message).toMatch(/add it \(or its subnet, like 10\.0\.0\.0\/24\) to allowedHosts/);
    const decision = decideLeaderObservation(initialDiscoveryState, observation);
    expect(decision.events).toEqual([{ type: 'discovery-error', error: expect.any(Error) }]);
    expect(decision.next.newestTerm).toBe(0);
  });

  it('refuses a term beyond the safe integers in the parser and accepts Number.MAX_SAFE_INTEGER (documented)', () => {
    for (const term of [1e300, Number.MAX_SAFE_INTEGER + 2, 2 ** 60]) {
      const observation = observeLeader(leaderText({ term, host: '10.0.0.1' }), 1, allowlist);
      expect(observation.kind).toBe('invalid');
      if (observation.kind === 'invalid')
        expect(observation.error.message).toMatch(/leader record: malformed record: term/);
    }
    // The largest term is a valid term: a writer able to install it (it passes etcd's
    // authorization and the allowlist) pins this client until a leader of that term
    // or a new cluster incarnation; docs/architecture.md, "Hostile input".
    const huge = observeLeader(leaderText({ term: Number.MAX_SAFE_INTEGER, host: '10.0.0.1' }), 1, allowlist);
    expect(huge.kind).toBe('record');
  });

  it('accepts a member record only under its own key and on an allowed host', () => {
    const keys = clusterKeys('demo');
    const memberText = (name: string, host: unknown) =>
      JSON.stringify({
        v: 1,
        name,
        role: 'replica',
        state: 'running',
        host,
        port: 5432,
        term: 3,
        timeline: 2,
        receivedLsn: '0/3000060',
        replayedLsn: '0/3000060',
        lagBytes: 0,
        lagSeconds: 0,
        streaming: true,
        postgresVersion: '17.2',
        systemId: '7365048203312345678',
        healthy: true,
        problem: null,
        tags: {},
        updatedAt: '2024-05-01T12:00:00.000Z',
      });
    fc.assert(
      fc.property(
        member,
        member,
        fc.oneof(allowedHost, outsideHost, fc.jsonValue({ maxDepth: 1 })),
        fc.oneof(fc.constant(null), fc.uint8Array({ maxLength: 100 })),
        (keyName, recordName, host, garbage) => {
          const key = keys.member(keyName);
          const acceptance = acceptMember(keys, key, garbage ?? memberText(recordName, host), allowlist);
          if (acceptance.accepted) {
            expect(garbage).toBeNull();
            expect(acceptance.record.name).toBe(keyName);
            expect(isHostAllowed(allowlist, acceptance.record.host)).toBe(true);
          } else {
            expect(acceptance.error).toBeInstanceOf(Error);
            const wellFormed = garbage === null && keyName === recordName && typeof host === 'string';
            // Every allowed host drawn here is one the parser accepts: only the key or host refuses it.
            if (wellFormed) expect(isHostAllowed(allowlist, host as string)).toBe(false);
          }
        },
      ),
      fuzz,
    );
    expect(acceptMember(keys, keys.member('demo-1'), memberText('demo-2', '10.0.0.2'), null)).toMatchObject({
      accepted: false,
      error: { message: expect.stringMatching(/names member "demo-2"; ignored it/) },
    });
  });
});

describe('allowedHosts', () => {
  it('matches exact names case-insensitively, IP addresses in any spelling, and IPv4 and IPv6 subnets', () => {
    const list = parseHostAllowlist(['db-1.Internal', '10.1.0.0/16', '192.168.5.7', 'fd00::/8', '[::1]']);
    for (const host of [
      'db-1.internal',
      'DB-1.INTERNAL',
      'db-1.internal.',
      '10.1.255.3',
      '192.168.5.7',
      'fd12::5',
      '::1',
    ])
      expect(isHostAllowed(list, host), host).toBe(true);
    for (const host of ['db-2.internal', 'internal', '10.2.0.1', '192.168.5.8', 'fe80::1', '::2', '', 'x'.repeat(300)])
      expect(isHostAllowed(list, host), host).toBe(false);
    expect(isHostAllowed(list, '[::1]')).toBe(true);
    expect(isHostAllowed(list, '::ffff:10.1.0.1')).toBe(true);
    expect(isHostAllowed(null, 'anything')).toBe(true);
  });

  it.each<[unknown, RegExp]>([
    [[], /non-empty array/],
    ['10.0.0.0/24', /non-empty array/],
    [[42], /entry 42 must be a host name/],
    [[''], /entry "" must be/],
    [['10.0.0.0/33'], /not a CIDR subnet/],
    [['10.0.0.0/'], /not a CIDR subnet/],
    [['db.internal/24'], /not a CIDR subnet/],
    [['*.internal'], /wildcards are not supported/],
    [['http://db-1:5432'], /is a URL: give the host only/],
  ])('refuses %j with a message that says what to pass', (value, message) => {
    let caught: unknown;
    try {
      parseHostAllowlist(value);
    } catch (error) {
      caught = error;
    }
    expect(isPghaError(caught, 'invalid-option')).toBe(true);
    expect((caught as Error).message).toMatch(message);
  });

  it('parses arbitrary entries into an allowlist or refuses them with invalid-option, never another error', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.string(), fc.ipV4(), fc.ipV6(), fc.domain(), fc.anything()), { maxLength: 5 }),
        (entries) => {
          try {
            const list = parseHostAllowlist(entries);
            expect(list).not.toBeNull();
            for (const entry of entries) {
              const text = String(entry).trim();
              if (!text.includes('/')) expect(isHostAllowed(list, text), text).toBe(true);
            }
          } catch (error) {
            expect(isPghaError(error, 'invalid-option')).toBe(true);
          }
        },
      ),
      fuzz,
    );
  });
});

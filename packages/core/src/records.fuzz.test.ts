/**
 * Hostile input, property-based: every record codec and the key parser against
 * arbitrary bytes, arbitrary JSON and valid records with one field made hostile.
 * Each parse returns a record that survives its own round trip, or throws our
 * ProtocolError: never another exception, never a hang (inputs are bounded).
 *
 * Runs with a fixed seed and a bounded number of runs; `PGHA_FUZZ_RUNS=<n>` runs
 * each property n times, `PGHA_FUZZ_SEED=<n>` with another seed (docs/testing.md). A
 * failure prints fast-check's seed, path and shrunk counterexample.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PghaError, ProtocolError } from './errors.js';
import { clusterKeys, type ParsedKey } from './keys.js';
import {
  ConfigRecord,
  ControllerRecord,
  FailsafeRecord,
  HistoryRecord,
  InitializeRecord,
  LastPrimaryRecord,
  LeaderRecord,
  MemberRecord,
  maxRecordBytes,
  type RecordCodec,
  RemovedMemberRecord,
  SwitchoverRecord,
  SyncRecord,
  TargetRecord,
  TermRecord,
} from './records.js';

const fuzz = {
  seed: Number(process.env.PGHA_FUZZ_SEED ?? 15),
  numRuns: Number(process.env.PGHA_FUZZ_RUNS ?? 50),
};

type Loose = Record<string, unknown>;
const at = '2024-05-01T12:00:00.000Z';

/** A DNS-1123 label, as names in records are. */
const nameArb = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?$/);
const hostArb = fc.oneof(
  fc.ipV4(),
  fc.domain().filter((d) => d.length <= 253),
  fc.constantFrom('localhost', '::1', '[fe80::1%eth0]'),
);
const termArb = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
const lsnArb = fc
  .tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }))
  .map(([hi, lo]) => `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`);
const timestampArb = fc
  .date({ min: new Date('1971-01-01T00:00:00Z'), max: new Date('2200-01-01T00:00:00Z'), noInvalidDate: true })
  .map((d) => d.toISOString());

/** A valid record of each kind, its varying fields drawn at random. */
const validRecords: ReadonlyArray<readonly [string, RecordCodec<unknown>, fc.Arbitrary<Loose>]> = [
  [
    'member',
    MemberRecord as RecordCodec<unknown>,
    fc
      .record({ name: nameArb, host: hostArb, port: fc.integer({ min: 1, max: 65535 }), term: fc.nat(), lsn: lsnArb })
      .map((r) => ({
        v: 1,
        name: r.name,
        role: 'replica',
        state: 'running',
        host: r.host,
        port: r.port,
        term: r.term,
        timeline: 2,
        receivedLsn: r.lsn,
        replayedLsn: r.lsn,
        lagBytes: 0,
        lagSeconds: 0,
        streaming: true,
        postgresVersion: '17.2',
        systemId: '7365048203312345678',
        healthy: true,
        problem: null,
        tags: {},
        updatedAt: at,
      })),
  ],
  [
    'leader',
    LeaderRecord as RecordCodec<unknown>,
    fc
      .record({ term: termArb, member: nameArb, host: hostArb, writable: fc.boolean(), since: timestampArb })
      .map((r) => ({ v: 1, port: 5432, timeline: 2, ...r })),
  ],
  [
    'last-primary',
    LastPrimaryRecord as RecordCodec<unknown>,
    fc
      .record({ term: termArb, member: nameArb, lsn: lsnArb, clean: fc.boolean(), at: timestampArb })
      .map((r) => ({ v: 1, timeline: 1, ...r })),
  ],
  ['term', TermRecord as RecordCodec<unknown>, fc.record({ term: fc.nat() }).map((r) => ({ v: 1, ...r }))],
  [
    'initialize',
    InitializeRecord as RecordCodec<unknown>,
    fc
      .record({ member: nameArb, systemId: fc.stringMatching(/^\d{1,20}$/), at: timestampArb })
      .map((r) => ({ v: 1, ...r })),
  ],
  [
    'config',
    ConfigRecord as RecordCodec<unknown>,
    fc
      .record({
        version: termArb,
        maximumLagOnFailoverBytes: fc.nat(),
        synchronousMode: fc.constantFrom('off', 'quorum'),
        synchronousCount: fc.integer({ min: 1, max: 64 }),
        work_mem: fc.string({ maxLength: 40 }),
      })
      .map(({ work_mem, ...r }) => ({
        v: 1,
        leaseTtlMillis: 10_000,
        keepaliveIntervalMillis: 1_000,
        fencingMarginMillis: 2_000,
        synchronousStrict: false,
        postgresParameters: { work_mem },
        updatedAt: at,
        updatedBy: 'pgha config set',
        ...r,
      })),
  ],
  [
    'sync',
    SyncRecord as RecordCodec<unknown>,
    fc.uniqueArray(nameArb, { minLength: 1, maxLength: 5 }).chain((names) =>
      fc.record({ term: termArb, quorum: fc.integer({ min: 0, max: names.length - 1 }) }).map((r) => ({
        v: 1,
        term: r.term,
        member: names[0]!,
        standbys: names.slice(1),
        quorum: r.quorum,
        strict: false,
        at,
      })),
    ),
  ],
  [
    'target',
    TargetRecord as RecordCodec<unknown>,
    fc
      .record({
        term: termArb,
        member: nameArb,
        reason: fc.constantFrom('failover', 'switchover', 'manual-failover', 'bootstrap'),
        decidedAt: timestampArb,
      })
      .map((r) => ({ v: 1, ...r })),
  ],
  [
    'switchover',
    SwitchoverRecord as RecordCodec<unknown>,
    fc
      .record({ from: fc.option(nameArb), to: fc.option(nameArb), requestedAt: timestampArb })
      .map((r) => ({ v: 1, at: null, ...r })),
  ],
  [
    'history',
    HistoryRecord as RecordCodec<unknown>,
    fc
      .record({ term: termArb, oldPrimary: fc.option(nameArb), newPrimary: nameArb, lsn: fc.option(lsnArb) })
      .map(({ lsn, ...r }) => ({
        v: 1,
        timeline: 3,
        reason: 'leader lease expired',
        detectedAt: null,
        promotedAt: at,
        lastKnownLsn: { [r.newPrimary]: lsn },
        ...r,
      })),
  ],
  [
    'controller',
    ControllerRecord as RecordCodec<unknown>,
    fc
      .record({
        id: fc.string({ minLength: 1, maxLength: 128 }),
        pid: fc.nat({ max: 0x7fffffff }),
        since: timestampArb,
      })
      .map((r) => ({ v: 1, ...r })),
  ],
  [
    'removed',
    RemovedMemberRecord as RecordCodec<unknown>,
    fc
      .record({ member: nameArb, reason: fc.string({ maxLength: 200 }), at: timestampArb })
      .map((r) => ({ v: 1, ...r })),
  ],
  [
    'failsafe',
    FailsafeRecord as RecordCodec<unknown>,
    fc.uniqueArray(nameArb, { minLength: 1, maxLength: 5 }).chain((names) =>
      fc.record({ term: termArb }).map((r) => ({
        v: 1,
        term: r.term,
        leader: names[0]!,
        members: names.map((name, i) => ({ name, api: `http://127.0.0.1:${8008 + i}`, lastSeen: at })),
      })),
    ),
  ],
];

/** Numbers no field accepts as they are, or only some do. */
const hostileNumber = fc.oneof(
  fc.constantFrom(
    -1,
    -0,
    0,
    0.5,
    -1e-300,
    1e300,
    -1e300,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    Number.MAX_SAFE_INTEGER,
    Number.MAX_SAFE_INTEGER + 2,
    Number.MIN_SAFE_INTEGER,
    Number.MAX_VALUE,
    Number.EPSILON,
    2 ** 32,
    65536,
  ),
  fc.double(),
  fc.integer(),
);

/** An object nested `depth` levels deep. */
function nested(depth: number, leaf: unknown = 1): unknown {
  let value: unknown = leaf;
  for (let i = 0; i < depth; i++) value = i % 2 === 0 ? { __proto__: value, constructor: value } : [value];
  return value;
}

/** A hostile value for one field. */
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  hostileNumber,
  fc.constantFrom(null, undefined, true, false, '', ' ', '\u0000', '__proto__', 'constructor', '1', 'NaN', '[]'),
  fc.constantFrom('a'.repeat(maxRecordBytes + 1), 'é'.repeat(maxRecordBytes), '\uD800'.repeat(1000)),
  fc.string({ maxLength: 300 }),
  fc.string({ unit: 'binary', maxLength: 100 }),
  fc.constantFrom(nested(2000), nested(10), { __proto__: { polluted: true } }, JSON.parse('{"__proto__":{"x":1}}')),
  fc.jsonValue({ maxDepth: 4 }),
  fc.array(fc.anything({ maxDepth: 2 }), { maxLength: 5 }),
  fc.object({ maxDepth: 2, withNullPrototype: true }),
);

/** What a mutation does to a valid record. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), index: fc.nat(), value: hostileValue }),
  fc.record({ kind: fc.constant('delete' as const), index: fc.nat() }),
  fc.record({
    kind: fc.constant('extra' as const),
    key: fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty'), fc.string()),
    value: hostileValue,
  }),
  fc.record({ kind: fc.constant('nested-set' as const), index: fc.nat(), path: fc.string(), value: hostileValue }),
);

type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

/** `record` with `m` applied (a fresh object; defineProperty so `__proto__` is an own key). */
function mutate(record: Loose, m: Mutation): Loose {
  const out: Loose = { ...record };
  const fields = Object.keys(record);
  switch (m.kind) {
    case 'set':
      Object.defineProperty(out, fields[m.index % fields.length]!, {
        value: m.value,
        enumerable: true,
        writable: true,
      });
      break;
    case 'delete':
      delete out[fields[m.index % fields.length]!];
      break;
    case 'extra':
      Object.defineProperty(out, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
      break;
    case 'nested-set': {
      const field = fields[m.index % fields.length]!;
      const inner = out[field];
      const copy: Loose = typeof inner === 'object' && inner !== null ? { ...(inner as Loose) } : {};
      Object.defineProperty(copy, m.path, { value: m.value, enumerable: true, writable: true });
      out[field] = copy;
      break;
    }
    default: {
      const unreachable: never = m;
      return unreachable;
    }
  }
  return out;
}

/** Runs `fn`: either its record, or null after checking it threw our ProtocolError of `codec`. */
function parsedOrRejected(codec: RecordCodec<unknown>, fn: () => unknown): unknown {
  try {
    return fn();
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw new Error(`threw a foreign ${String(error)}`, { cause: error });
    expect(error.subject).toBe(codec.kind);
    expect(error.message.length).toBeLessThan(4_000);
    return null;
  }
}

/** An accepted record is a plain object that encodes, decodes back to itself and stays unpolluted. */
function checkAccepted(codec: RecordCodec<unknown>, record: unknown): void {
  expect(Object.getPrototypeOf(record)).toBe(Object.prototype);
  // Text is the fixpoint (JSON has no -0, so the record itself may differ in a -0).
  const text = codec.encode(record);
  expect(Buffer.byteLength(text)).toBeLessThanOrEqual(maxRecordBytes);
  expect(codec.decode(text)).toEqual(JSON.parse(text));
  expect(codec.encode(codec.decode(text))).toBe(text);
  expect(({} as Loose).polluted).toBeUndefined();
}

describe.each(validRecords)('the %s record codec under hostile input', (_kind, codec, valid) => {
  it('round-trips every valid record', () => {
    fc.assert(
      fc.property(valid, (record) => {
        const parsed = codec.parse(record);
        expect(parsed).toEqual(record);
        expect(codec.decode(codec.encode(parsed))).toEqual(record);
        expect(codec.decode(new TextEncoder().encode(JSON.stringify(record)))).toEqual(record);
      }),
      fuzz,
    );
  });

  it('returns a valid record or throws ProtocolError for a valid record with one field made hostile', () => {
    fc.assert(
      fc.property(valid, mutation, (record, m) => {
        const hostile = mutate(record, m);
        const parsed = parsedOrRejected(codec, () => codec.parse(hostile));
        if (parsed !== null) checkAccepted(codec, parsed);
        let text: string | undefined;
        try {
          text = JSON.stringify(hostile);
        } catch {
          text = undefined; // not representable as JSON (a cycle cannot occur; BigInt cannot): nothing to decode
        }
        if (text !== undefined) {
          const decoded = parsedOrRejected(codec, () => codec.decode(text));
          if (decoded !== null) checkAccepted(codec, decoded);
        }
      }),
      fuzz,
    );
  });

  it('returns a valid record or throws ProtocolError for arbitrary JSON', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), (value) => {
        const parsed = parsedOrRejected(codec, () => codec.parse(value));
        if (parsed !== null) checkAccepted(codec, parsed);
        const decoded = parsedOrRejected(codec, () => codec.decode(JSON.stringify(value) ?? 'null'));
        if (decoded !== null) checkAccepted(codec, decoded);
      }),
      fuzz,
    );
  });

  it('throws ProtocolError for arbitrary bytes and text', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 512 }),
          fc.string({ unit: 'binary', maxLength: 512 }),
          fc.constantFrom('[]'.repeat(40_000), '{"v":1,"a":'.repeat(5_000), `{"v":1}${' '.repeat(maxRecordBytes)}`),
        ),
        (input) => {
          const parsed = parsedOrRejected(codec, () => codec.decode(input));
          if (parsed !== null) checkAccepted(codec, parsed);
        },
      ),
      fuzz,
    );
  });
});

describe('the key parser under hostile input', () => {
  const keys = clusterKeys('demo');
  const builtKey = (parsed: ParsedKey): string => {
    switch (parsed.kind) {
      case 'member':
        return keys.member(parsed.name);
      case 'removed':
        return keys.removed(parsed.name);
      case 'history':
        return keys.history(parsed.term);
      case 'last-primary':
        return keys.lastPrimary;
      default:
        return keys[parsed.kind];
    }
  };
  const keyArb = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 200 }),
    fc
      .tuple(
        fc.constantFrom('members/', 'removed/', 'history/', 'leader', 'term', 'config', '', 'members', 'history/0'),
        fc.oneof(fc.string({ maxLength: 80 }), fc.stringMatching(/^\d{1,14}$/), nameArb),
      )
      .map(([a, b]) => `${keys.prefix}${a}${b}`),
  );

  it('returns null or a key the builders give back exactly, and never throws', () => {
    fc.assert(
      fc.property(keyArb, (key) => {
        const parsed = keys.parse(key);
        if (parsed !== null) expect(builtKey(parsed)).toBe(key);
      }),
      fuzz,
    );
  });

  it('builds keys only from valid cluster names and terms, refusing the rest with our errors', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 80 }), hostileNumber, (cluster, term) => {
        let built: ReturnType<typeof clusterKeys> | null = null;
        try {
          built = clusterKeys(cluster);
        } catch (error) {
          expect(error).toBeInstanceOf(PghaError);
          expect((error as PghaError).code).toBe('invalid-option');
        }
        if (built !== null) expect(built.parse(built.leader)).toEqual({ kind: 'leader' });
        try {
          const key = keys.history(term);
          expect(keys.parse(key)).toEqual({ kind: 'history', term });
        } catch (error) {
          expect(error).toBeInstanceOf(ProtocolError);
        }
      }),
      fuzz,
    );
  });
});

import { describe, expect, it } from 'vitest';
import { ProtocolError } from './errors.js';
import {
  ConfigRecord,
  ControllerRecord,
  defaultConfig,
  FailsafeRecord,
  HistoryRecord,
  InitializeRecord,
  LastPrimaryRecord,
  LeaderRecord,
  MemberRecord,
  maxRecordBytes,
  type RecordCodec,
  RemovedMemberRecord,
  recordVersion,
  SwitchoverRecord,
  SyncRecord,
  TargetRecord,
  TermRecord,
} from './records.js';

// Literal fixtures built with small override factories. The overrides are loosely
// typed on purpose so hostile values (wrong types, huge numbers) can be injected.
type Loose = Record<string, unknown>;

const at = '2024-05-01T12:00:00.000Z';

function memberRecord(overrides: Loose = {}): Loose {
  return {
    v: 1,
    name: 'demo-0',
    role: 'primary',
    state: 'running',
    host: '10.0.0.1',
    port: 5432,
    term: 3,
    timeline: 2,
    receivedLsn: '0/3000060',
    replayedLsn: '0/3000060',
    lagBytes: 0,
    lagSeconds: 0,
    streaming: false,
    postgresVersion: '17.2',
    systemId: '7365048203312345678',
    healthy: true,
    problem: null,
    tags: {},
    updatedAt: at,
    ...overrides,
  };
}

function leaderRecord(overrides: Loose = {}): Loose {
  return {
    v: 1,
    term: 3,
    member: 'demo-0',
    host: '10.0.0.1',
    port: 5432,
    timeline: 2,
    since: at,
    writable: true,
    ...overrides,
  };
}

function lastPrimaryRecord(overrides: Loose = {}): Loose {
  return { v: 1, term: 3, member: 'demo-0', timeline: 2, lsn: '0/3000060', clean: true, at, ...overrides };
}

function termRecord(overrides: Loose = {}): Loose {
  return { v: 1, term: 3, ...overrides };
}

function initializeRecord(overrides: Loose = {}): Loose {
  return { v: 1, member: 'demo-0', systemId: '7365048203312345678', at, ...overrides };
}

function configRecord(overrides: Loose = {}): Loose {
  return {
    v: 1,
    version: 3,
    leaseTtlMillis: 10_000,
    keepaliveIntervalMillis: 1_000,
    fencingMarginMillis: 2_000,
    maximumLagOnFailoverBytes: 16_777_216,
    synchronousMode: 'off',
    synchronousCount: 1,
    synchronousStrict: false,
    postgresParameters: { work_mem: '64MB' },
    updatedAt: at,
    updatedBy: 'pgha config set',
    ...overrides,
  };
}

function syncRecord(overrides: Loose = {}): Loose {
  return {
    v: 1,
    term: 4,
    member: 'demo-0',
    standbys: ['demo-1', 'demo-2'],
    quorum: 1,
    strict: false,
    at,
    ...overrides,
  };
}

function targetRecord(overrides: Loose = {}): Loose {
  return { v: 1, term: 4, member: 'demo-1', reason: 'failover', decidedAt: at, ...overrides };
}

function switchoverRecord(overrides: Loose = {}): Loose {
  return { v: 1, from: 'demo-0', to: 'demo-1', at: null, requestedAt: at, ...overrides };
}

function historyRecord(overrides: Loose = {}): Loose {
  return {
    v: 1,
    term: 4,
    oldPrimary: 'demo-0',
    newPrimary: 'demo-1',
    timeline: 3,
    reason: 'leader lease expired',
    detectedAt: '2024-05-01T11:59:50.000Z',
    promotedAt: at,
    lastKnownLsn: { 'demo-0': '0/3000060', 'demo-1': '0/3000000', 'demo-2': null },
    ...overrides,
  };
}

function removedMemberRecord(overrides: Loose = {}): Loose {
  return { v: 1, member: 'demo-3', reason: 'scaled down to 3 instances', at, ...overrides };
}

function failsafeRecord(overrides: Loose = {}): Loose {
  return {
    v: 1,
    term: 3,
    leader: 'demo-0',
    members: [
      { name: 'demo-0', api: 'http://127.0.0.1:8008', lastSeen: at },
      { name: 'demo-1', api: 'http://127.0.0.1:8009', lastSeen: at },
    ],
    ...overrides,
  };
}

interface Case {
  readonly codec: RecordCodec<unknown>;
  readonly make: (overrides?: Loose) => Loose;
}

const cases: ReadonlyArray<readonly [string, Case]> = [
  ['MemberRecord', { codec: MemberRecord as RecordCodec<unknown>, make: memberRecord }],
  ['LeaderRecord', { codec: LeaderRecord as RecordCodec<unknown>, make: leaderRecord }],
  ['TermRecord', { codec: TermRecord as RecordCodec<unknown>, make: termRecord }],
  ['LastPrimaryRecord', { codec: LastPrimaryRecord as RecordCodec<unknown>, make: lastPrimaryRecord }],
  ['InitializeRecord', { codec: InitializeRecord as RecordCodec<unknown>, make: initializeRecord }],
  ['ConfigRecord', { codec: ConfigRecord as RecordCodec<unknown>, make: configRecord }],
  ['SyncRecord', { codec: SyncRecord as RecordCodec<unknown>, make: syncRecord }],
  ['TargetRecord', { codec: TargetRecord as RecordCodec<unknown>, make: targetRecord }],
  ['SwitchoverRecord', { codec: SwitchoverRecord as RecordCodec<unknown>, make: switchoverRecord }],
  ['HistoryRecord', { codec: HistoryRecord as RecordCodec<unknown>, make: historyRecord }],
  ['RemovedMemberRecord', { codec: RemovedMemberRecord as RecordCodec<unknown>, make: removedMemberRecord }],
  ['FailsafeRecord', { codec: FailsafeRecord as RecordCodec<unknown>, make: failsafeRecord }],
];

/** Runs `fn`, expects a ProtocolError of `codec`'s kind, and returns it. */
function rejects(codec: RecordCodec<unknown>, fn: () => unknown, message?: RegExp): ProtocolError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(ProtocolError);
  const error = caught as ProtocolError;
  expect(error.code).toBe('protocol');
  expect(error.retryable).toBe(false);
  expect(error.subject).toBe(codec.kind);
  if (message !== undefined) expect(error.message).toMatch(message);
  return error;
}

/** Expects both `parse` and `decode` to reject `input`, mentioning `message`. */
function rejectsRecord(codec: RecordCodec<unknown>, input: unknown, message?: RegExp): void {
  rejects(codec, () => codec.parse(input), message);
  rejects(codec, () => codec.decode(JSON.stringify(input)), message);
}

/** A value of the wrong type for a field whose fixture value is `value`. */
function wrongTypeFor(value: unknown): unknown {
  switch (typeof value) {
    case 'string':
      return 42;
    case 'number':
      return String(value);
    case 'boolean':
      return 'true';
    default:
      return value === null ? 7 : 'not an object';
  }
}

describe.each(cases)('%s', (_name, { codec, make }) => {
  it('round-trips a valid record through encode and decode', () => {
    const record = make();
    const text = codec.encode(record);
    expect(JSON.parse(text)).toEqual(record);
    expect(codec.decode(text)).toEqual(record);
  });

  it('decodes etcd bytes as well as text', () => {
    const record = make();
    expect(codec.decode(new TextEncoder().encode(JSON.stringify(record)))).toEqual(record);
  });

  it('carries the schema version', () => {
    expect(recordVersion).toBe(1);
    expect(JSON.parse(codec.encode(make()))).toHaveProperty('v', recordVersion);
  });

  it.each(['', '{', '{not json}', 'undefined', "{'v':1}", '{"v":1,}', 'NaN'])('rejects the garbage text %j', (text) => {
    rejects(codec, () => codec.decode(text), /not valid JSON/);
  });

  it.each([
    ['null', 'null'],
    ['an array', '[]'],
    ['an array', JSON.stringify([make()])],
    ['number', '1'],
    ['string', '"{\\"v\\":1}"'],
    ['boolean', 'true'],
  ])('rejects JSON that is %s rather than an object', (what, text) => {
    rejects(codec, () => codec.decode(text), new RegExp(`expected a JSON object, got ${what}`));
  });

  it.each([undefined, 1, 'text', true, Symbol('x'), () => ({ v: 1 })])('rejects the non-object %s', (value) => {
    rejects(codec, () => codec.parse(value), /expected a JSON object/);
  });

  it.each([2, 99, 0])('rejects a record of the unknown version %s and asks for an upgrade', (version) => {
    rejectsRecord(codec, make({ v: version }), new RegExp(`record version ${version} is not understood.*upgrade pgha`));
  });

  it.each<[string, Loose]>([
    ['no version', {}],
    ['a string version', { v: '1' }],
    ['a null version', { v: null }],
    ['a boolean version', { v: true }],
  ])('rejects a record with %s', (_what, overrides) => {
    const record: Loose = { ...make(), ...overrides };
    if (!('v' in overrides)) delete record.v;
    rejectsRecord(codec, record, /no valid version field "v"/);
  });

  it('rejects a record for every required field that is missing', () => {
    for (const field of Object.keys(make())) {
      if (field === 'v') continue;
      const record = make();
      delete record[field];
      rejectsRecord(codec, record, new RegExp(`malformed record: ${field} `));
    }
  });

  it('rejects a record for every field of the wrong type', () => {
    for (const [field, value] of Object.entries(make())) {
      if (field === 'v') continue;
      rejectsRecord(codec, make({ [field]: wrongTypeFor(value) }), new RegExp(field));
      rejectsRecord(codec, make({ [field]: [] }), new RegExp(field));
    }
  });

  it('rejects a record for every numeric field set to 1e300, -1, NaN or Infinity', () => {
    for (const [field, value] of Object.entries(make())) {
      if (field === 'v' || typeof value !== 'number') continue;
      rejectsRecord(codec, make({ [field]: 1e300 }), new RegExp(field));
      rejectsRecord(codec, make({ [field]: -1 }), new RegExp(field));
      rejects(codec, () => codec.parse(make({ [field]: Number.NaN })), new RegExp(field));
      rejects(codec, () => codec.parse(make({ [field]: Number.POSITIVE_INFINITY })), new RegExp(field));
    }
  });

  it('rejects a record for every string field holding a 100 KB string', () => {
    for (const [field, value] of Object.entries(make())) {
      if (typeof value !== 'string') continue;
      rejects(codec, () => codec.parse(make({ [field]: 'a'.repeat(100_000) })), new RegExp(field));
    }
  });

  it('rejects a record larger than maxRecordBytes before parsing it', () => {
    const text = JSON.stringify(make({ padding: 'x'.repeat(maxRecordBytes) }));
    rejects(codec, () => codec.decode(text), new RegExp(`exceeds the ${maxRecordBytes}-byte limit`));
    rejects(codec, () => codec.decode(new TextEncoder().encode(text)), /exceeds/);
  });

  it('counts the limit in UTF-8 bytes, not characters', () => {
    const text = JSON.stringify(make({ padding: 'é'.repeat(maxRecordBytes / 2) }));
    expect(text.length).toBeLessThan(maxRecordBytes);
    rejects(codec, () => codec.decode(text), /exceeds/);
  });

  it('rejects deeply nested JSON without overflowing the stack', () => {
    rejects(codec, () => codec.decode('['.repeat(20_000) + ']'.repeat(20_000)));
    const nested = `${'{"v":1,"x":'.repeat(5_000)}1${'}'.repeat(5_000)}`;
    rejects(codec, () => codec.decode(nested));
  });

  it('does not let a __proto__ key change any prototype', () => {
    const text = JSON.stringify(make()).replace(/^\{/, '{"__proto__":{"polluted":true},');
    const record = codec.decode(text) as Loose;
    expect(Object.getPrototypeOf(record)).toBe(Object.prototype);
    expect(record).not.toHaveProperty('polluted');
    expect(({} as Loose).polluted).toBeUndefined();
  });

  it('drops fields it does not know, so encode writes only the protocol', () => {
    const record = codec.parse(make({ extra: 'surprise' }));
    expect(record).toEqual(make());
    expect(JSON.parse(codec.encode(make({ extra: 'surprise' })))).not.toHaveProperty('extra');
  });

  it('refuses to encode an invalid record', () => {
    rejects(codec, () => codec.encode(make({ v: 2 })), /upgrade/);
    rejects(codec, () => codec.encode(null));
  });

  it('names the offending field and keeps the message bounded', () => {
    const error = rejects(codec, () => codec.decode(`{"v":1,"junk":"${'z'.repeat(60_000)}"}`));
    expect(error.message.length).toBeLessThan(2_000);
  });
});

const invalidNames = ['../x', 'Demo-0', 'demo_0', '', '-demo', 'demo-', 'a'.repeat(64), 'a/b', 'de mo'];
const invalidLsns = ['garbage', '0/XYZ', '1/2/3', '123456789/0', '0/1 ', '', 'FFFFFFFFF/0'];
const invalidTimestamps = ['yesterday', '2024-05-01', '2024-05-01 12:00:00', '12:00', '2024-13-01T00:00:00Z', ''];

describe('MemberRecord', () => {
  it('accepts a replica that knows little yet', () => {
    const record = memberRecord({
      role: 'unknown',
      state: 'starting',
      timeline: null,
      receivedLsn: null,
      replayedLsn: null,
      lagBytes: null,
      lagSeconds: null,
      postgresVersion: null,
      systemId: null,
      healthy: false,
      problem: 'postgres is not answering',
      tags: { noFailover: true },
    });
    expect(MemberRecord.decode(MemberRecord.encode(record as MemberRecord))).toEqual(record);
  });

  it('accepts a record without an api address (older agents) and one with it', () => {
    expect(MemberRecord.parse(memberRecord()).api).toBeUndefined();
    expect(MemberRecord.parse(memberRecord({ api: 'http://10.0.0.1:8008' })).api).toBe('http://10.0.0.1:8008');
    expect(MemberRecord.parse(memberRecord({ api: 'http://[::1]:8008' })).api).toBe('http://[::1]:8008');
  });

  it.each(['10.0.0.1:8008', 'ftp://10.0.0.1:8008', 'http://10.0.0.1:8008/primary', 'http:// x', ''])(
    'rejects the api address %j',
    (api) => {
      rejectsRecord(MemberRecord, memberRecord({ api }), /api/);
    },
  );

  it.each(['db.example.com', '10.0.0.1', '::1', '[fe80::1%eth0]', 'pod-0.svc_name.local'])(
    'accepts the host %j',
    (host) => {
      expect(MemberRecord.parse(memberRecord({ host })).host).toBe(host);
    },
  );

  it.each(['', 'a'.repeat(254), 'host name', 'evil;rm -rf', 'a/b', 'x\ny', 'höst'])('rejects the host %j', (host) => {
    rejectsRecord(MemberRecord, memberRecord({ host }), /host/);
  });

  it.each([0, -1, 65_536, 5432.5, 1e300])('rejects the port %s', (port) => {
    rejectsRecord(MemberRecord, memberRecord({ port }), /port/);
  });

  it('accepts ports 1 and 65535', () => {
    expect(MemberRecord.parse(memberRecord({ port: 1 })).port).toBe(1);
    expect(MemberRecord.parse(memberRecord({ port: 65_535 })).port).toBe(65_535);
  });

  it.each([-1, 1.5, Number.MAX_SAFE_INTEGER + 1, 1e300])('rejects the term %s', (term) => {
    rejectsRecord(MemberRecord, memberRecord({ term }), /term/);
  });

  it('accepts term 0 before any leader was seen', () => {
    expect(MemberRecord.parse(memberRecord({ term: 0 })).term).toBe(0);
  });

  it.each(invalidLsns)('rejects the WAL position %j', (lsn) => {
    rejectsRecord(MemberRecord, memberRecord({ receivedLsn: lsn }), /receivedLsn/);
    rejectsRecord(MemberRecord, memberRecord({ replayedLsn: lsn }), /replayedLsn/);
  });

  it.each(invalidNames)('rejects the member name %j', (name) => {
    rejectsRecord(MemberRecord, memberRecord({ name }), /name .*DNS-1123/);
  });

  it.each([0, -1, 2 ** 32, 1.5])('rejects the timeline %s', (timeline) => {
    rejectsRecord(MemberRecord, memberRecord({ timeline }), /timeline/);
  });

  it.each(['leader', 'PRIMARY', ''])('rejects the role %j', (role) => {
    rejectsRecord(MemberRecord, memberRecord({ role }), /role/);
  });

  it.each(['dead', 'Running', ''])('rejects the state %j', (state) => {
    rejectsRecord(MemberRecord, memberRecord({ state }), /state/);
  });

  it.each(['', 'abc', '-1', '123456789012345678901', '1e5'])('rejects the system identifier %j', (systemId) => {
    rejectsRecord(MemberRecord, memberRecord({ systemId }), /systemId/);
  });

  it('rejects a problem longer than 1024 characters and accepts one of 1024', () => {
    expect(MemberRecord.parse(memberRecord({ problem: 'p'.repeat(1024) })).problem).toHaveLength(1024);
    rejectsRecord(MemberRecord, memberRecord({ problem: 'p'.repeat(1025) }), /problem/);
  });

  it('rejects a postgres version longer than 64 characters', () => {
    rejectsRecord(MemberRecord, memberRecord({ postgresVersion: '1'.repeat(65) }), /postgresVersion/);
  });

  it('rejects unknown tags and non-boolean tag values', () => {
    rejectsRecord(MemberRecord, memberRecord({ tags: { noFailover: true, nosync: true } }), /tags/);
    rejectsRecord(MemberRecord, memberRecord({ tags: { noFailover: 'yes' } }), /tags\.noFailover/);
    rejectsRecord(MemberRecord, memberRecord({ tags: null }), /tags/);
  });

  it.each(invalidTimestamps)('rejects the timestamp %j', (updatedAt) => {
    rejectsRecord(MemberRecord, memberRecord({ updatedAt }), /updatedAt/);
  });

  it('accepts timestamps with an offset', () => {
    expect(MemberRecord.parse(memberRecord({ updatedAt: '2024-05-01T14:00:00+02:00' })).updatedAt).toBe(
      '2024-05-01T14:00:00+02:00',
    );
  });
});

describe('LeaderRecord', () => {
  it('rejects term 0: a leader always installs a term of at least 1', () => {
    rejectsRecord(LeaderRecord, leaderRecord({ term: 0 }), /term/);
  });

  it('rejects a leader without a timeline', () => {
    rejectsRecord(LeaderRecord, leaderRecord({ timeline: null }), /timeline/);
  });

  it.each(invalidNames)('rejects the member name %j', (member) => {
    rejectsRecord(LeaderRecord, leaderRecord({ member }), /member/);
  });

  it.each([0, 70_000, -5432])('rejects the port %s', (port) => {
    rejectsRecord(LeaderRecord, leaderRecord({ port }), /port/);
  });

  it.each(invalidTimestamps)('rejects the since timestamp %j', (since) => {
    rejectsRecord(LeaderRecord, leaderRecord({ since }), /since/);
  });

  it('rejects a leader with an unknown version and says to upgrade', () => {
    rejectsRecord(LeaderRecord, leaderRecord({ v: 2 }), /leader record: record version 2 .*upgrade pgha/);
  });
});

describe('TermRecord', () => {
  it('accepts the initial term 0 and the largest safe integer', () => {
    expect(TermRecord.parse(termRecord({ term: 0 })).term).toBe(0);
    expect(TermRecord.parse(termRecord({ term: Number.MAX_SAFE_INTEGER })).term).toBe(Number.MAX_SAFE_INTEGER);
  });

  it.each([-1, 1.5, Number.MAX_SAFE_INTEGER + 1, 1e300])('rejects the term %s', (term) => {
    rejectsRecord(TermRecord, termRecord({ term }), /term/);
  });
});

describe('InitializeRecord', () => {
  it.each(['', 'abc', '123456789012345678901', ' 1', '1.0'])('rejects the system identifier %j', (systemId) => {
    rejectsRecord(InitializeRecord, initializeRecord({ systemId }), /systemId/);
  });

  it('rejects a null system identifier: initialization pins one', () => {
    rejectsRecord(InitializeRecord, initializeRecord({ systemId: null }), /systemId/);
  });

  it.each(invalidNames)('rejects the member name %j', (member) => {
    rejectsRecord(InitializeRecord, initializeRecord({ member }), /member/);
  });
});

describe('ConfigRecord', () => {
  it('accepts and round-trips the defaults', () => {
    expect(ConfigRecord.parse(defaultConfig)).toEqual(defaultConfig);
    expect(ConfigRecord.decode(ConfigRecord.encode(defaultConfig))).toEqual(defaultConfig);
  });

  it.each([
    ['leaseTtlMillis', 999],
    ['leaseTtlMillis', 600_001],
    ['leaseTtlMillis', 1500.5],
    ['keepaliveIntervalMillis', 49],
    ['keepaliveIntervalMillis', 6_000],
    ['fencingMarginMillis', 500],
    ['fencingMarginMillis', 9_500],
    ['version', 0],
    ['synchronousCount', 0],
    ['synchronousStrict', 'yes'],
    ['postgresParameters', { 'Work-Mem': '1' }],
    ['keepaliveIntervalMillis', 60_001],
    ['fencingMarginMillis', -1],
    ['fencingMarginMillis', 60_001],
    ['maximumLagOnFailoverBytes', -1],
    ['maximumLagOnFailoverBytes', 2 ** 60],
    ['synchronousMode', 'maybe'],
    ['synchronousMode', true],
  ])('rejects %s = %s', (field, value) => {
    rejectsRecord(ConfigRecord, configRecord({ [field]: value }), new RegExp(field));
  });

  it.each(['off', 'quorum'])('accepts synchronousMode %j', (synchronousMode) => {
    expect(ConfigRecord.parse(configRecord({ synchronousMode })).synchronousMode).toBe(synchronousMode);
  });

  it('rejects the retired synchronousMode "on"', () => {
    rejectsRecord(ConfigRecord, configRecord({ synchronousMode: 'on' }), /synchronousMode/);
  });
});

describe('SyncRecord', () => {
  it('accepts an asynchronous claim (quorum 0, no standbys)', () => {
    expect(SyncRecord.parse(syncRecord({ standbys: [], quorum: 0 })).quorum).toBe(0);
  });

  it.each([
    ['quorum', { quorum: 3 }],
    ['standbys', { standbys: ['demo-1', 'demo-1'] }],
    ['standbys', { standbys: ['demo-0', 'demo-1'] }],
    ['quorum', { quorum: -1 }],
    ['term', { term: 0 }],
  ])('rejects a bad %s', (field, overrides) => {
    rejectsRecord(SyncRecord, syncRecord(overrides), new RegExp(field));
  });
});

describe('TargetRecord', () => {
  it.each(['failover', 'switchover', 'manual-failover', 'bootstrap'])('accepts the reason %j', (reason) => {
    expect(TargetRecord.parse(targetRecord({ reason })).reason).toBe(reason);
  });

  it.each(['whim', 'Failover', ''])('rejects the reason %j', (reason) => {
    rejectsRecord(TargetRecord, targetRecord({ reason }), /reason/);
  });

  it('rejects term 0', () => {
    rejectsRecord(TargetRecord, targetRecord({ term: 0 }), /term/);
  });

  it.each(invalidNames)('rejects the member name %j', (member) => {
    rejectsRecord(TargetRecord, targetRecord({ member }), /member/);
  });
});

describe('SwitchoverRecord', () => {
  it('accepts a request with no source, no target and no schedule', () => {
    const record = switchoverRecord({ from: null, to: null, at: null });
    expect(SwitchoverRecord.decode(JSON.stringify(record))).toEqual(record);
  });

  it('accepts a scheduled switchover', () => {
    expect(SwitchoverRecord.parse(switchoverRecord({ at: '2024-05-02T03:00:00Z' })).at).toBe('2024-05-02T03:00:00Z');
  });

  it.each(invalidNames)('rejects the member name %j on either side', (name) => {
    rejectsRecord(SwitchoverRecord, switchoverRecord({ from: name }), /from/);
    rejectsRecord(SwitchoverRecord, switchoverRecord({ to: name }), /to/);
  });

  it.each(invalidTimestamps)('rejects the timestamp %j', (timestamp) => {
    rejectsRecord(SwitchoverRecord, switchoverRecord({ at: timestamp }), /at/);
    rejectsRecord(SwitchoverRecord, switchoverRecord({ requestedAt: timestamp }), /requestedAt/);
  });
});

describe('HistoryRecord', () => {
  it('accepts the first promotion: no old primary, nothing detected, no LSNs known', () => {
    const record = historyRecord({ oldPrimary: null, detectedAt: null, lastKnownLsn: {} });
    expect(HistoryRecord.decode(HistoryRecord.encode(record as HistoryRecord))).toEqual(record);
  });

  it('rejects a promotion without a new primary', () => {
    rejectsRecord(HistoryRecord, historyRecord({ newPrimary: null }), /newPrimary/);
  });

  it('rejects term 0', () => {
    rejectsRecord(HistoryRecord, historyRecord({ term: 0 }), /term/);
  });

  it.each(invalidNames)('rejects the member name %j as a key of lastKnownLsn', (name) => {
    rejectsRecord(HistoryRecord, historyRecord({ lastKnownLsn: { [name]: '0/1' } }), /lastKnownLsn/);
  });

  it.each(invalidLsns)('rejects the WAL position %j in lastKnownLsn', (lsn) => {
    rejectsRecord(HistoryRecord, historyRecord({ lastKnownLsn: { 'demo-0': lsn } }), /lastKnownLsn\.demo-0/);
  });

  it('rejects lastKnownLsn that is not an object of positions', () => {
    rejectsRecord(HistoryRecord, historyRecord({ lastKnownLsn: null }), /lastKnownLsn/);
    rejectsRecord(HistoryRecord, historyRecord({ lastKnownLsn: ['0/1'] }), /lastKnownLsn/);
    rejectsRecord(HistoryRecord, historyRecord({ lastKnownLsn: { 'demo-0': 1 } }), /lastKnownLsn/);
  });

  it('rejects a symbol key in lastKnownLsn with a ProtocolError, not a TypeError', () => {
    const hostile = historyRecord({ lastKnownLsn: { [Symbol('x')]: '0/1' } });
    rejects(HistoryRecord, () => HistoryRecord.parse(hostile), /lastKnownLsn/);
  });

  it('does not let a __proto__ key in lastKnownLsn change its prototype', () => {
    const text = JSON.stringify(historyRecord()).replace('"lastKnownLsn":{', '"lastKnownLsn":{"__proto__":null,');
    expect(JSON.parse(text).lastKnownLsn).toHaveProperty('__proto__', null);
    const record = HistoryRecord.decode(text);
    expect(Object.getPrototypeOf(record.lastKnownLsn)).toBe(Object.prototype);
    expect(record.lastKnownLsn).toEqual(historyRecord().lastKnownLsn);
  });

  it('rejects a reason longer than 1024 characters', () => {
    rejectsRecord(HistoryRecord, historyRecord({ reason: 'r'.repeat(1025) }), /reason/);
  });
});

describe('ControllerRecord', () => {
  const base = { v: 1, id: '123-abcd', pid: 123, since: at };

  it('accepts a record without a waiting reason (older controllers) and with null', () => {
    expect(ControllerRecord.parse(base)).toEqual(base);
    expect(ControllerRecord.parse({ ...base, waiting: null })).toEqual({ ...base, waiting: null });
  });

  it('accepts what the election waits for and since when', () => {
    const waiting = { reason: 'waiting for demo-0 to report', since: at };
    expect(ControllerRecord.parse({ ...base, waiting })).toEqual({ ...base, waiting });
  });

  it('rejects a waiting reason longer than 1024 characters or without its time', () => {
    rejectsRecord(ControllerRecord, { ...base, waiting: { reason: 'r'.repeat(1025), since: at } }, /waiting\.reason/);
    rejectsRecord(ControllerRecord, { ...base, waiting: { reason: 'r' } }, /waiting\.since/);
  });
});

describe('FailsafeRecord members', () => {
  it('refuses a member named twice', () => {
    const twice = failsafeRecord({
      members: [
        { name: 'demo-1', api: 'http://127.0.0.1:8009', lastSeen: at },
        { name: 'demo-1', api: 'http://127.0.0.1:8010', lastSeen: at },
      ],
    });
    rejectsRecord(FailsafeRecord as RecordCodec<unknown>, twice, /must not repeat a member/);
  });

  it('refuses an api that is not http://host:port', () => {
    const bad = failsafeRecord({ members: [{ name: 'demo-1', api: 'ftp://x/y', lastSeen: at }] });
    rejectsRecord(FailsafeRecord as RecordCodec<unknown>, bad, /http:\/\/host:port/);
  });
});

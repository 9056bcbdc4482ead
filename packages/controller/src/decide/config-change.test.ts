import { ConfigRecord as ConfigCodec, type ConfigRecord, defaultConfig, PghaError } from '@pgha/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { reservedPostgresParameters } from '../agent/postgres-config.js';
import { applyConfigAssignments, formatChange, whenApplied } from './config-change.js';

function config(overrides: Partial<ConfigRecord> = {}): ConfigRecord {
  return { ...defaultConfig, version: 3, ...overrides };
}

/** The PghaError `fn` throws. */
function rejection(fn: () => unknown): PghaError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(PghaError);
    return error as PghaError;
  }
  throw new Error('expected a PghaError, nothing was thrown');
}

describe('applyConfigAssignments', () => {
  it('applies each setting and lists what changed, from -> to, keeping version and metadata', () => {
    const current = config();
    const { next, changes } = applyConfigAssignments(current, [
      'synchronousMode=quorum',
      'synchronousCount=2',
      'synchronousStrict=true',
      'maximumLagOnFailoverBytes=1GiB',
      'postgresParameters.work_mem=64MB',
    ]);
    expect(next).toEqual({
      ...current,
      synchronousMode: 'quorum',
      synchronousCount: 2,
      synchronousStrict: true,
      maximumLagOnFailoverBytes: 1024 ** 3,
      postgresParameters: { work_mem: '64MB' },
    });
    expect(changes.map(formatChange)).toEqual([
      'synchronousMode: off -> quorum',
      'synchronousCount: 1 -> 2',
      'synchronousStrict: false -> true',
      `maximumLagOnFailoverBytes: ${16 * 1024 * 1024} -> ${1024 ** 3}`,
      'postgresParameters.work_mem: (not set) -> 64MB',
    ]);
  });

  it('accepts sizes as plain bytes and with PostgreSQL units, and keys in any case', () => {
    expect(applyConfigAssignments(config(), ['maximumlagonfailoverbytes=1048576']).next.maximumLagOnFailoverBytes).toBe(
      1024 * 1024,
    );
    expect(applyConfigAssignments(config(), ['maximumLagOnFailoverBytes=16MB']).next.maximumLagOnFailoverBytes).toBe(
      16 * 1024 * 1024,
    );
    expect(applyConfigAssignments(config(), ['maximumLagOnFailoverBytes=512kB']).next.maximumLagOnFailoverBytes).toBe(
      512 * 1024,
    );
    expect(applyConfigAssignments(config(), ['SynchronousMode=QUORUM']).next.synchronousMode).toBe('quorum');
  });

  it('removes a PostgreSQL parameter given an empty value, and keeps values with = and spaces as written', () => {
    const current = config({ postgresParameters: { work_mem: '64MB', search_path: 'app' } });
    const { next, changes } = applyConfigAssignments(current, [
      'postgresParameters.work_mem=',
      "postgresParameters.Application_Name=a = 'b'",
    ]);
    expect(next.postgresParameters).toEqual({ search_path: 'app', application_name: "a = 'b'" });
    expect(changes).toEqual([
      { key: 'postgresParameters.work_mem', from: '64MB', to: null },
      { key: 'postgresParameters.application_name', from: null, to: "a = 'b'" },
    ]);
  });

  it('changes the lease timing together when the combination is valid', () => {
    const { next } = applyConfigAssignments(config(), [
      'leaseTtlMillis=10000',
      'keepaliveIntervalMillis=1000',
      'fencingMarginMillis=2000',
    ]);
    expect([next.leaseTtlMillis, next.keepaliveIntervalMillis, next.fencingMarginMillis]).toEqual([10_000, 1000, 2000]);
  });

  it('lists no change for a value equal to the current one, and lets the last assignment of a key win', () => {
    expect(applyConfigAssignments(config(), ['synchronousMode=off']).changes).toEqual([]);
    const { next, changes } = applyConfigAssignments(config(), ['synchronousCount=3', 'synchronousCount=2']);
    expect(next.synchronousCount).toBe(2);
    expect(changes).toEqual([{ key: 'synchronousCount', from: '1', to: '2' }]);
  });

  it('turns failsafe mode on and off, and refuses a value that is not true or false', () => {
    const on = applyConfigAssignments(config(), ['failsafeMode=true']);
    expect(on.next.failsafeMode).toBe(true);
    expect(on.changes).toEqual([{ key: 'failsafeMode', from: 'false', to: 'true' }]);
    expect(applyConfigAssignments(on.next, ['FailsafeMode=false']).next.failsafeMode).toBe(false);
    expect(rejection(() => applyConfigAssignments(config(), ['failsafeMode=yes'])).message).toMatch(
      /failsafeMode=yes is not true or false/,
    );
  });

  it('refuses an unknown key, listing the known ones with an example', () => {
    const error = rejection(() => applyConfigAssignments(config(), ['synchronous_mode=quorum']));
    expect(error.code).toBe('invalid-option');
    expect(error.message).toBe(
      'unknown setting "synchronous_mode": the settings are synchronousMode, synchronousCount, synchronousStrict, maximumLagOnFailoverBytes, leaseTtlMillis, keepaliveIntervalMillis, fencingMarginMillis, failsafeMode, postgresParameters.<name>; e.g. pgha config set synchronousMode=quorum',
    );
  });

  it.each([
    ['synchronousMode', 'synchronousMode=sync', /synchronousMode=sync is not a mode: use off or quorum/],
    ['no =', 'synchronousMode', /"synchronousMode" is not KEY=VALUE: write it as synchronousMode=quorum/],
    ['an empty key', '=1', /is not KEY=VALUE/],
    ['synchronousCount 0', 'synchronousCount=0', /synchronousCount=0 is not a count of replicas from 1 to 64/],
    ['synchronousCount 65', 'synchronousCount=65', /from 1 to 64/],
    ['synchronousCount text', 'synchronousCount=two', /synchronousCount=two is not a count/],
    ['synchronousStrict', 'synchronousStrict=yes', /synchronousStrict=yes is not true or false/],
    ['a size', 'maximumLagOnFailoverBytes=lots', /maximumLagOnFailoverBytes=lots is not a size: .* e\.g\. .*=16MB/],
    ['an empty size', 'maximumLagOnFailoverBytes=', /is not a size/],
    ['a negative size', 'maximumLagOnFailoverBytes=-1', /is not a size/],
    ['an unknown unit', 'maximumLagOnFailoverBytes=3PB', /is not a size/],
    [
      'milliseconds',
      'leaseTtlMillis=2s',
      /leaseTtlMillis=2s is not a whole number of milliseconds: write it as leaseTtlMillis=2000/,
    ],
    [
      'a bad parameter name',
      'postgresParameters.work-mem=1MB',
      /does not name a PostgreSQL parameter: .*work_mem=64MB/,
    ],
    ['no parameter name', 'postgresParameters.=1MB', /does not name a PostgreSQL parameter/],
    // Hostile input: silently dropped before (a plain object's __proto__ setter).
    [
      '__proto__',
      'postgresParameters.__proto__=x',
      /"postgresParameters.__proto__" does not name a PostgreSQL parameter/,
    ],
    ['an object key as a setting', 'constructor=1', /unknown setting "constructor"/],
    ['a huge number', 'leaseTtlMillis=1e300', /leaseTtlMillis=1e300 is not a whole number of milliseconds/],
    ['a negative number', 'fencingMarginMillis=-5', /fencingMarginMillis=-5 is not a whole number/],
    ['a size beyond the safe integers', 'maximumLagOnFailoverBytes=99999999999999999999', /is not a size/],
  ])('refuses a malformed value (%s), saying what is allowed', (_, assignment, message) => {
    const error = rejection(() => applyConfigAssignments(config(), [assignment]));
    expect(error.code).toBe('invalid-option');
    expect(error.message).toMatch(message);
  });

  it('refuses an empty list, with an example', () => {
    expect(rejection(() => applyConfigAssignments(config(), [])).message).toMatch(
      /^no setting given: write KEY=VALUE, e\.g\. pgha config set synchronousMode=quorum/,
    );
  });

  it.each([
    'port',
    'listen_addresses',
    'unix_socket_directories',
    'hba_file',
    'ident_file',
    'data_directory',
    'config_file',
    'primary_conninfo',
    'primary_slot_name',
    'recovery_target_timeline',
    'restore_command',
    'hot_standby',
    'wal_level',
    'max_wal_senders',
    'max_replication_slots',
    'wal_log_hints',
    'synchronous_standby_names',
    'cluster_name',
  ])('refuses the parameter %s, which pgha sets itself', (name) => {
    const error = rejection(() => applyConfigAssignments(config(), [`postgresParameters.${name.toUpperCase()}=x`]));
    expect(error.code).toBe('invalid-option');
    expect(error.message).toMatch(
      new RegExp(`^PostgreSQL parameter ${name} is set by pgha itself and cannot be changed here`),
    );
  });

  it('points at the setting to use instead of synchronous_standby_names and max_connections', () => {
    expect(
      rejection(() => applyConfigAssignments(config(), ['postgresParameters.synchronous_standby_names=*'])).message,
    ).toMatch(/\(use synchronousMode and synchronousCount\)/);
    expect(
      rejection(() => applyConfigAssignments(config(), ['postgresParameters.max_connections=200'])).message,
    ).toMatch(/\(use `pgha agent --max-connections`\)/);
  });

  it("refuses lease timing the record refuses, with the record's reason and how to change the three together", () => {
    const error = rejection(() => applyConfigAssignments(config(), ['keepaliveIntervalMillis=1500']));
    expect(error.code).toBe('invalid-option');
    expect(error.message).toMatch(
      /^the settings would not be valid: keepaliveIntervalMillis must be at most half of leaseTtlMillis \(2000\)/,
    );
    expect(error.message).toMatch(
      /e\.g\. pgha config set leaseTtlMillis=10000 keepaliveIntervalMillis=1000 fencingMarginMillis=2000$/,
    );
    expect(rejection(() => applyConfigAssignments(config(), ['leaseTtlMillis=500'])).message).toMatch(
      /leaseTtlMillis Too small: expected number to be >=1000/i,
    );
  });

  it('refuses a parameter value longer than the record allows', () => {
    expect(
      rejection(() => applyConfigAssignments(config(), [`postgresParameters.search_path=${'x'.repeat(1025)}`])).message,
    ).toMatch(/^the settings would not be valid: postgresParameters\.search_path/);
  });

  it('says when each kind of setting applies', () => {
    expect(whenApplied('synchronousMode')).toMatch(/^live/);
    expect(whenApplied('maximumLagOnFailoverBytes')).toMatch(/controller's next decision/);
    expect(whenApplied('leaseTtlMillis')).toMatch(/next start of each agent/);
    expect(whenApplied('postgresParameters.work_mem')).toMatch(/reloaded .*next start of postgres/);
  });

  it('property: the result always parses, and a failure is always an invalid-option PghaError', () => {
    const keys = [
      'synchronousMode',
      'synchronousCount',
      'synchronousStrict',
      'maximumLagOnFailoverBytes',
      'leaseTtlMillis',
      'keepaliveIntervalMillis',
      'fencingMarginMillis',
      'postgresParameters.work_mem',
      'postgresParameters.port',
      'bogus',
    ];
    const values = fc.oneof(
      fc.constantFrom(
        'off',
        'quorum',
        'true',
        'false',
        '',
        '0',
        '1',
        '2',
        '64',
        '100',
        '250',
        '500',
        '2000',
        '16MB',
        '1GiB',
      ),
      fc.string({ maxLength: 8 }),
      fc.nat({ max: 100_000 }).map(String),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom(...keys), values), { minLength: 1, maxLength: 6 }), (pairs) => {
        const assignments = pairs.map(([k, v]) => `${k}=${v}`);
        let result: ReturnType<typeof applyConfigAssignments>;
        try {
          result = applyConfigAssignments(config(), assignments);
        } catch (error) {
          expect(error).toBeInstanceOf(PghaError);
          expect((error as PghaError).code).toBe('invalid-option');
          return;
        }
        expect(ConfigCodec.parse(result.next)).toEqual(result.next);
        expect(result.next.version).toBe(3);
        for (const name of Object.keys(result.next.postgresParameters))
          expect(reservedPostgresParameters.has(name)).toBe(false);
        // Every listed change is a real difference, and every difference is listed.
        for (const c of result.changes) expect(c.from).not.toBe(c.to);
      }),
      { numRuns: 300 },
    );
  });
});

import { defaultConfig } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import { effectivePostgresParameters } from './cluster-settings.js';

describe('effectivePostgresParameters', () => {
  it("uses the flags' parameters while no settings are stored", () => {
    expect(effectivePostgresParameters({ work_mem: '4MB' }, null)).toEqual({
      parameters: { work_mem: '4MB' },
      overridden: [],
      ignored: [],
    });
  });

  it("puts the record's parameters on top of the flags', one by one, and lists each flag it replaces", () => {
    const record = { ...defaultConfig, postgresParameters: { work_mem: '64MB', search_path: 'app' } };
    expect(effectivePostgresParameters({ work_mem: '4MB', statement_timeout: '5s' }, record)).toEqual({
      parameters: { work_mem: '64MB', statement_timeout: '5s', search_path: 'app' },
      overridden: [{ name: 'work_mem', flag: '4MB', record: '64MB' }],
      ignored: [],
    });
  });

  it('leaves out parameters pgha sets itself that reached the record by hand, and says which', () => {
    const record = { ...defaultConfig, postgresParameters: { port: '6000', wal_level: 'logical', work_mem: '8MB' } };
    expect(effectivePostgresParameters({}, record)).toEqual({
      parameters: { work_mem: '8MB' },
      overridden: [],
      ignored: ['port', 'wal_level'],
    });
  });
});

import { DatabaseError } from 'pg';
import { Registry } from 'prom-client';
import { describe, expect, test } from 'vitest';
import { NoPrimaryError, OutcomeUnknownError, PrimaryChangedError } from './errors.js';
import { checkMetricsOptions, errorType, PoolMetrics } from './pool-metrics.js';

/** The registry's samples through prom-client's own structured form (no text parsing). */
async function read(registry: Registry) {
  const metrics = await registry.getMetricsAsJSON();
  const find = (name: string, labels: Record<string, string>) =>
    (metrics.find((m) => m.name === name)?.values ?? []).filter((v) =>
      Object.entries(labels).every(([k, x]) => (v.labels as Record<string, unknown>)[k] === x),
    );
  return {
    find,
    value(name: string, labels: Record<string, string>) {
      const found = find(name, labels);
      if (found.length !== 1) throw new Error(`expected one ${name}${JSON.stringify(labels)}, found ${found.length}`);
      return found[0]!.value;
    },
  };
}

describe('pool metrics', () => {
  test.each([
    [new NoPrimaryError('none', { term: 1 }), 'no-primary'],
    [new PrimaryChangedError('moved', { rolledBack: false }), 'primary-changed'],
    [new OutcomeUnknownError('lost', { statement: 'COMMIT' }), 'outcome-unknown'],
    [Object.assign(new DatabaseError('syntax', 10, 'error'), { code: '42601', severity: 'ERROR' }), 'database'],
    [new Error('Connection terminated unexpectedly'), 'other'],
  ])('classifies %s as %s', (error, type) => {
    expect(errorType(error)).toBe(type);
  });

  test('pools sharing a registry share the metrics, each under its pool label', async () => {
    const registry = new Registry();
    const a = new PoolMetrics(
      { registry, pool: 'a' },
      { connections: () => ({ primary: 2 }), withoutPrimarySeconds: () => 0 },
    );
    const b = new PoolMetrics(
      { registry, pool: 'b' },
      { connections: () => ({ replica: 3, connecting: 1 }), withoutPrimarySeconds: () => 1.5 },
    );
    a.rerouted();
    a.failed(new NoPrimaryError('none', { term: 1 }));
    b.failed(new Error('boom'));
    let m = await read(registry);
    expect(m.value('pgha_client_connections', { pool: 'a', role: 'primary' })).toBe(2);
    expect(m.value('pgha_client_connections', { pool: 'a', role: 'replica' })).toBe(0);
    expect(m.value('pgha_client_connections', { pool: 'b', role: 'replica' })).toBe(3);
    expect(m.value('pgha_client_connections', { pool: 'b', role: 'connecting' })).toBe(1);
    expect(m.value('pgha_client_reroutes_total', { pool: 'a' })).toBe(1);
    expect(m.value('pgha_client_reroutes_total', { pool: 'b' })).toBe(0);
    expect(m.value('pgha_client_errors_total', { pool: 'a', type: 'no-primary' })).toBe(1);
    expect(m.value('pgha_client_errors_total', { pool: 'b', type: 'other' })).toBe(1);
    expect(m.value('pgha_client_without_primary_seconds', { pool: 'b' })).toBe(1.5);
    b.close();
    m = await read(registry);
    expect(m.find('pgha_client_connections', { pool: 'b' })).toEqual([]);
    expect(m.value('pgha_client_errors_total', { pool: 'b', type: 'other' })).toBe(1);
  });

  test('refuses a metrics option without a registry, naming what to pass', () => {
    expect(() => checkMetricsOptions({})).toThrow(/metrics must be \{ registry \} with a prom-client Registry/);
    expect(() => checkMetricsOptions({ registry: new Registry(), pool: '' })).toThrow(/metrics.pool must be/);
  });
});

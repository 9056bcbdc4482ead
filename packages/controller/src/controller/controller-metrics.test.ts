import { recordVersion } from '@pgha/core';
import type { Registry } from 'prom-client';
import { describe, expect, test } from 'vitest';
import { ControllerMetrics } from './controller-metrics.js';

const history = (reason: string, detectedAt: string | null) => ({
  v: recordVersion,
  term: 2,
  oldPrimary: 'demo-0',
  newPrimary: 'demo-1',
  timeline: 2,
  reason,
  detectedAt,
  promotedAt: '2026-01-01T00:00:03.000Z',
  lastKnownLsn: {},
});

/** The registry's samples through prom-client's own structured form . */
async function samplesOf(registry: Registry) {
  const metrics = await registry.getMetricsAsJSON();
  // A histogram's values carry their own names (_bucket, _sum, _count).
  const samples = metrics.flatMap((m) =>
    m.values.map((v) => ({
      name: (v as { metricName?: string }).metricName ?? m.name,
      labels: v.labels,
      value: v.value,
    })),
  );
  const find = (name: string, labels: Record<string, string> = {}) =>
    samples.filter(
      (s) =>
        s.name === name &&
        Object.entries(labels).every(([k, x]) => String((s.labels as Record<string, unknown>)[k]) === x),
    );
  return {
    samples,
    types: Object.fromEntries(metrics.map((m) => [m.name, String(m.type)])),
    find,
    value(name: string, labels: Record<string, string> = {}) {
      const found = find(name, labels);
      if (found.length !== 1) throw new Error(`expected one ${name}${JSON.stringify(labels)}, found ${found.length}`);
      return found[0]!.value;
    },
  };
}

describe('controller metrics', () => {
  test('time without a primary: a gauge back to 0 with a primary, and a counter of every second', async () => {
    let now = Date.parse('2026-01-01T00:00:00.000Z');
    const metrics = new ControllerMetrics({ cluster: 'demo', now: () => now });
    const read = async () => await samplesOf(metrics.registry);
    metrics.observe(true, true);
    let m = await read();
    expect(m.value('pgha_without_primary_seconds', { cluster: 'demo' })).toBe(0);
    expect(m.value('pgha_without_primary_seconds_total')).toBe(0);
    expect(m.value('pgha_controller_active')).toBe(1);
    metrics.observe(false, true);
    now += 2500;
    metrics.observe(false, true);
    m = await read();
    expect(m.value('pgha_without_primary_seconds')).toBe(2.5);
    expect(m.value('pgha_without_primary_seconds_total')).toBe(2.5);
    now += 500;
    metrics.observe(true, false);
    now += 10_000;
    m = await read();
    expect(m.value('pgha_without_primary_seconds')).toBe(0);
    expect(m.value('pgha_without_primary_seconds_total')).toBe(3);
    expect(m.value('pgha_controller_active')).toBe(0);
  });

  test('counts promotions by reason and observes the election from detection to now', async () => {
    const now = Date.parse('2026-01-01T00:00:04.000Z');
    const metrics = new ControllerMetrics({ cluster: 'demo', now: () => now });
    metrics.promoted(history('failover', '2026-01-01T00:00:00.500Z'));
    metrics.promoted(history('switchover', null));
    const m = await samplesOf(metrics.registry);
    expect(m.value('pgha_promotions_total', { reason: 'failover' })).toBe(1);
    expect(m.value('pgha_promotions_total', { reason: 'switchover' })).toBe(1);
    expect(m.value('pgha_promotions_total', { reason: 'manual-failover' })).toBe(0);
    expect(m.value('pgha_election_duration_seconds_count', { reason: 'failover' })).toBe(1);
    expect(m.value('pgha_election_duration_seconds_sum', { reason: 'failover' })).toBe(3.5);
    expect(m.find('pgha_election_duration_seconds_count', { reason: 'switchover' })).toHaveLength(0);
  });
});

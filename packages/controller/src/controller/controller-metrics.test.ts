import { recordVersion } from '@pgha/core';
import { describe, expect, test } from 'vitest';
import { parsePrometheusText } from '../../../../testing/prometheus-text.js';
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

describe('controller metrics', () => {
  test('time without a primary: a gauge back to 0 with a primary, and a counter of every second', async () => {
    let now = Date.parse('2026-01-01T00:00:00.000Z');
    const metrics = new ControllerMetrics({ cluster: 'demo', now: () => now });
    const read = async () => parsePrometheusText((await metrics.scrape()).body);
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
    const m = parsePrometheusText((await metrics.scrape()).body);
    expect(m.value('pgha_promotions_total', { reason: 'failover' })).toBe(1);
    expect(m.value('pgha_promotions_total', { reason: 'switchover' })).toBe(1);
    expect(m.value('pgha_promotions_total', { reason: 'manual-failover' })).toBe(0);
    expect(m.value('pgha_election_duration_seconds_count', { reason: 'failover' })).toBe(1);
    expect(m.value('pgha_election_duration_seconds_sum', { reason: 'failover' })).toBe(3.5);
    expect(m.find('pgha_election_duration_seconds_count', { reason: 'switchover' })).toHaveLength(0);
  });
});

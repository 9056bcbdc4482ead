import type { Registry } from 'prom-client';
import { describe, expect, test } from 'vitest';
import { type AgentFacts, AgentMetrics, fenceReasonClass } from './agent-metrics.js';

const replica: AgentFacts = {
  postgres: 'replica',
  holdsLeader: false,
  term: 3,
  timeline: 2,
  lagBytes: 4096,
  lagSeconds: 0.5,
  millisToDeadline: 1250,
};

/** The registry's samples through prom-client's own structured form (the text format is parsed in the integration tests). */
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

async function scrape(metrics: AgentMetrics) {
  const { contentType, body } = await metrics.scrape();
  expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  expect(body).toContain('# TYPE pgha_role gauge');
  return samplesOf(metrics.registry);
}

describe('agent metrics', () => {
  test('labels every series with cluster and member and computes the gauges from the facts at scrape time', async () => {
    let facts = replica;
    const metrics = new AgentMetrics({ cluster: 'demo', member: 'demo-1', facts: () => facts });
    let m = await scrape(metrics);
    for (const s of m.samples) expect(s.labels).toMatchObject({ cluster: 'demo', member: 'demo-1' });
    expect(m.types).toMatchObject({
      pgha_role: 'gauge',
      pgha_term: 'gauge',
      pgha_fences_total: 'counter',
      pgha_lease_keepalive_latency_seconds: 'histogram',
    });
    expect(m.value('pgha_role', { role: 'replica' })).toBe(1);
    expect(m.value('pgha_role', { role: 'primary' })).toBe(0);
    expect(m.value('pgha_leader')).toBe(0);
    expect(m.value('pgha_term')).toBe(3);
    expect(m.value('pgha_timeline')).toBe(2);
    expect(m.value('pgha_replication_lag_bytes')).toBe(4096);
    expect(m.value('pgha_replication_lag_seconds')).toBe(0.5);
    expect(m.value('pgha_fencing_deadline_seconds')).toBe(1.25);

    facts = { ...replica, postgres: 'primary', holdsLeader: true, term: 4, lagBytes: null, lagSeconds: null };
    m = await scrape(metrics);
    expect(m.value('pgha_role', { role: 'primary' })).toBe(1);
    expect(m.value('pgha_role', { role: 'replica' })).toBe(0);
    expect(m.value('pgha_leader')).toBe(1);
    expect(m.value('pgha_term')).toBe(4);
    // Unknown is no sample, never a 0 that would read as "caught up".
    expect(m.find('pgha_replication_lag_bytes')).toHaveLength(0);
    expect(m.find('pgha_replication_lag_seconds')).toHaveLength(0);
  });

  test('counts fences by reason class, restarts and keepalive latencies', async () => {
    const metrics = new AgentMetrics({ cluster: 'demo', member: 'demo-0', facts: () => replica });
    let m = await scrape(metrics);
    expect(m.value('pgha_fences_total', { reason: 'lease-deadline' })).toBe(0);
    metrics.fenced('lease deadline passed');
    metrics.fenced('postgres is out of recovery but our lease deadline passed');
    metrics.fenced('writable without holding the leader record');
    metrics.restarted();
    metrics.keepaliveAcknowledged(3);
    metrics.keepaliveAcknowledged(300);
    m = await scrape(metrics);
    expect(m.value('pgha_fences_total', { reason: 'lease-deadline' })).toBe(2);
    expect(m.value('pgha_fences_total', { reason: 'not-leader' })).toBe(1);
    expect(m.value('pgha_fences_total', { reason: 'watchdog' })).toBe(0);
    expect(m.value('pgha_postgres_restarts_total')).toBe(1);
    expect(m.value('pgha_lease_keepalive_latency_seconds_count')).toBe(2);
    expect(m.value('pgha_lease_keepalive_latency_seconds_sum')).toBeCloseTo(0.303, 6);
    expect(m.value('pgha_lease_keepalive_latency_seconds_bucket', { le: '0.005' })).toBe(1);
    expect(m.value('pgha_lease_keepalive_latency_seconds_bucket', { le: '+Inf' })).toBe(2);
  });

  test('exports process metrics only when asked', async () => {
    const plain = await scrape(new AgentMetrics({ cluster: 'c', member: 'c-0', facts: () => replica }));
    expect(plain.samples.some((s) => s.name.startsWith('pgha_agent_'))).toBe(false);
    const full = await scrape(
      new AgentMetrics({ cluster: 'c', member: 'c-0', facts: () => replica, processMetrics: true }),
    );
    expect(full.find('pgha_agent_process_cpu_seconds_total').length).toBe(1);
  });

  test.each([
    ['lease deadline passed', 'lease-deadline'],
    ['lease deadline passed (postgres already killed)', 'lease-deadline'],
    ['postgres is out of recovery but our lease deadline passed', 'lease-deadline'],
    ['writable without holding the leader record', 'not-leader'],
    ['postgres is out of recovery but we hold no leader record', 'not-leader'],
    ['postgres is out of recovery but we hold no valid leader record', 'etcd-unreachable'],
    ['the watchdog cannot run', 'watchdog'],
    ['something new', 'other'],
  ])('classifies the fence reason "%s" as %s', (reason, kind) => {
    expect(fenceReasonClass(reason)).toBe(kind);
  });
});

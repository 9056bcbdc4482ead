import { describe, expect, it } from 'vitest';
import {
  type ClusterEvent,
  clusterEventTypes,
  describeEvent,
  type PrimaryEndpoint,
  primaryChangeReasons,
} from './events.js';

function endpoint(overrides: Partial<PrimaryEndpoint> = {}): PrimaryEndpoint {
  return { member: 'demo-1', host: '10.0.0.2', port: 5432, term: 4, timeline: 3, writable: true, ...overrides };
}

const oneOfEach: Record<ClusterEvent['type'], ClusterEvent> = {
  'primary-changed': { type: 'primary-changed', previous: null, current: endpoint(), term: 4, reason: 'initial' },
  'no-primary': { type: 'no-primary', previous: null, term: 4 },
  'discovery-error': { type: 'discovery-error', error: new Error('connect ECONNREFUSED 127.0.0.1:2379') },
  'discovery-stale': { type: 'discovery-stale', sinceMillis: 15_000 },
  'discovery-restored': { type: 'discovery-restored' },
};

describe('describeEvent', () => {
  it('describes a first primary with its address, term and reason', () => {
    expect(describeEvent(oneOfEach['primary-changed'])).toBe(
      'primary is now demo-1 (10.0.0.2:5432) in term 4 (initial)',
    );
  });

  it('names the previous primary when the primary changes', () => {
    const event: ClusterEvent = {
      type: 'primary-changed',
      previous: endpoint({ member: 'demo-0', host: '10.0.0.1', term: 3 }),
      current: endpoint({ term: 4 }),
      term: 4,
      reason: 'failover',
    };
    expect(describeEvent(event)).toBe('primary is now demo-1 (10.0.0.2:5432) in term 4, was demo-0 (failover)');
  });

  it.each(primaryChangeReasons)('mentions the reason %s', (reason) => {
    const text = describeEvent({ type: 'primary-changed', previous: null, current: endpoint(), term: 4, reason });
    expect(text.endsWith(`(${reason})`)).toBe(true);
  });

  it('describes a missing primary with its term', () => {
    expect(describeEvent(oneOfEach['no-primary'])).toBe('no primary in term 4');
  });

  it('names the last primary when there is no primary any more', () => {
    expect(describeEvent({ type: 'no-primary', previous: endpoint({ member: 'demo-0' }), term: 5 })).toBe(
      'no primary in term 5; last was demo-0',
    );
  });

  it('includes the message of a discovery error', () => {
    expect(describeEvent(oneOfEach['discovery-error'])).toBe('discovery error: connect ECONNREFUSED 127.0.0.1:2379');
  });

  it('says for how long discovery has been stale', () => {
    expect(describeEvent(oneOfEach['discovery-stale'])).toBe('discovery stale: etcd unanswered for 15000 ms');
  });

  it('says when discovery is restored', () => {
    expect(describeEvent(oneOfEach['discovery-restored'])).toBe('discovery restored');
  });

  it('gives every event type its own one-line description', () => {
    expect(Object.keys(oneOfEach).sort()).toEqual([...clusterEventTypes].sort());
    const lines = clusterEventTypes.map((type) => describeEvent(oneOfEach[type]));
    expect(new Set(lines).size).toBe(clusterEventTypes.length);
    for (const line of lines) expect(line).toMatch(/^[^\n]+$/);
  });
});

import { describe, expect, it } from 'vitest';
import { type PodStatusInput, podStatus } from './pod-spec.js';

const base: PodStatusInput = {
  pod: { metadata: { name: 'p', namespace: 'ns', uid: 'u1' }, spec: { containers: [] } },
  ip: '198.18.1.2',
  hostIP: '198.18.1.1',
  startTime: '2026-12-01T00:00:00Z',
  terminating: false,
  containers: [],
  conditions: new Map(),
  now: '2026-12-01T00:00:01Z',
};
const container = (over: Partial<PodStatusInput['containers'][number]>): PodStatusInput['containers'][number] => ({
  spec: { name: 'c', image: 'img' },
  state: { kind: 'running', startedAt: '2026-12-01T00:00:00Z' },
  restartCount: 0,
  everStarted: true,
  started: true,
  ready: true,
  ...over,
});
const conditionOf = (status: Record<string, unknown>, type: string) =>
  (status.conditions as { type: string; status: string; lastTransitionTime: string }[]).find((c) => c.type === type)!;

describe('podStatus', () => {
  it('is Pending until every container started, Running after; Ready only when all are ready and running', () => {
    const pending = podStatus({ ...base, containers: [container({ everStarted: false, ready: false })] });
    expect(pending.status.phase).toBe('Pending');
    expect(pending.ready).toBe(false);
    const running = podStatus({ ...base, containers: [container({})] });
    expect(running.status.phase).toBe('Running');
    expect(running.ready).toBe(true);
    expect(conditionOf(running.status, 'Ready').status).toBe('True');
    expect(podStatus({ ...base, terminating: true, containers: [container({})] }).ready).toBe(false);
  });

  it('keeps a condition transition time while its status holds, and moves it when the status changes', () => {
    const first = podStatus({ ...base, containers: [container({})] });
    const same = podStatus({ ...base, containers: [container({})], conditions: first.conditions, now: 'later' });
    expect(conditionOf(same.status, 'Ready').lastTransitionTime).toBe(base.now);
    const lost = podStatus({
      ...base,
      containers: [container({ ready: false })],
      conditions: same.conditions,
      now: 'later',
    });
    expect(conditionOf(lost.status, 'Ready')).toMatchObject({ status: 'False', lastTransitionTime: 'later' });
    expect(first.conditions.get('Ready')?.lastTransitionTime).toBe(base.now); // the input map is not changed
  });

  it('finishes pods only under a restart policy that lets containers finish, and reports the signal number', () => {
    const terminated = {
      kind: 'terminated' as const,
      exitCode: 137,
      signal: 'SIGKILL',
      reason: 'Error',
      startedAt: 'a',
      finishedAt: 'b',
    };
    const never = { ...base.pod, spec: { containers: [], restartPolicy: 'Never' as const } };
    const failed = podStatus({ ...base, pod: never, containers: [container({ state: terminated })] });
    expect(failed.status.phase).toBe('Failed');
    const statuses = failed.status.containerStatuses as { state: { terminated: { signal: number } } }[];
    expect(statuses[0]!.state.terminated.signal).toBe(9);
    expect(podStatus({ ...base, containers: [container({ state: terminated })] }).status.phase).toBe('Running');
  });
});

// LeaseKeeper with a fake etcd lease client (grant, keepalive streams) and fake
// timers: which send time an answer is credited to, when a stalled stream is
// replaced, and when the deadline passes. Pure: no etcd, no sockets.
import { EventEmitter } from 'node:events';
import type { Etcd3 } from 'etcd3';
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import type { Clock } from '../clock.js';
import { LeaseKeeper } from './lease-keeper.js';

/** A keepalive stream: records what was written, answers when the test says so. */
class FakeStream extends EventEmitter {
  readonly writes: unknown[] = [];
  ended = false;
  write(request: unknown): boolean {
    this.writes.push(request);
    return true;
  }
  end(): void {
    this.ended = true;
  }
  /** etcd's answer to the oldest unanswered keepalive of this stream. */
  answer(ttlSeconds = 2): void {
    this.emit('data', { ID: '7', TTL: String(ttlSeconds) });
  }
}

function fakeEtcd() {
  const streams: FakeStream[] = [];
  const client = {
    leaseClient: {
      leaseGrant: async (request: { TTL: number }) => ({ ID: '7', TTL: String(request.TTL) }),
      leaseKeepAlive: async () => {
        const stream = new FakeStream();
        streams.push(stream);
        return stream;
      },
      leaseRevoke: async () => ({}),
    },
  } as unknown as Etcd3;
  return { client, streams };
}

const clock: Clock = { now: () => Date.now(), date: () => new Date() };
const timing = { ttlMillis: 2000, keepaliveIntervalMillis: 250, fencingMarginMillis: 500 };

describe('LeaseKeeper', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 0 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  async function granted(t = timing) {
    const { client, streams } = fakeEtcd();
    const keeper = new LeaseKeeper(client, t, clock);
    const renewed: number[] = [];
    const expired: number[] = [];
    keeper.on('renewed', (deadline: number) => renewed.push(deadline));
    keeper.on('expired', () => expired.push(Date.now()));
    await keeper.grant();
    return { keeper, streams, renewed, expired };
  }

  test('starts with a deadline of the grant request time + TTL − margin', async () => {
    const { keeper } = await granted();
    expect(keeper.deadline()).toBe(1500);
    await vi.advanceTimersByTimeAsync(1499);
    expect(keeper.isValid()).toBe(true);
    await vi.advanceTimersByTimeAsync(1);
    expect(keeper.isValid()).toBe(false); // nothing was answered: past the deadline
    keeper.stop();
  });

  test("credits an answer to its keepalive's send time, not to the time the answer arrives", async () => {
    const { keeper, streams, renewed } = await granted();
    await vi.advanceTimersByTimeAsync(250); // first keepalive sent at 250
    expect(streams).toHaveLength(1);
    expect(streams[0]!.writes).toEqual([{ ID: '7' }]);
    await vi.advanceTimersByTimeAsync(200); // answered at 450
    streams[0]!.answer();
    expect(renewed).toEqual([250 + 2000 - 500]);
    expect(keeper.deadline()).toBe(1750);
    keeper.stop();
  });

  test("reports each answered keepalive's latency, from its send to its answer (the latency metric)", async () => {
    const { keeper, streams } = await granted();
    const latencies: number[] = [];
    keeper.on('acknowledged', (millis: number) => latencies.push(millis));
    await vi.advanceTimersByTimeAsync(500); // sends at 250 and 500
    await vi.advanceTimersByTimeAsync(30); // both answered at 530
    streams[0]!.answer();
    streams[0]!.answer();
    streams[0]!.answer(); // a stray answer with no send left: no latency
    expect(latencies).toEqual([280, 30]);
    keeper.stop();
  });

  test('answers on one stream are matched to its sends in order', async () => {
    const { keeper, streams, renewed } = await granted();
    await vi.advanceTimersByTimeAsync(500); // sends at 250 and 500
    streams[0]!.answer();
    streams[0]!.answer();
    expect(renewed).toEqual([1750, 2000]);
    streams[0]!.answer(); // a stray answer with no send left: credits nothing
    expect(renewed).toEqual([1750, 2000]);
    expect(keeper.deadline()).toBe(2000);
    keeper.stop();
  });

  test('replaces a stream whose oldest keepalive is unanswered for two intervals (at least 500 ms)', async () => {
    const { keeper, streams } = await granted();
    await vi.advanceTimersByTimeAsync(750); // sends at 250, 500, 750: 500 ms unanswered, not more
    expect(streams).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(250); // 1000: 750 ms unanswered → replaced, sent on the new one
    expect(streams).toHaveLength(2);
    expect(streams[0]!.ended).toBe(true);
    expect(streams[0]!.writes).toHaveLength(3);
    expect(streams[1]!.writes).toHaveLength(1);
    keeper.stop();
  });

  test('with a short interval the stall limit is still 500 ms', async () => {
    const { keeper, streams } = await granted({ ...timing, keepaliveIntervalMillis: 100 });
    await vi.advanceTimersByTimeAsync(600); // oldest sent at 100: 500 ms, not more
    expect(streams).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(streams).toHaveLength(2);
    keeper.stop();
  });

  test('a late answer on a replaced stream is credited to that stream’s own send, never to a newer one', async () => {
    const { keeper, streams, renewed } = await granted();
    await vi.advanceTimersByTimeAsync(1000); // old stream: 250, 500, 750; replaced at 1000, new stream: 1000
    expect(streams).toHaveLength(2);
    const [old, current] = streams as [FakeStream, FakeStream];
    old.answer(); // the old stream's first keepalive (sent at 250), answered late
    expect(renewed).toEqual([1750]);
    expect(keeper.deadline()).toBe(1750); // not 1000 + 1500
    await vi.advanceTimersByTimeAsync(250); // new stream: 1250
    current.answer(); // its send at 1000
    expect(keeper.deadline()).toBe(2500);
    old.answer(); // the old stream's send at 500: older than what is credited, ignored
    old.answer();
    expect(keeper.deadline()).toBe(2500);
    expect(renewed).toEqual([1750, 2500]);
    keeper.stop();
  });

  test('a stream that ends or fails is replaced at once, not at the next tick', async () => {
    const { keeper, streams } = await granted();
    await vi.advanceTimersByTimeAsync(250);
    streams[0]!.emit('error', new Error('connection reset'));
    await vi.advanceTimersByTimeAsync(0);
    expect(streams).toHaveLength(2);
    expect(streams[1]!.writes).toHaveLength(1); // sent at 250, on the new stream
    streams[1]!.emit('end');
    await vi.advanceTimersByTimeAsync(0);
    expect(streams).toHaveLength(3);
    streams[0]!.answer(); // the failed stream's send: still its own, credited as 250
    expect(keeper.deadline()).toBe(1750);
    keeper.stop();
  });

  test('emits expired when etcd answers that the lease is gone, and does not extend the deadline', async () => {
    const { keeper, streams, renewed, expired } = await granted();
    await vi.advanceTimersByTimeAsync(250);
    streams[0]!.answer(0);
    expect(expired).toEqual([250]);
    expect(renewed).toEqual([]);
    expect(keeper.deadline()).toBe(1500);
    keeper.stop();
  });

  test('stop() ends the stream and sends nothing more', async () => {
    const { keeper, streams } = await granted();
    await vi.advanceTimersByTimeAsync(250);
    keeper.stop();
    await vi.advanceTimersByTimeAsync(2000);
    expect(streams).toHaveLength(1);
    expect(streams[0]!.ended).toBe(true);
    expect(streams[0]!.writes).toHaveLength(1);
  });
});

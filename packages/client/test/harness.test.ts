import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, type TestCluster } from '../../../testing/postgres.js';

describe('test harness', () => {
  let cluster: TestCluster;
  beforeAll(async () => {
    cluster = await startTestCluster({ standbys: 1 });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('starts a writable primary and a streaming standby that can be promoted', async () => {
    expect(await cluster.primary.isInRecovery()).toBe(false);
    const standby = cluster.standbys[0]!;
    expect(await standby.isInRecovery()).toBe(true);
    await cluster.primary.stop();
    await standby.promote();
    expect(await standby.isInRecovery()).toBe(false);
  });
});

import { describe, expect, it } from 'vitest';
import { backgroundThresholdBytes, writebackAdvice } from './writeback-limits.js';

const gib = 1024 ** 3;
const defaults = {
  dirtyBackgroundBytes: 0,
  dirtyBackgroundRatio: 10,
  dirtyBytes: 0,
  dirtyRatio: 20,
  memTotalBytes: 24 * gib,
};

describe('writebackAdvice', () => {
  it("advises small limits under the kernel's defaults on a large machine (10 % of 24 GiB)", () => {
    expect(backgroundThresholdBytes(defaults)).toBeCloseTo(2.4 * gib, -6);
    expect(writebackAdvice(defaults)).toMatch(
      /2458 MiB .*sysctl -w vm\.dirty_background_bytes=16777216 vm\.dirty_bytes=134217728/,
    );
  });

  it('says nothing when the byte limits are small (they win over the ratios)', () => {
    expect(
      writebackAdvice({ ...defaults, dirtyBackgroundBytes: 16 * 1024 ** 2, dirtyBytes: 128 * 1024 ** 2 }),
    ).toBeNull();
  });

  it('says nothing on a small machine whose ratio stays under 256 MiB', () => {
    expect(writebackAdvice({ ...defaults, memTotalBytes: 2 * gib })).toBeNull();
  });
});

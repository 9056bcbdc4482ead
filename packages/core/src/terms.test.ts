import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { initialTerm, isCurrentTerm, newestTerm, nextTerm } from './terms.js';

const term = fc.nat({ max: Number.MAX_SAFE_INTEGER - 1 });

describe('terms', () => {
  it('starts at term 0 before any leader', () => {
    expect(initialTerm).toBe(0);
    expect(nextTerm(initialTerm)).toBe(1);
  });

  it('makes each new leadership newer than the last', () => {
    expect(nextTerm(41)).toBe(42);
    fc.assert(
      fc.property(term, (t) => {
        expect(nextTerm(t)).toBe(t + 1);
        expect(isCurrentTerm(nextTerm(t), t)).toBe(true);
        expect(isCurrentTerm(t, nextTerm(t))).toBe(false);
      }),
    );
  });

  it('treats equal and newer terms as current and older ones as stale', () => {
    expect(isCurrentTerm(3, 3)).toBe(true);
    expect(isCurrentTerm(4, 3)).toBe(true);
    expect(isCurrentTerm(2, 3)).toBe(false);
  });

  it('finds the newest of the terms given, ignoring missing ones', () => {
    expect(newestTerm()).toBe(initialTerm);
    expect(newestTerm(null, undefined)).toBe(initialTerm);
    expect(newestTerm(3, null, 7, undefined, 5)).toBe(7);
  });

  it('agrees with Math.max floored at the initial term', () => {
    fc.assert(
      fc.property(fc.array(fc.option(term, { nil: undefined })), fc.array(fc.option(term)), (a, b) => {
        const all = [...a, ...b];
        const present = all.filter((t): t is number => t !== null && t !== undefined);
        const newest = newestTerm(...all);
        expect(newest).toBe(Math.max(initialTerm, ...present));
        for (const t of present) expect(isCurrentTerm(newest, t)).toBe(true);
      }),
    );
  });
});

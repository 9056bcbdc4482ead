/**
 * The time source of every shell. Decisions never read the clock; shells read it
 * here and pass `now` in, so tests can substitute a fake.
 */
export interface Clock {
  /** Milliseconds on a monotonic scale (not wall time). */
  now(): number;
  /** Wall time, for records. */
  date(): Date;
}

/** The real clock: performance.now() for deadlines (immune to wall-clock steps), Date for records. */
export const systemClock: Clock = {
  now: () => performance.now(),
  date: () => new Date(),
};

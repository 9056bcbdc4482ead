// Bounded waits for tests: every wait has a deadline and says what it waited for.

/** Anything with eventemitter-style on/off (Node's EventEmitter or eventemitter3). */
export interface Emitterish {
  // biome-ignore lint/suspicious/noExplicitAny: any emitter's listener signature
  on(event: string, listener: (...args: any[]) => void): unknown;
  // biome-ignore lint/suspicious/noExplicitAny: any emitter's listener signature
  off(event: string, listener: (...args: any[]) => void): unknown;
}

/** Resolves with the first `event` whose first argument satisfies `predicate`, or rejects after `timeoutMillis`. */
// biome-ignore lint/suspicious/noExplicitAny: callers name the payload type when they care
export function nextEvent<T = any>(
  emitter: Emitterish,
  event: string,
  predicate: (value: T) => boolean = () => true,
  timeoutMillis = 10_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const listener = (value: T) => {
      if (!predicate(value)) return;
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve(value);
    };
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`timed out after ${timeoutMillis} ms waiting for event "${event}"`));
    }, timeoutMillis);
    emitter.on(event, listener);
  });
}

/** Polls `probe` until it returns a value other than undefined/false, or rejects after `timeoutMillis`. */
export async function until<T>(
  what: string,
  probe: () => T | Promise<T>,
  timeoutMillis = 10_000,
): Promise<Exclude<T, false | undefined>> {
  const deadline = Date.now() + timeoutMillis;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value as Exclude<T, false | undefined>;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMillis} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

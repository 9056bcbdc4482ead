// What the tests against the test API server share: a JSON call and a bounded poll.

/** A JSON call to the API server whose URL `baseUrl()` gives (read per call: servers start in beforeAll). */
export function apiCaller(baseUrl: () => string) {
  return async function call(method: string, path: string, body?: unknown, contentType = 'application/json') {
    const res = await fetch(`${baseUrl()}${path}`, {
      method,
      headers: { 'content-type': contentType },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    // biome-ignore lint/suspicious/noExplicitAny: JSON read by path in assertions
    return { status: res.status, body: (await res.json()) as any };
  };
}

/**
 * Reads until `ok` holds, or throws after `millis` naming what it waited for, the
 * last value read and `context()` (a process's output, recent logs).
 */
export async function pollUntil<T>(
  what: string,
  read: () => Promise<T> | T,
  ok: (v: T) => boolean,
  options: { millis: number; intervalMillis?: number; context?: () => string },
): Promise<T> {
  const deadline = Date.now() + options.millis;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline) {
      const context = options.context?.() ?? '';
      throw new Error(
        `timed out waiting for ${what}: last saw ${JSON.stringify(v).slice(0, 400)}${context === '' ? '' : `\n${context}`}`,
      );
    }
    await new Promise((r) => setTimeout(r, options.intervalMillis ?? 50));
  }
}

/**
 * What the simulated cluster's controller shells share: a small JSON client for the
 * test API server (errors carry the HTTP code and the Status reason) and a polling
 * loop that can be stopped (stop waits for the pass in flight). Imperative shell.
 */

/** A failed API call: the HTTP code (0: no answer) and the Status body's reason and message. */
export class KubeCallError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

export interface KubeList<T> {
  metadata: { resourceVersion?: string };
  items: T[];
}

/** A JSON client for the API server at `apiUrl`: `call(method, path, body?)` resolves with the body or throws KubeCallError. */
export function kubeClient(apiUrl: string) {
  return async function call<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${apiUrl}${path}`, {
        method,
        headers: { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new KubeCallError(0, 'Unreachable', `${method} ${path}: ${(error as Error).message}`);
    }
    const text = await res.text();
    if (!res.ok) {
      let status: { reason?: string; message?: string } = {};
      try {
        status = JSON.parse(text);
      } catch {}
      throw new KubeCallError(
        res.status,
        status.reason ?? '',
        `${method} ${path}: ${res.status} ${status.message ?? text}`,
      );
    }
    return (text === '' ? undefined : JSON.parse(text)) as T;
  };
}

export type KubeCall = ReturnType<typeof kubeClient>;

/**
 * Runs `pass` every `intervalMillis` (the next pass starts that long after the
 * previous one ended, so passes never overlap). A pass that throws is logged and
 * the loop goes on. Returns `stop`, which resolves once the pass in flight ended.
 */
export function startLoop(pass: () => Promise<void>, intervalMillis: number, log: (line: string) => void) {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const run = () => {
    running = pass()
      .catch((error: unknown) => log(`pass failed: ${(error as Error).message}`))
      .finally(() => {
        if (!stopped) timer = setTimeout(run, intervalMillis);
      });
  };
  run();
  return async () => {
    stopped = true;
    clearTimeout(timer);
    await running;
  };
}

/**
 * Logs a failure line only when the previous pass did not log the same line: a
 * pass every 100 ms would otherwise repeat a lasting rejection ten times a second.
 * Call `endPass()` after each pass.
 */
export function repeatFilter(log: (line: string) => void) {
  let previous = new Set<string>();
  let current = new Set<string>();
  return {
    failed(line: string): void {
      current.add(line);
      if (!previous.has(line)) log(line);
    },
    endPass(): void {
      previous = current;
      current = new Set();
    },
  };
}

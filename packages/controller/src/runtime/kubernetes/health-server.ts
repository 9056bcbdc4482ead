/**
 * The operator's probe endpoints: `GET /healthz` (liveness) and `GET /readyz`
 * (readiness), 200 or 503 with a one-line text body saying why. What they answer
 * is decided elsewhere (decide-operator-health.ts); this only serves it.
 *
 * May import: node:http.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { OperatorHealth } from './decide-operator-health.js';

/** A running probe server. */
export interface HealthServer {
  /** The port it listens on (the one asked for, or the one the kernel chose for 0). */
  port: number;
  close(): Promise<void>;
}

/** Listens on `port` (0: any free port) and answers the probes from `health()` at each request. */
export async function startHealthServer(options: {
  port: number;
  host?: string;
  health: () => OperatorHealth;
}): Promise<HealthServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const probe = path === '/healthz' ? 'healthz' : path === '/readyz' ? 'readyz' : null;
    if (probe === null || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /healthz or /readyz\n');
      return;
    }
    const answer = options.health()[probe];
    res.writeHead(answer.ok ? 200 : 503, { 'content-type': 'text/plain' }).end(`${answer.message}\n`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

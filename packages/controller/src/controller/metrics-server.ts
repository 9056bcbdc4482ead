import { createServer } from 'node:http';
import { apiUrl, listenOrExplain, sendMetrics } from '../agent/health-server.js';
import type { Logger } from '../log.js';

/** Where the controller's metrics endpoint listens and what it serves. */
export interface MetricsServerOptions {
  /** Address to bind (`127.0.0.1`, `0.0.0.0`, `::`). */
  readonly host: string;
  /** TCP port; 0 lets the OS choose (tests). */
  readonly port: number;
  /** The Prometheus text and its content type, computed per scrape. */
  readonly scrape: () => Promise<{ readonly contentType: string; readonly body: string }>;
  readonly log: Logger;
}

/** A listening metrics endpoint. */
export interface MetricsServer {
  /** The port it listens on (the OS's choice when asked for 0). */
  readonly port: number;
  /** `http://host:port/metrics`. */
  readonly url: string;
  /** Stops listening and closes open connections. Never throws. */
  close(): Promise<void>;
}

/**
 * Serves `GET` (or `HEAD`) `/metrics` for `pgha controller --metrics-port`; any other
 * path answers 404, any other method 405. A failing scrape answers 500 and is logged:
 * nothing a scraper does can take the controller down.
 *
 * @throws PghaError `invalid-option` when the address cannot be bound, naming the flags to change.
 */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://metrics').pathname.replace(/(.)\/+$/, '$1');
    const head = req.method === 'HEAD';
    if (req.method !== 'GET' && !head) {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
      res.end(`method ${req.method} not allowed: use GET\n`);
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end(`no such endpoint ${path}: the controller serves /metrics\n`);
      return;
    }
    sendMetrics(res, options.scrape, head, options.log, 'metrics: scrape');
  });
  server.requestTimeout = 5000;
  server.headersTimeout = 5000;
  server.keepAliveTimeout = 5000;
  server.maxConnections = 64;
  server.on('clientError', (_error, socket) => socket.destroy());
  await listenOrExplain(
    server,
    options,
    "the controller's metrics",
    'choose another --metrics-port (`pgha up --metrics-port BASE`) or --metrics-listen address',
  );
  server.on('error', (error) => options.log.warn(`metrics: ${error.message}`));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  const url = `${apiUrl(options.host, port)}/metrics`;
  options.log.info(`metrics on ${url}`);
  return {
    port,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

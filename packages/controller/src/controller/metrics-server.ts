import { createServer, type Server } from 'node:http';
import { PghaError } from '@pgha/core';
import { apiUrl } from '../agent/health-server.js';
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
    options.scrape().then(
      ({ contentType, body }) => {
        res.writeHead(200, {
          'content-type': contentType,
          'content-length': Buffer.byteLength(body),
          'cache-control': 'no-store',
        });
        res.end(head ? undefined : body);
      },
      (error: Error) => {
        options.log.warn(`metrics: scrape failed: ${error.message}`);
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('metrics failed\n');
      },
    );
  });
  server.requestTimeout = 5000;
  server.headersTimeout = 5000;
  server.keepAliveTimeout = 5000;
  server.maxConnections = 64;
  server.on('clientError', (_error, socket) => socket.destroy());
  await listen(server, options);
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

function listen(server: Server, o: MetricsServerOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      const why =
        error.code === 'EADDRINUSE'
          ? 'the port is already in use'
          : error.code === 'EADDRNOTAVAIL'
            ? 'that address is not one of this host'
            : error.code === 'EACCES'
              ? 'permission denied'
              : error.message;
      reject(
        new PghaError(
          'invalid-option',
          `the controller's metrics cannot listen on ${apiUrl(o.host, o.port)}: ${why}; choose another --metrics-port (\`pgha up --metrics-port BASE\`) or --metrics-listen address`,
          { cause: error },
        ),
      );
    };
    server.once('error', onError);
    server.listen({ host: o.host, port: o.port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

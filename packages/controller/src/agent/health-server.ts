import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { PghaError } from '@pgha/core';
import { decideHealth, type HealthSnapshot, healthPaths, parseLagBytes } from '../decide/health.js';
import type { Logger } from '../log.js';

/** Where the health API listens and what it asks the agent. */
export interface HealthServerOptions {
  /** Address to bind (`0.0.0.0`, `::`, or one interface's address). */
  readonly host: string;
  /** TCP port; 0 lets the OS choose (tests). */
  readonly port: number;
  /** What the agent knows now; called once per request, must not throw. */
  readonly snapshot: () => HealthSnapshot;
  /** `GET /metrics`: the Prometheus text and its content type. Absent: 404. */
  readonly metrics?: () => Promise<{ readonly contentType: string; readonly body: string }>;
  /** Answers `POST /failsafe` (failsafe mode, agent/failsafe.ts); the agent always passes it. */
  readonly failsafe?: (req: IncomingMessage, res: ServerResponse) => void;
  /** HTTPS with this certificate and key (PEM, `--api-cert`/`--api-key`). Absent or null: plain HTTP. */
  readonly tls?: { readonly cert: string; readonly key: string } | null;
  readonly log: Logger;
}

/** A listening health API. */
export interface HealthServer {
  /** The port it listens on (the OS's choice when asked for 0). */
  readonly port: number;
  /** Stops listening and closes idle and open connections. Never throws. */
  close(): Promise<void>;
}

/**
 * `http://host:port` (`https://` with `tls`) for a member record; IPv6 literals get brackets.
 */
export function apiUrl(host: string, port: number, tls = false): string {
  return `${tls ? 'https' : 'http'}://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`;
}

/**
 * Starts the agent's health API: `GET` (or `HEAD`) `/liveness`, `/readiness`,
 * `/health`, `/primary` (`/leader`, `/read-write`), `/replica` (`/read-only`, with
 * `?lag=16MB`). Each answers 200 or 503 with a small JSON body (see
 * {@link decideHealth}); unknown paths 404, other methods 405, a bad `lag` 400.
 * `/metrics` answers the agent's Prometheus metrics (see agent-metrics.ts).
 *
 * Answers come from what the control loop last saw (no query to postgres or etcd per
 * request), so a probe is cheap and cannot pile up on a hung postgres. Nothing the
 * server meets after it listens can take the agent down: request handling is wrapped,
 * server and socket errors are logged.
 *
 * @throws PghaError `invalid-option` when the address cannot be bound (in use, not an
 *   address of this host), naming the flags to change.
 */
export async function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    try {
      if (options.failsafe !== undefined && new URL(req.url ?? '/', 'http://health').pathname === '/failsafe')
        options.failsafe(req, res);
      else handle(req, res, options);
    } catch (error) {
      options.log.warn(`health API: ${req.method} ${req.url} failed: ${(error as Error).message}`);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end('{"error":"internal error"}\n');
    }
  };
  const server =
    options.tls == null
      ? createServer(onRequest)
      : createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, onRequest);
  // Probes are tiny; nothing may hold the agent's sockets for long.
  server.requestTimeout = 5000;
  server.headersTimeout = 5000;
  server.keepAliveTimeout = 5000;
  server.maxConnections = 128;
  server.on('clientError', (_error, socket) => socket.destroy());
  await listenOrExplain(
    server,
    options,
    'the health API',
    'choose another --api-port (`pgha up --api-port BASE`) or --api-listen address',
  );
  server.on('error', (error) => options.log.warn(`health API: ${error.message}`));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  options.log.info(`health API listening on ${apiUrl(options.host, port, options.tls != null)}`);
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * Binds `server`, turning a bind failure into a PghaError that says which flags to
 * change (`what`: "the health API"; `flags`: the options that pick the address).
 */
export function listenOrExplain(
  server: Server | HttpsServer,
  o: { readonly host: string; readonly port: number },
  what: string,
  flags: string,
): Promise<void> {
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
        new PghaError('invalid-option', `${what} cannot listen on ${apiUrl(o.host, o.port)}: ${why}; ${flags}`, {
          cause: error,
        }),
      );
    };
    server.once('error', onError);
    server.listen({ host: o.host, port: o.port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function send(res: ServerResponse, status: number, body: unknown, head: boolean): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(head ? undefined : text);
}

/** Answers a scrape with `metrics()`'s text (500, logged with `label`, when it fails). */
export function sendMetrics(
  res: ServerResponse,
  metrics: NonNullable<HealthServerOptions['metrics']>,
  head: boolean,
  log: Logger,
  label = 'health API: /metrics',
): void {
  metrics().then(
    ({ contentType, body }) => {
      res.writeHead(200, {
        'content-type': contentType,
        'content-length': Buffer.byteLength(body),
        'cache-control': 'no-store',
      });
      res.end(head ? undefined : body);
    },
    (error: Error) => {
      log.warn(`${label} failed: ${error.message}`);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('metrics failed\n');
    },
  );
}

function handle(req: IncomingMessage, res: ServerResponse, o: HealthServerOptions): void {
  const url = new URL(req.url ?? '/', 'http://health');
  const head = req.method === 'HEAD';
  if (req.method !== 'GET' && !head) {
    res.setHeader('allow', 'GET, HEAD');
    send(res, 405, { error: `method ${req.method} not allowed: use GET` }, false);
    return;
  }
  const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, '') : url.pathname;
  if (path === '/metrics' && o.metrics !== undefined) {
    sendMetrics(res, o.metrics, head, o.log);
    return;
  }
  const check = healthPaths[path];
  if (check === undefined) {
    send(res, 404, { error: `no such endpoint ${path}`, endpoints: Object.keys(healthPaths) }, head);
    return;
  }
  const lag = url.searchParams.get('lag');
  let maxLagBytes: number | null = null;
  if (lag !== null) {
    maxLagBytes = parseLagBytes(lag);
    if (maxLagBytes === null) {
      send(res, 400, { error: `lag=${lag} is not a size: use bytes or e.g. 16MB` }, head);
      return;
    }
  }
  const decision = decideHealth(o.snapshot(), { check, maxLagBytes });
  send(res, decision.status, decision.body, head);
}

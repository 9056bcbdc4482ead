import { createServer } from 'node:net';
import { PghaError } from '@pgha/core';

/** Whether nothing listens on `host:port` (we can bind it ourselves). */
export function isPortFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * Checks that every port is free, so a cluster never starts half-way and then
 * fails on a bind.
 *
 * @throws PghaError `invalid-option` naming each busy port and what uses it.
 */
export async function assertPortsFree(
  ports: ReadonlyArray<{ port: number; use: string }>,
  host = '127.0.0.1',
): Promise<void> {
  const busy: string[] = [];
  for (const { port, use } of ports) if (!(await isPortFree(port, host))) busy.push(`${port} (for ${use})`);
  if (busy.length > 0) {
    throw new PghaError(
      'invalid-option',
      `port${busy.length > 1 ? 's' : ''} already in use on ${host}: ${busy.join(', ')}; stop what uses ${busy.length > 1 ? 'them' : 'it'} or choose others (--port BASE, --etcd-port PORT, --api-port BASE)`,
    );
  }
}

/** A port the OS reports free right now (for tests and ad-hoc clusters). */
export function findFreePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ port: 0, host }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * The first of `count` consecutive loopback ports that are free now, from a random
 * base in 20000-54999 (a local cluster's postgres, etcd and API ports).
 *
 * @throws PghaError `invalid-option` when 200 tries found none.
 */
export async function findFreePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 35_000);
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = await isPortFree(base + i);
    if (ok) return base;
  }
  throw new PghaError('invalid-option', `no ${count} consecutive free ports found on 127.0.0.1; free some ports`);
}

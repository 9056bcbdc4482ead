import { createServer } from 'node:net';

const taken = new Set<number>();

function probe(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(null));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => {
      const address = server.address();
      const bound = typeof address === 'object' && address !== null ? address.port : null;
      server.close(() => resolve(bound));
    });
  });
}

/**
 * A loopback port that is free now and not handed out before in this run (the
 * OS could otherwise return the same ephemeral port twice before anyone binds it).
 */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const port = await probe(0);
    if (port !== null && !taken.has(port)) {
      taken.add(port);
      return port;
    }
  }
  throw new Error('no free loopback port found');
}

/** `count` consecutive free loopback ports (for runtimes that take a base port). */
export async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 35_000);
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = !taken.has(base + i) && (await probe(base + i)) !== null;
    if (ok) {
      for (let i = 0; i < count; i++) taken.add(base + i);
      return base;
    }
  }
  throw new Error(`no ${count} consecutive free loopback ports found`);
}

// A TCP proxy on loopback that tests can black-hole: while blocked, it accepts
// connections and swallows bytes without forwarding them (like a partition where
// packets vanish), and it can cut every open connection.
import { connect, createServer, type Server, type Socket } from 'node:net';

/** A running proxy to `targetPort` on 127.0.0.1. */
export interface TcpProxy {
  readonly port: number;
  /** Stops forwarding: existing connections hang, new ones go nowhere. */
  blackhole(): void;
  /** Forwards again (connections cut or made while black-holed are not revived). */
  restore(): void;
  /** Destroys every open connection. */
  cutAll(): void;
  close(): Promise<void>;
}

/** Starts a proxy on a free port forwarding to `127.0.0.1:targetPort`. */
export function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  let blocked = false;
  const sockets = new Set<Socket>();
  const server: Server = createServer((inbound) => {
    sockets.add(inbound);
    inbound.on('close', () => sockets.delete(inbound));
    inbound.on('error', () => undefined);
    if (blocked) {
      inbound.on('data', () => undefined);
      return;
    }
    const outbound = connect(targetPort, '127.0.0.1');
    sockets.add(outbound);
    outbound.on('close', () => {
      sockets.delete(outbound);
      inbound.destroy();
    });
    outbound.on('error', () => undefined);
    inbound.on('close', () => outbound.destroy());
    inbound.on('data', (chunk) => {
      if (!blocked) outbound.write(chunk);
    });
    outbound.on('data', (chunk) => {
      if (!blocked) inbound.write(chunk);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      resolve({
        port,
        blackhole() {
          blocked = true;
        },
        restore() {
          blocked = false;
        },
        cutAll() {
          for (const s of sockets) s.destroy();
        },
        close() {
          for (const s of sockets) s.destroy();
          return new Promise((r) => server.close(() => r()));
        },
      });
    });
  });
}

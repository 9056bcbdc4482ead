// A single-member etcd on free loopback ports, in a directory of the caller's.
// Started directly (not through pgha's own helpers) so the baseline never depends
// on pgha code that is being changed.
import { join } from 'node:path';
import { freePort } from './ports.js';
import { isAlive, killAndWait, spawnDaemon, waitFor } from './processes.js';

/** A running etcd. */
export interface Etcd {
  /** `http://127.0.0.1:PORT` */
  readonly endpoint: string;
  readonly hostPort: string;
  readonly pid: number;
  stop(): Promise<void>;
}

/** Starts etcd with its data and log under `dir`; resolves once it reports healthy (bounded: 30 s). */
export async function startEtcd(dir: string, name = 'bench-etcd'): Promise<Etcd> {
  const clientPort = await freePort();
  const peerPort = await freePort();
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const child = spawnDaemon(
    'etcd',
    [
      '--name',
      name,
      '--data-dir',
      join(dir, 'etcd-data'),
      '--listen-client-urls',
      endpoint,
      '--advertise-client-urls',
      endpoint,
      '--listen-peer-urls',
      peer,
      '--initial-advertise-peer-urls',
      peer,
      '--initial-cluster',
      `${name}=${peer}`,
      '--initial-cluster-state',
      'new',
      '--log-level',
      'warn',
    ],
    { logFile: join(dir, 'etcd.log') },
  );
  const pid = child.pid;
  if (pid === undefined) throw new Error('etcd did not start (is it on PATH?)');
  const stop = () => killAndWait([pid], 'SIGTERM', 5000);
  try {
    await waitFor(
      `etcd at ${endpoint} to report healthy (log: ${join(dir, 'etcd.log')})`,
      async () => {
        if (!isAlive(pid)) throw new Error('etcd exited');
        const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
        return response.ok && ((await response.json()) as { health?: string }).health === 'true';
      },
      30_000,
      100,
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return { endpoint, hostPort: `127.0.0.1:${clientPort}`, pid, stop };
}

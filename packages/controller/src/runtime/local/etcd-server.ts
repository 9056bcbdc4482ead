import type { ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PghaError } from '@pgha/core';
import { assertEtcdReachable, createEtcdClient, type EtcdTlsFiles } from '../../adapters/etcd.js';
import { findEtcdBinary } from '../../adapters/prerequisites.js';
import { spawnOwned, stopChild } from '../../adapters/processes.js';

/** An etcd member started by pgha for a local cluster or a test (alone, unless `initialCluster` names peers). */
export interface EtcdServer {
  readonly endpoint: string;
  readonly pid: number;
  readonly child: ChildProcess;
  stop(): Promise<void>;
}

/** Options of {@link startEtcdServer}. */
export interface EtcdServerOptions {
  readonly dataDir: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly host?: string;
  readonly name?: string;
  readonly logFile?: string;
  readonly detached?: boolean;
  readonly startTimeoutMillis?: number;
  /**
   * `--initial-cluster` (`name=http://host:peerPort,...`) for a member of a multi-member
   * etcd (tests). Default: this member alone. Start all members together: none
   * answers before a quorum runs.
   */
  readonly initialCluster?: string;
  /** `--heartbeat-interval`. Default 100 ms. */
  readonly heartbeatIntervalMillis?: number;
  /** `--election-timeout`. Default 1000 ms. */
  readonly electionTimeoutMillis?: number;
  /**
   * Serve clients over TLS only (`https://`), requiring a client certificate signed by
   * `caFile` (`--client-cert-auth`: with authentication on, its CN is the user). The
   * start-up probe connects with `probe` (any certificate of that CA). Peers stay on
   * plain loopback http.
   */
  readonly tls?: {
    readonly certFile: string;
    readonly keyFile: string;
    readonly caFile: string;
    readonly probe: EtcdTlsFiles;
  };
}

/**
 * Starts etcd with its data in `dataDir` (reused when it exists) and waits until it
 * answers. The process dies with ours (see spawnOwned).
 *
 * @throws PghaError `missing-prerequisite` without an etcd binary, `etcd-unavailable`
 *   when it does not answer within the timeout (its log says why).
 */
export async function startEtcdServer(options: EtcdServerOptions): Promise<EtcdServer> {
  const binary = findEtcdBinary();
  const host = options.host ?? '127.0.0.1';
  const name = options.name ?? 'pgha-etcd';
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  const client = `${options.tls === undefined ? 'http' : 'https'}://${host}:${options.clientPort}`;
  const peer = `http://${host}:${options.peerPort}`;
  const child = spawnOwned(
    binary,
    [
      '--name',
      name,
      '--data-dir',
      join(options.dataDir),
      '--listen-client-urls',
      client,
      '--advertise-client-urls',
      client,
      '--listen-peer-urls',
      peer,
      '--initial-advertise-peer-urls',
      peer,
      '--initial-cluster',
      options.initialCluster ?? `${name}=${peer}`,
      '--initial-cluster-state',
      'new',
      // Small heartbeat and election so a local cluster is responsive; a single
      // member never holds elections against anyone, but it does wait one on start.
      '--heartbeat-interval',
      String(options.heartbeatIntervalMillis ?? 100),
      '--election-timeout',
      String(options.electionTimeoutMillis ?? 1000),
      '--log-level',
      'warn',
      ...(options.tls === undefined
        ? []
        : [
            '--cert-file',
            options.tls.certFile,
            '--key-file',
            options.tls.keyFile,
            '--trusted-ca-file',
            options.tls.caFile,
            '--client-cert-auth',
          ]),
    ],
    {
      logFile: options.logFile,
      detached: options.detached,
      env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? '' },
    },
  );
  const pid = child.pid;
  if (pid === undefined) throw new PghaError('missing-prerequisite', `could not start ${binary}`);
  const stop = () => stopChild(child, 'SIGTERM', 5000);
  const deadline = Date.now() + (options.startTimeoutMillis ?? 60_000);
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new PghaError(
        'etcd-unavailable',
        `etcd exited (${child.exitCode ?? child.signalCode}) right after starting${options.logFile ? `; see ${options.logFile}` : ''}`,
      );
    }
    // A new client per attempt: a gRPC channel whose first connections were refused
    // (etcd not listening yet) backs off before it dials again, and under load one
    // client kept failing "Waiting for LB pick" for the whole 20 s it was given.
    const probe = createEtcdClient({ endpoints: client, ...(options.tls ? { tls: options.tls.probe } : {}) }, 2000);
    try {
      await assertEtcdReachable(probe, client);
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        await stop();
        throw error;
      }
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      probe.close();
    }
  }
  return { endpoint: client, pid, child, stop };
}

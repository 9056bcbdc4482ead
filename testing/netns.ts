// Test support: real network partitions with Linux network namespaces. The
// namespaces themselves live in packages/controller/src/runtime/local/netns.ts (pgha
// check uses them too); this file adds a writer process that runs inside one.
import { spawn } from 'node:child_process';

export {
  createNetnsNetwork,
  ip,
  linkExists,
  listNetns,
  type NetnsHost,
  type NetnsNetwork,
  netnsUnavailableReason,
  pidsInNetns,
  processAlive,
  removeStaleNetworks,
  testNetworkCidr,
  tryIp,
} from '../packages/controller/src/runtime/local/netns.js';

/** One write acknowledged to a {@link startWriterIn} writer. */
export interface NetnsAck {
  readonly id: number;
  readonly member: string;
  readonly at: number;
  /** WAL insert position right after the row (`pg_current_wal_insert_lsn()`). */
  readonly lsn: string;
}

/** A writer process running inside a namespace. */
export interface NetnsWriter {
  readonly pid: number;
  readonly acks: NetnsAck[];
  /** Errors seen, by message (counted). */
  readonly errors: Map<string, number>;
  /** SIGTERM, then SIGKILL after `graceMillis`; resolves when the process has exited. */
  stop(graceMillis?: number): Promise<void>;
}

/**
 * Runs testing/netns-writer.ts inside `netns` (through `ip netns exec`, under
 * `setpriv --pdeathsig KILL` so it dies with the test process), pinned to
 * `connectionString`, and collects its acknowledgements as they are printed.
 */
export function startWriterIn(
  netns: string,
  connectionString: string,
  firstId: number,
  intervalMillis = 10,
): NetnsWriter {
  const root = new URL('..', import.meta.url).pathname;
  const script = new URL('./netns-writer.ts', import.meta.url).pathname;
  const child = spawn(
    'setpriv',
    [
      '--pdeathsig',
      'KILL',
      '--',
      'ip',
      'netns',
      'exec',
      netns,
      process.execPath,
      '--import',
      'tsx',
      script,
      connectionString,
      String(firstId),
      String(intervalMillis),
    ],
    { cwd: root, stdio: ['pipe', 'pipe', 'inherit'] },
  );
  if (child.pid === undefined) throw new Error(`could not start a writer in ${netns}`);
  const acks: NetnsAck[] = [];
  const errors = new Map<string, number>();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let buffer = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    buffer += chunk;
    let newline = buffer.indexOf('\n');
    while (newline >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      newline = buffer.indexOf('\n');
      try {
        const parsed = JSON.parse(line);
        if (typeof parsed.error === 'string') errors.set(parsed.error, (errors.get(parsed.error) ?? 0) + 1);
        else acks.push(parsed as NetnsAck);
      } catch {
        /* not ours */
      }
    }
  });
  return {
    pid: child.pid,
    acks,
    errors,
    async stop(graceMillis = 3000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMillis);
      await exited;
      clearTimeout(timer);
    },
  };
}

export { lsnBytes } from './writer.js';

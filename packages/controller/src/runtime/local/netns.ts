// Real network partitions with Linux network namespaces (needs root and iproute2),
// for the local runtime's members (tests, `pgha check --faults partition`). One namespace per host, each joined to a bridge in the root
// namespace by a veth pair, all addresses in 198.18.0.0/15 (the benchmarking range:
// never a private range, whose traffic is flagged here). Members reach each other
// and the root namespace over the bridge (layer 2: no IP forwarding needed).
// `cut(i)` takes host i's root-side veth down: from then on its namespace reaches
// nothing but itself (its own address and loopback still work, so a writer inside
// it can still reach a postgres inside it).
//
// Everything created is recorded before the next step, so destroy() (idempotent,
// also run on process exit) removes exactly what was made, even after a failure
// halfway through.
import { execFileSync } from 'node:child_process';

/** Every range a network may use: the benchmarking range, 198.18.0.0/15. */
export const testNetworkCidr = '198.18.0.0/15';

/** Runs `ip` with `args`; throws with its stderr. */
export function ip(...args: string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new Error(`ip ${args.join(' ')} failed: ${stderr || (error as Error).message}`);
  }
}

/** Runs `ip` with `args`; false when it failed. */
export function tryIp(...args: string[]): boolean {
  try {
    ip(...args);
    return true;
  } catch {
    return false;
  }
}

/** Names of the network namespaces that exist now (`ip netns list`). */
export function listNetns(): string[] {
  return ip('netns', 'list')
    .split('\n')
    .map((l) => l.trim().split(' ')[0]!)
    .filter((n) => n !== '');
}

/** Whether a network interface of this name exists in the root namespace. */
export function linkExists(name: string): boolean {
  return tryIp('link', 'show', 'dev', name);
}

/**
 * Why namespaces cannot be used here (not root, no iproute2, not permitted), or
 * null when they can: tries to add and delete a namespace.
 */
export function netnsUnavailableReason(): string | null {
  const probe = `pgha-probe-${process.pid}`;
  try {
    ip('netns', 'add', probe);
  } catch (error) {
    return `cannot create a network namespace (${(error as Error).message.split('\n')[0]}); run as root with iproute2`;
  }
  tryIp('netns', 'del', probe);
  return null;
}

/** One host of a {@link NetnsNetwork}. */
export interface NetnsHost {
  readonly index: number;
  /** The namespace, `pgha-<pid>-<index>`. */
  readonly netns: string;
  /** Its address (inside the namespace). */
  readonly address: string;
  /** The veth end in the root namespace, on the bridge: down = cut off. */
  readonly hostVeth: string;
}

/** A bridge in the root namespace and one namespace per host. */
export interface NetnsNetwork {
  /** The root namespace's address on the bridge: listen here to serve every host. */
  readonly gateway: string;
  readonly hosts: readonly NetnsHost[];
  /** Cuts host `index` off from everything outside its namespace. */
  cut(index: number): void;
  /** Reconnects host `index`. */
  heal(index: number): void;
  /** PIDs of the processes running in host `index`'s namespace. */
  pidsIn(index: number): number[];
  /**
   * SIGKILLs what still runs in the namespaces (all of it started by the test), then
   * deletes the namespaces, veths and bridge, and waits (bounded) until they are gone.
   * Idempotent; never throws, returns what it could not remove.
   */
  destroy(): string[];
}

/** A free /24 inside 198.18.0.0/16 (no address or route of this host in it). */
function freeSubnet(): number {
  const used = ip('-4', '-o', 'addr') + ip('-4', 'route');
  const start = process.pid % 250;
  for (let k = 0; k < 250; k++) {
    const third = ((start + k) % 250) + 1;
    if (!used.includes(`198.18.${third}.`)) return third;
  }
  throw new Error('no free /24 left in 198.18.0.0/16');
}

/** Whether process `pid` exists (EPERM counts: it exists, owned by another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** PIDs of the processes in network namespace `netns` (empty when it does not exist). */
export function pidsInNetns(netns: string): number[] {
  try {
    return ip('netns', 'pids', netns)
      .split('\n')
      .filter((l) => /^\d+$/.test(l.trim()))
      .map(Number);
  } catch {
    return [];
  }
}

function killAll(pids: readonly number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/**
 * Deletes namespaces and links left by an earlier run whose process died without
 * cleaning up (killed by SIGKILL): their names carry the dead run's PID, in decimal
 * (group 1 of `netns`) or base 36 (group 1 of `link`). What runs in such a namespace
 * is killed first; `removed` runs for each namespace deleted.
 */
export function removeStaleNetworks(patterns: {
  netns: RegExp;
  link: RegExp;
  removed?: (netns: string) => void;
}): void {
  for (const netns of listNetns()) {
    const match = patterns.netns.exec(netns);
    if (match === null || processAlive(Number(match[1]))) continue;
    killAll(pidsInNetns(netns));
    tryIp('netns', 'del', netns);
    patterns.removed?.(netns);
  }
  let links: string[] = [];
  try {
    links = ip('-o', 'link', 'show')
      .split('\n')
      .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] ?? '');
  } catch {
    return;
  }
  for (const link of links) {
    const match = patterns.link.exec(link);
    if (match === null || processAlive(Number.parseInt(match[1]!, 36))) continue;
    tryIp('link', 'del', 'dev', link);
  }
}

const removeStale = () => removeStaleNetworks({ netns: /^pgha-(\d+)-\d+$/, link: /^ph([0-9a-z]+?)(br|h\d+|n\d+)$/ });

/**
 * Creates `count` namespaces `pgha-<pid>-<i>` (names unique per run), each with its
 * own address, `lo` up and a default route through the bridge.
 */
export function createNetnsNetwork(count: number): NetnsNetwork {
  removeStale();
  const tag = process.pid.toString(36); // interface names are limited to 15 characters
  const bridge = `ph${tag}br`;
  const third = freeSubnet();
  const gateway = `198.18.${third}.1`;
  const madeNetns: string[] = [];
  const madeLinks: string[] = []; // root-namespace links, bridge last
  const hosts: NetnsHost[] = [];
  let destroyed = false;

  const destroy = (): string[] => {
    if (destroyed) return [];
    destroyed = true;
    process.off('exit', destroy);
    for (const netns of madeNetns) {
      for (const pid of pidsInNetns(netns)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    for (const netns of madeNetns) tryIp('netns', 'del', netns);
    // Deleting a namespace destroys its veth ends (and their peers) asynchronously;
    // delete the root-side ends and the bridge explicitly, then wait for them.
    for (const link of [...madeLinks].reverse()) if (linkExists(link)) tryIp('link', 'del', 'dev', link);
    const deadline = Date.now() + 10_000;
    let left: string[] = [];
    for (;;) {
      const namespaces = new Set(listNetns());
      left = [...madeNetns.filter((n) => namespaces.has(n)), ...madeLinks.filter(linkExists)];
      if (left.length === 0 || Date.now() > deadline) break;
      execFileSync('sleep', ['0.1']);
    }
    return left;
  };
  process.on('exit', destroy);

  try {
    ip('link', 'add', bridge, 'type', 'bridge');
    madeLinks.push(bridge);
    ip('addr', 'add', `${gateway}/24`, 'dev', bridge);
    ip('link', 'set', bridge, 'up');
    for (let i = 0; i < count; i++) {
      const netns = `pgha-${process.pid}-${i}`;
      const hostVeth = `ph${tag}h${i}`;
      const nsVeth = `ph${tag}n${i}`;
      const address = `198.18.${third}.${10 + i}`;
      ip('netns', 'add', netns);
      madeNetns.push(netns);
      ip('link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', nsVeth);
      madeLinks.unshift(hostVeth); // before the bridge in deletion order
      ip('link', 'set', nsVeth, 'netns', netns);
      ip('link', 'set', hostVeth, 'master', bridge);
      ip('link', 'set', hostVeth, 'up');
      ip('-n', netns, 'link', 'set', 'lo', 'up');
      ip('-n', netns, 'addr', 'add', `${address}/24`, 'dev', nsVeth);
      ip('-n', netns, 'link', 'set', nsVeth, 'up');
      ip('-n', netns, 'route', 'add', 'default', 'via', gateway);
      hosts.push({ index: i, netns, address, hostVeth });
    }
  } catch (error) {
    destroy();
    throw error;
  }

  const host = (index: number) => {
    const h = hosts[index];
    if (h === undefined) throw new Error(`no host ${index}`);
    return h;
  };
  return {
    gateway,
    hosts,
    cut: (index) => void ip('link', 'set', host(index).hostVeth, 'down'),
    heal: (index) => void ip('link', 'set', host(index).hostVeth, 'up'),
    pidsIn: (index) => pidsInNetns(host(index).netns),
    destroy,
  };
}

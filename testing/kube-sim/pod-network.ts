// Test support: the simulated cluster's pod network (needs root and iproute2). A
// bridge in the root namespace carries a /24 of 198.18.0.0/16 (the benchmarking
// range, as in testing/netns.ts); every pod gets its own network namespace joined
// to it by a veth pair, with its own address and a default route through the
// bridge's address (the gateway). Service addresses are /32s of 198.19.X.0/24 put
// on the bridge: local to the root namespace, so a proxy listening there serves
// both the root namespace and, through the default route, every pod.
//
// Names differ from testing/netns.ts's (links `pk<pid base36>…`, namespaces
// `pks-<pid>-<n>`) so the two never touch each other's leftovers. Everything is
// recorded before the next step, so destroy() (idempotent, also run on process
// exit) removes exactly what was made, even after a failure halfway through.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { ip, linkExists, listNetns, pidsInNetns, removeStaleNetworks, tryIp } from '../netns.js';

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* gone */
  }
}

/** `ip netns exec` bind-mounts /etc/netns/<name>/* over /etc: a pod's hosts file lives there. */
export function netnsEtcDir(netns: string): string {
  return `/etc/netns/${netns}`;
}

/**
 * Deletes pod namespaces (and their /etc/netns files) and links left by an earlier
 * run whose process died without cleaning up (SIGKILLed): their names carry its PID.
 */
const removeStale = () =>
  removeStaleNetworks({
    netns: /^pks-(\d+)-\d+$/,
    link: /^pk([0-9a-z]+?)(br|h\d+)$/,
    removed: (netns) => rmSync(netnsEtcDir(netns), { recursive: true, force: true }),
  });

/** A free /24 in 198.18.0.0/16 whose 198.19 twin is free too (no address or route of this host in either). */
function freeSubnet(): number {
  const used = ip('-4', '-o', 'addr') + ip('-4', 'route');
  // Start away from where testing/netns.ts starts for the same PID.
  const start = (process.pid + 125) % 250;
  for (let k = 0; k < 250; k++) {
    const third = ((start + k) % 250) + 1;
    if (!used.includes(`198.18.${third}.`) && !used.includes(`198.19.${third}.`)) return third;
  }
  throw new Error('no free /24 left in 198.18.0.0/16');
}

/** One pod's place on the network. */
export interface PodEndpoint {
  /** Its network namespace, `pks-<pid>-<n>`. */
  readonly netns: string;
  /** Its address (inside the namespace). */
  readonly ip: string;
}

/** A bridge in the root namespace with one network namespace per pod. */
export interface PodNetwork {
  /** The root namespace's address on the bridge (the node's address): listen here to serve every pod. */
  readonly gateway: string;
  /** Adds a namespace with an address on the bridge, `lo` up and a default route via the gateway. */
  addPod(): PodEndpoint;
  /**
   * SIGKILLs what runs in the pod's namespace, waits (bounded, 5 s) until it is gone,
   * then deletes the namespace, its veth and its /etc/netns directory. Unknown
   * names are ignored.
   */
  removePod(netns: string): Promise<void>;
  /** PIDs of the processes running in a pod's namespace. */
  pidsIn(netns: string): number[];
  /** The n-th service address (n from 1 to 254): `198.19.X.n`. */
  serviceAddress(n: number): string;
  /** Puts a service address (from {@link serviceAddress}) on the bridge, so a listener there is reachable from everywhere. */
  addServiceAddress(ip: string): void;
  /**
   * SIGKILLs what still runs in the pods' namespaces, then deletes the namespaces,
   * veths and the bridge (with the service addresses on it), and waits (bounded)
   * until they are gone. Idempotent, also run on process exit; never throws,
   * returns what it could not remove.
   */
  destroy(): string[];
}

/**
 * Creates the bridge and its gateway address. Removes first what dead runs left.
 *
 * @example
 *   const network = createPodNetwork();
 *   const { netns, ip } = network.addPod();
 *   // ip netns exec <netns> curl http://<network.gateway>:port/
 *   network.destroy();
 */
export function createPodNetwork(): PodNetwork {
  removeStale();
  const tag = process.pid.toString(36); // interface names are limited to 15 characters
  const bridge = `pk${tag}br`;
  const third = freeSubnet();
  const gateway = `198.18.${third}.1`;
  const pods = new Map<string, { hostVeth: string; ip: string }>(); // netns → what was made for it
  // Addresses go round the /24 (.2 to .254), so a removed pod's address is reused as
  // late as possible: neighbours may still cache its old MAC address for a while.
  let nextHost = 2;
  const hostInUse = (host: number) => [...pods.values()].some((p) => p.ip.endsWith(`.${host}`));
  let nextPod = 0;
  let bridgeMade = false;
  let destroyed = false;

  const deletePod = (netns: string, hostVeth: string): void => {
    tryIp('netns', 'del', netns);
    // Deleting a namespace destroys its veth end (and the peer) asynchronously.
    if (linkExists(hostVeth)) tryIp('link', 'del', 'dev', hostVeth);
    rmSync(netnsEtcDir(netns), { recursive: true, force: true });
  };

  const destroy = (): string[] => {
    if (destroyed) return [];
    destroyed = true;
    process.off('exit', destroy);
    for (const netns of pods.keys()) for (const pid of pidsInNetns(netns)) kill(pid, 'SIGKILL');
    for (const [netns, { hostVeth }] of pods) deletePod(netns, hostVeth);
    if (bridgeMade && linkExists(bridge)) tryIp('link', 'del', 'dev', bridge);
    const deadline = Date.now() + 10_000;
    let left: string[] = [];
    for (;;) {
      const namespaces = new Set(listNetns());
      left = [
        ...[...pods.keys()].filter((n) => namespaces.has(n)),
        ...[...pods.values()].map((p) => p.hostVeth).filter(linkExists),
        ...(bridgeMade && linkExists(bridge) ? [bridge] : []),
      ];
      if (left.length === 0 || Date.now() > deadline) break;
      execFileSync('sleep', ['0.1']);
    }
    return left;
  };
  process.on('exit', destroy);

  try {
    ip('link', 'add', bridge, 'type', 'bridge');
    bridgeMade = true;
    ip('addr', 'add', `${gateway}/24`, 'dev', bridge);
    ip('link', 'set', bridge, 'up');
  } catch (error) {
    destroy();
    throw error;
  }

  const addPod = (): PodEndpoint => {
    if (destroyed) throw new Error('the pod network was destroyed');
    const n = nextPod++;
    const netns = `pks-${process.pid}-${n}`;
    const hostVeth = `pk${tag}h${n}`;
    const nsVeth = `pk${tag}n${n}`;
    let host = 0;
    for (let k = 0; k < 253 && host === 0; k++) {
      const candidate = ((nextHost - 2 + k) % 253) + 2;
      if (!hostInUse(candidate)) host = candidate;
    }
    if (host === 0) throw new Error('no address left on the pod network (253 pods)');
    nextHost = host + 1;
    const address = `198.18.${third}.${host}`;
    try {
      ip('netns', 'add', netns);
      pods.set(netns, { hostVeth, ip: address });
      ip('link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', nsVeth);
      ip('link', 'set', nsVeth, 'netns', netns);
      ip('link', 'set', hostVeth, 'master', bridge);
      ip('link', 'set', hostVeth, 'up');
      ip('-n', netns, 'link', 'set', 'lo', 'up');
      ip('-n', netns, 'addr', 'add', `${address}/24`, 'dev', nsVeth);
      ip('-n', netns, 'link', 'set', nsVeth, 'up');
      ip('-n', netns, 'route', 'add', 'default', 'via', gateway);
    } catch (error) {
      for (const pid of pidsInNetns(netns)) kill(pid, 'SIGKILL');
      deletePod(netns, hostVeth);
      pods.delete(netns);
      throw error;
    }
    return { netns, ip: address };
  };

  const removePod = async (netns: string): Promise<void> => {
    const pod = pods.get(netns);
    if (pod === undefined) return;
    const deadline = Date.now() + 5000;
    for (;;) {
      const pids = pidsInNetns(netns);
      if (pids.length === 0 || Date.now() > deadline) break;
      for (const pid of pids) kill(pid, 'SIGKILL');
      await delay(20);
    }
    deletePod(netns, pod.hostVeth);
    tryIp('neigh', 'flush', 'to', pod.ip); // forget its MAC address: a later pod gets the address
    pods.delete(netns);
  };

  return {
    gateway,
    addPod,
    removePod,
    pidsIn: (netns) => (pods.has(netns) ? pidsInNetns(netns) : []),
    serviceAddress: (n) => {
      if (!Number.isInteger(n) || n < 1 || n > 254) throw new Error(`service address ${n}: expected 1 to 254`);
      return `198.19.${third}.${n}`;
    },
    addServiceAddress: (address) => {
      if (!address.startsWith(`198.19.${third}.`))
        throw new Error(`${address} is not a service address of this network (198.19.${third}.0/24)`);
      const present = ip('-4', '-o', 'addr', 'show', 'dev', bridge).includes(` ${address}/32 `);
      if (!present) ip('addr', 'add', `${address}/32`, 'dev', bridge);
    },
    destroy,
  };
}

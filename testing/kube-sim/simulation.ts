// The simulated Kubernetes cluster: the test API server plus stand-ins for what a
// real cluster adds (a StatefulSet and a Deployment controller, volumes, a kubelet
// running each pod as processes in its own network namespace, Services forwarded
// from their ClusterIPs, cluster DNS as /etc/hosts lines), an etcd for the
// PgHaClusters, and the operator installed from deploy/ as a user would
// (`kubectl apply -k deploy/`). Test utility and demo (`pnpm pgha kube-sim`), not
// shipped. What it covers and what it cannot: testing/kube-sim/README.md.
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { findPostgresBinaries } from '../../packages/controller/src/adapters/prerequisites.js';
import { type EtcdServer, startEtcdServer } from '../../packages/controller/src/runtime/local/etcd-server.js';
import { KubeApiServer } from '../kube-api/api-server.js';
import { makeEtcdDataDir } from '../state-dir.js';
import { DeploymentController } from './deployment-controller.js';
import { Kubelet } from './kubelet.js';
import { createPodNetwork, type PodNetwork } from './pod-network.js';
import { ServiceProxy } from './services.js';
import { StatefulSetController } from './statefulset-controller.js';
import { VolumeController } from './volume-controller.js';

const run = promisify(execFile);
const repoRoot = new URL('../..', import.meta.url).pathname;

/** The etcd the PgHaClusters use: deploy/examples' endpoints resolve to it in every pod. */
export const etcdNames = ['etcd-0', 'etcd-1', 'etcd-2'].map((p) => `${p}.etcd.pgha-system.svc`);
export const etcdPort = 2379;

export interface SimulationOptions {
  /** Where volumes, logs and the kubeconfigs go. Default: a new directory under /tmp (removed by stop()). */
  readonly stateDir?: string;
  /** One line per step of every part (pods started, probes, services). Default: none. */
  readonly log?: (line: string) => void;
  /** Install deploy/ (the CRD, RBAC and the operator Deployment) with kubectl. Default true. */
  readonly installOperator?: boolean;
}

export interface Simulation {
  readonly stateDir: string;
  readonly api: KubeApiServer;
  readonly network: PodNetwork;
  readonly kubelet: Kubelet;
  readonly services: ServiceProxy;
  /** The etcd endpoint (on the network's gateway, reachable from pods and from here). */
  readonly etcdEndpoint: string;
  /** A kubeconfig for this process and kubectl (namespace `default`). */
  readonly kubeconfig: string;
  /** Runs kubectl against the simulation; resolves with its stdout, rejects with its stderr. */
  kubectl(...args: string[]): Promise<string>;
  /** Stops everything it started, in reverse order; idempotent. */
  stop(): Promise<void>;
}

/**
 * The local build standing in for each image: any tag of the member image runs
 * `pgha` from packages/controller/dist with the installed PostgreSQL, the operator
 * image runs `pgha operator`. Unknown images are refused (the pod waits with
 * ErrImagePull), as a cluster without the image would.
 */
function imageMap(binDir: string, pgBin: string) {
  return (image: string) => {
    const repo = image.replace(/[:@].*$/, '');
    const env = { PATH: `${binDir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` };
    if (repo.endsWith('/pgha/member'))
      return { entrypoint: ['pgha'], cmd: ['agent', '--help'], env: { ...env, PGHA_PG_BIN: pgBin } };
    if (repo.endsWith('/pgha/operator')) return { entrypoint: ['pgha'], cmd: ['operator'], env };
    throw new Error(`no local stand-in for ${image} (only ghcr.io/pgha/member and ghcr.io/pgha/operator)`);
  };
}

export async function startSimulation(options: SimulationOptions = {}): Promise<Simulation> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    throw new Error('the simulated cluster needs root: each pod runs in its own network namespace (ip netns)');
  const log = options.log ?? (() => undefined);
  const ownsStateDir = options.stateDir === undefined;
  const stateDir = options.stateDir ?? mkdtempSync(join(tmpdir(), 'pgha-kube-sim-'));
  mkdirSync(stateDir, { recursive: true });
  chmodSync(stateDir, 0o755); // postgres (another OS user) must reach the volumes under it
  const stops: (() => Promise<unknown> | unknown)[] = [];
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const s of stops.reverse()) {
      try {
        await s();
      } catch (error) {
        log(`stopping: ${(error as Error).message}`);
      }
    }
    if (ownsStateDir) rmSync(stateDir, { recursive: true, force: true });
  };
  try {
    const pg = await findPostgresBinaries();
    const binDir = join(stateDir, 'bin');
    mkdirSync(binDir, { recursive: true });
    writeFileSync(
      join(binDir, 'pgha'),
      `#!/bin/sh\nexec ${process.execPath} ${join(repoRoot, 'packages/controller/dist/cli.js')} "$@"\n`,
      { mode: 0o755 },
    );

    const network = createPodNetwork();
    stops.push(() => network.destroy());

    const etcdDir = join(stateDir, 'etcd');
    // Its data in memory, off the disk the pods' postgres share (testing/state-dir.ts).
    const etcdData = makeEtcdDataDir('pgha-kube-sim-etcd-');
    stops.push(() => rmSync(etcdData, { recursive: true, force: true }));
    const etcd: EtcdServer = await startEtcdServer({
      dataDir: etcdData,
      clientPort: etcdPort,
      peerPort: etcdPort + 1,
      host: network.gateway,
      logFile: join(etcdDir, 'etcd.log'),
    });
    stops.push(() => etcd.stop());

    const api = await KubeApiServer.start({ host: network.gateway, clusterIpOf: (n) => network.serviceAddress(n) });
    stops.push(() => api.close());
    const kubeconfig = api.writeKubeconfig(stateDir);
    const podKubeconfigDir = join(stateDir, 'pod-kubeconfig');
    mkdirSync(podKubeconfigDir, { recursive: true });
    const podKubeconfig = api.writeKubeconfig(podKubeconfigDir);

    const services = await ServiceProxy.start({
      apiUrl: api.url,
      addServiceAddress: (ip) => network.addServiceAddress(ip),
      log,
    });
    stops.push(() => services.stop());

    let hostsText = '';
    const hosts = () => {
      hostsText = [
        `${network.gateway} ${etcdNames.join(' ')} ${etcdNames.map((n) => `${n}.cluster.local`).join(' ')}`,
        ...services.hostsLines(),
      ].join('\n');
      return hostsText;
    };
    const kubelet = await Kubelet.start({
      apiUrl: api.url,
      network,
      stateDir,
      images: imageMap(binDir, pg.binDir),
      hosts,
      kubeconfigForPods: podKubeconfig,
      log,
    });
    stops.push(() => kubelet.stop());
    // Cluster DNS follows Services and pods: rewrite every pod's hosts file on change.
    const dns = setInterval(() => {
      const before = hostsText;
      if (hosts() !== before) kubelet.refreshHosts();
    }, 200);
    stops.push(() => clearInterval(dns));

    const statefulSets = await StatefulSetController.start({ apiUrl: api.url, log });
    stops.push(() => statefulSets.stop());
    const deployments = await DeploymentController.start({ apiUrl: api.url, log });
    stops.push(() => deployments.stop());
    const volumes = await VolumeController.start({ apiUrl: api.url, stateDir, log });
    stops.push(() => volumes.stop());

    const kubectl = async (...args: string[]) => {
      const { stdout } = await run('kubectl', ['--kubeconfig', kubeconfig, ...args], {
        cwd: repoRoot,
        timeout: 60_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      return stdout;
    };
    if (options.installOperator ?? true) {
      log('installing deploy/ (namespace, CRD, RBAC, operator Deployment) with kubectl apply -k deploy/');
      await kubectl('apply', '-k', join(repoRoot, 'deploy'));
    }
    return {
      stateDir,
      api,
      network,
      kubelet,
      services,
      etcdEndpoint: etcd.endpoint,
      kubeconfig,
      kubectl,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

// `pgha kube-sim --kubeconfig FILE [--state-dir DIR] [--verbose]`: starts the
// simulated cluster with the operator installed, writes a kubeconfig for it, prints
// how to use it, and stops everything on Ctrl-C (SIGINT) or SIGTERM.
import { copyFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startSimulation } from './simulation.js';

const usage = `usage: pgha kube-sim --kubeconfig FILE [--state-dir DIR] [--verbose]

Starts a simulated Kubernetes cluster on this machine (needs root: every pod runs in
its own network namespace), with etcd and the pgha operator from deploy/, and writes
a kubeconfig for it to FILE. Ctrl-C stops everything.`;

async function main(): Promise<void> {
  let values: { kubeconfig?: string; 'state-dir'?: string; verbose?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      options: {
        kubeconfig: { type: 'string' },
        'state-dir': { type: 'string' },
        verbose: { type: 'boolean', short: 'v' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${usage}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(usage);
    return;
  }
  if (values.kubeconfig === undefined) {
    console.error(`--kubeconfig FILE is required: where to write the kubeconfig for kubectl\n\n${usage}`);
    process.exit(2);
  }
  const kubeconfig = resolve(values.kubeconfig);
  const started = Date.now();
  const progress = (line: string) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${line}`);
  progress('starting etcd, the API server, the controllers, the kubelet and the Service proxy');
  const sim = await startSimulation({
    stateDir: values['state-dir'] === undefined ? undefined : resolve(values['state-dir']),
    // Without --verbose: each pod's milestones (ready, not ready, exits, restarts,
    // deletions) and the installation; --verbose adds every controller and proxy step.
    log: values.verbose
      ? progress
      : (line) =>
          /^installing|^kubelet stopped|: (ready|not ready|deleted|deleting|container \S+ exited|restarting)/.test(line)
            ? progress(line)
            : undefined,
  });
  copyFileSync(sim.kubeconfig, kubeconfig);
  progress('the operator is installed (deploy/); its pods are starting');
  console.log(`
The simulated cluster is up (state in ${sim.stateDir}).

  export KUBECONFIG=${kubeconfig}
  kubectl apply -f deploy/examples/pghacluster.yaml      # a three-member PgHaCluster "demo"
  kubectl get pghaclusters,pods,services                 # watch it come up (-w)
  kubectl get secret demo-credentials -o jsonpath='{.data.superuser-password}' | base64 -d
  psql "host=$(kubectl get service demo-rw -o jsonpath='{.spec.clusterIP}') user=postgres"   # the primary, through -rw
  kubectl delete pod <the primary's pod>                  # a failover; -rw follows

etcd: ${sim.etcdEndpoint}. Pod logs: ${sim.stateDir}/logs. Ctrl-C stops everything.
`);
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    progress(`${signal}: stopping every pod, the controllers, etcd and the API server`);
    await sim.stop();
    progress('stopped');
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
}

main().catch((error) => {
  console.error(`kube-sim: ${(error as Error).message}`);
  process.exit(1);
});

/**
 * `pgha operator`: runs the Kubernetes operator (runtime/kubernetes/operator.ts)
 * with etcd as each cluster's source of the leader record and the place its
 * switchover requests go. Kubernetes credentials: in-cluster, else $KUBECONFIG or
 * ~/.kube/config, else --kubeconfig.
 */
import { clusterKeys, LeaderRecord, recordVersion, SwitchoverRecord } from '@pgha/core';
import type { Command } from 'commander';
import type { Etcd3 } from 'etcd3';
import { createEtcdClient } from '../adapters/etcd.js';
import { createLogger } from '../log.js';
import type { PgHaClusterObject } from '../runtime/kubernetes/pgha-cluster.js';

interface EtcdSpec {
  endpoints?: string[];
  keyRoot?: string;
}

export function registerOperator(program: Command, integer: (min: number, max: number) => (v: string) => number): void {
  program
    .command('operator')
    .description('reconcile PgHaCluster resources into StatefulSets, Services, PDBs and role labels (Kubernetes)')
    .option('--kubeconfig <path>', 'kubeconfig file (default: in-cluster, else $KUBECONFIG or ~/.kube/config)')
    .option('--namespace <ns>', 'watch one namespace (default: all)')
    .option(
      '--resync-interval-millis <ms>',
      'reconcile every cluster at least this often',
      integer(100, 3_600_000),
      5000,
    )
    .action(async (opts: { kubeconfig?: string; namespace?: string; resyncIntervalMillis: number }) => {
      const log = createLogger('operator');
      // Loaded here, not at the top: @kubernetes/client-node takes seconds to import,
      // and every other command (the agent above all) must not pay for it.
      const { Operator } = await import('../runtime/kubernetes/operator.js');
      const clients = new Map<string, Etcd3>();
      const etcdOf = (cluster: PgHaClusterObject) => {
        const spec = ((cluster.spec as { etcd?: EtcdSpec } | undefined)?.etcd ?? {}) as EtcdSpec;
        const endpoints = (spec.endpoints ?? []).join(',');
        let client = clients.get(endpoints);
        if (!client) {
          client = createEtcdClient({ endpoints }, 3000);
          clients.set(endpoints, client);
        }
        return { client, keys: clusterKeys(cluster.metadata.name, spec.keyRoot ?? '/pgha/') };
      };
      const operator = new Operator({
        kubeConfig: opts.kubeconfig,
        namespace: opts.namespace,
        resyncIntervalMillis: opts.resyncIntervalMillis,
        log,
        readLeader: async (cluster) => {
          const { client, keys } = etcdOf(cluster);
          const text = await client.get(keys.leader).string();
          if (text === null) return null;
          const leader = LeaderRecord.decode(text);
          return leader.writable ? { member: leader.member, term: leader.term } : null;
        },
        requestSwitchover: async (cluster, from, candidates) => {
          const { client, keys } = etcdOf(cluster);
          const pending = await client.get(keys.switchover).string();
          // A request the controller rejected is cleared so the next round can ask again.
          if (pending !== null && SwitchoverRecord.decode(pending).rejected) await client.delete().key(keys.switchover);
          const request: SwitchoverRecord = {
            v: recordVersion,
            from,
            to: candidates[0] ?? null,
            at: null,
            requestedAt: new Date().toISOString(),
          };
          await client
            .if(keys.switchover, 'Create', '==', 0)
            .then(client.put(keys.switchover).value(SwitchoverRecord.encode(request)))
            .commit();
        },
      });
      const stop = () => {
        void operator.stop().then(() => {
          for (const c of clients.values()) c.close();
          process.exit(0);
        });
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      await operator.start();
      log.info(`watching PgHaClusters in ${opts.namespace ?? 'every namespace'}`);
      await new Promise(() => undefined); // run until a signal stops us
    });
}

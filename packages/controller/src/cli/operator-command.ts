/**
 * `pgha operator`: runs the Kubernetes operator (runtime/kubernetes/operator.ts)
 * with etcd as each cluster's source of the leader record and the place its
 * switchover requests go. Kubernetes credentials: in-cluster, else $KUBECONFIG or
 * ~/.kube/config, else --kubeconfig. Replicas elect one leader with a Lease
 * (runtime/kubernetes/elected-operator.ts); only the leader reconciles, and only
 * the leader runs each cluster's failover controller (the `Controller` of `pgha
 * controller`, runtime/kubernetes/cluster-controllers.ts). `GET /healthz` and
 * `/readyz` are served on --health-port.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import {
  type ClusterKeys,
  ConfigRecord,
  clusterKeys,
  LeaderRecord,
  MemberRecord,
  PghaError,
  RemovedMemberRecord,
  recordVersion,
  SwitchoverRecord,
  SyncRecord,
} from '@pgha/core';
import type { Command } from 'commander';
import type { Etcd3 } from 'etcd3';
import { putClusterConfigIf } from '../adapters/cluster-config.js';
import { createEtcdClient } from '../adapters/etcd.js';
import { leaderElectionTimingProblem } from '../runtime/kubernetes/decide-leader-election.js';
import type {
  ConfigWrite,
  StoredConfigObservation,
  SynchronousObservation,
} from '../runtime/kubernetes/decide-synchronous.js';
import type { PgHaClusterObject } from '../runtime/kubernetes/pgha-cluster.js';
import { addEtcdConnectionOptions, type EtcdConnectionFlags, etcdCredentialsFrom } from './etcd-options.js';
import { commandLogger, type LogFlags, logFormatOption, logLevelOption } from './log-options.js';

/** Where a pod's namespace is when neither a flag nor POD_NAMESPACE names it. */
const serviceAccountNamespaceFile = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

function readServiceAccountNamespace(): string | undefined {
  try {
    return readFileSync(serviceAccountNamespaceFile, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

interface EtcdSpec {
  endpoints?: string[];
  keyRoot?: string;
}

interface OperatorFlags {
  kubeconfig?: string;
  namespace?: string;
  resyncIntervalMillis: number;
  healthPort: number;
  leaseName: string;
  leaseNamespace?: string;
  identity?: string;
  leaseDurationSeconds: number;
  renewDeadlineMillis: number;
  retryPeriodMillis: number;
  synchronousGraceMillis: number;
}

export function registerOperator(program: Command, integer: (min: number, max: number) => (v: string) => number): void {
  const command = program
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
    .option(
      '--health-port <port>',
      'serve GET /healthz and /readyz on this port (0: any free port, logged)',
      integer(0, 65535),
      8081,
    )
    .option(
      '--lease-name <name>',
      'the coordination.k8s.io/v1 Lease the replicas elect their leader with',
      'pgha-operator',
    )
    .option(
      '--lease-namespace <ns>',
      "the Lease's namespace (default: $POD_NAMESPACE, else the service account's, else the kubeconfig context's, else default)",
    )
    .option('--identity <id>', "this replica's holderIdentity (default: $POD_NAME, else <hostname>_<random>)")
    .option(
      '--lease-duration-seconds <s>',
      'a standby takes the Lease this long after it last saw it change',
      integer(1, 3600),
      15,
    )
    .option(
      '--renew-deadline-millis <ms>',
      'the leader stops reconciling this long after sending its last successful renewal (< the lease duration)',
      integer(100, 3_600_000),
      10_000,
    )
    .option('--retry-period-millis <ms>', 'how often the Lease is renewed or tried', integer(10, 3_600_000), 2000)
    .option(
      '--synchronous-grace-millis <ms>',
      'after a change of spec.synchronous, how long the primary has to claim it before the Synchronous condition says Degraded',
      integer(0, 600_000),
      5000,
    )
    .addOption(logFormatOption())
    .addOption(logLevelOption());
  // The operator's own etcd identity, one for every cluster it manages (each
  // PgHaCluster names only its endpoints): the leader watches, the switchover,
  // config and removed/ records, and each cluster's failover controller.
  addEtcdConnectionOptions(command).action(async (opts: OperatorFlags & EtcdConnectionFlags & LogFlags) => {
    const timing = leaderElectionTimingProblem(opts);
    if (timing !== null) throw new PghaError('invalid-option', `leader election: ${timing}`);
    const credentials = etcdCredentialsFrom(opts);
    const log = commandLogger('operator', opts, {});
    // Loaded here, not at the top: @kubernetes/client-node takes seconds to import,
    // and every other command (the agent above all) must not pay for it.
    const { KubeConfig } = await import('@kubernetes/client-node');
    const { Operator } = await import('../runtime/kubernetes/operator.js');
    const { ElectedOperator } = await import('../runtime/kubernetes/elected-operator.js');
    const { kubernetesLeaseApi } = await import('../runtime/kubernetes/lease-elector.js');
    const { startHealthServer } = await import('../runtime/kubernetes/health-server.js');
    const { ClusterControllers, createFailoverController } = await import(
      '../runtime/kubernetes/cluster-controllers.js'
    );
    const { LeaderWatches, openEtcdLeaderWatch } = await import('../runtime/kubernetes/leader-watches.js');
    const kubeConfig = new KubeConfig();
    if (opts.kubeconfig === undefined) kubeConfig.loadFromDefault();
    else kubeConfig.loadFromFile(opts.kubeconfig);
    const leaseNamespace =
      opts.leaseNamespace ??
      (process.env.POD_NAMESPACE || undefined) ??
      readServiceAccountNamespace() ??
      kubeConfig.getContextObject(kubeConfig.getCurrentContext())?.namespace ??
      'default';
    // The pod name is unique among live pods and kept across container restarts, so a
    // restarted container resumes its own pod's leadership at once; outside a pod, a
    // random suffix keeps two processes on one host apart.
    const identity = opts.identity ?? (process.env.POD_NAME || `${hostname()}_${randomUUID().slice(0, 8)}`);

    const clients = new Map<string, Etcd3>();
    const clientOf = (endpointList: readonly string[]) => {
      const endpoints = endpointList.join(',');
      let client = clients.get(endpoints);
      if (!client) {
        // The leader watches reconnect at most 1 s after etcd answers again (the resync
        // covers the gap); etcd3's own backoff would grow to 30 s.
        client = createEtcdClient({ ...credentials, endpoints }, 3000, { maxWatchBackoffMillis: 1000 });
        clients.set(endpoints, client);
      }
      return client;
    };
    const etcdOf = (cluster: PgHaClusterObject) => {
      const spec = ((cluster.spec as { etcd?: EtcdSpec } | undefined)?.etcd ?? {}) as EtcdSpec;
      return {
        client: clientOf(spec.endpoints ?? []),
        keys: clusterKeys(cluster.metadata.name, spec.keyRoot ?? '/pgha/'),
      };
    };
    const createOperator = (mayWrite: () => boolean) =>
      new Operator({
        kubeConfig,
        namespace: opts.namespace,
        resyncIntervalMillis: opts.resyncIntervalMillis,
        synchronousGraceMillis: opts.synchronousGraceMillis,
        log,
        mayWrite,
        // A fresh set per leadership, stopped with its Operator.
        failoverControllers: (onChange) =>
          new ClusterControllers({
            onChange,
            log,
            create: (key, config) => createFailoverController(config, log.child(`controller ${key}`), credentials),
          }),
        // Each cluster's leader record, watched so role labels follow a failover at once.
        leaderWatches: (onChange) =>
          new LeaderWatches({
            onChange,
            log,
            // The leader record, and the records the Synchronous condition reads (the
            // primary's claim, the settings): each rarely changes.
            open: (target, events) => {
              const k = clusterKeys(target.cluster, target.keyRoot);
              return openEtcdLeaderWatch(clientOf(target.endpoints), [k.leader, k.sync, k.config], events);
            },
          }),
        readLeader: async (cluster) => {
          const { client, keys } = etcdOf(cluster);
          const text = await client.get(keys.leader).string();
          if (text === null) return null;
          const leader = LeaderRecord.decode(text);
          return leader.writable ? { member: leader.member, term: leader.term } : null;
        },
        requestSwitchover: async (cluster, from, candidates) => {
          const { client, keys } = etcdOf(cluster);
          const pending = (await client.get(keys.switchover).exec()).kvs[0];
          // A request the controller rejected is cleared so the next round can ask again
          // (only that one: guarded by its mod revision, so a request written meanwhile,
          // by the CLI or another round, is never deleted unseen).
          if (pending !== undefined && SwitchoverRecord.decode(pending.value.toString()).rejected)
            await client
              .if(keys.switchover, 'Mod', '==', pending.mod_revision)
              .then(client.delete().key(keys.switchover))
              .commit();
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
        synchronous: {
          read: async (cluster) => {
            const { client, keys } = etcdOf(cluster);
            return readSynchronous(client, keys);
          },
          write: async (cluster, write) => {
            const { client, keys } = etcdOf(cluster);
            return writeConfig(client, keys, write);
          },
        },
        removedMembers: {
          read: async (cluster) => {
            const { client, keys } = etcdOf(cluster);
            const found = await client.getAll().prefix(keys.removedPrefix).keys();
            return found.flatMap((key) => {
              const parsed = keys.parse(key);
              return parsed?.kind === 'removed' ? [parsed.name] : [];
            });
          },
          mark: async (cluster, member, reason) => {
            const { client, keys } = etcdOf(cluster);
            const mark: RemovedMemberRecord = { v: recordVersion, member, reason, at: new Date().toISOString() };
            await client
              .if(keys.removed(member), 'Create', '==', 0)
              .then(client.put(keys.removed(member)).value(RemovedMemberRecord.encode(mark)))
              .commit();
          },
          unmark: async (cluster, member) => {
            const { client, keys } = etcdOf(cluster);
            await client.delete().key(keys.removed(member));
          },
        },
      });
    const elected = new ElectedOperator({
      api: kubernetesLeaseApi(kubeConfig),
      leaseNamespace,
      leaseName: opts.leaseName,
      identity,
      leaseDurationSeconds: opts.leaseDurationSeconds,
      renewDeadlineMillis: opts.renewDeadlineMillis,
      retryPeriodMillis: opts.retryPeriodMillis,
      log,
      createOperator,
      onStartedLeading: () => log.info(`watching PgHaClusters in ${opts.namespace ?? 'every namespace'}`),
    });
    const health = await startHealthServer({ port: opts.healthPort, health: () => elected.health() });
    log.info(`health endpoints on port ${health.port}: GET /healthz, /readyz`);
    let stopping = false;
    const stop = () => {
      if (stopping) return;
      stopping = true;
      // Stop reconciling first, then release the Lease (a standby takes over at its next try).
      void elected
        .stop()
        .then(() => health.close())
        .finally(() => {
          for (const c of clients.values()) c.close();
          process.exit(0);
        });
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    elected.start();
    log.info(`candidate ${identity} for Lease ${leaseNamespace}/${opts.leaseName}`);
    await new Promise(() => undefined); // run until a signal stops us
  });
}

/**
 * What the operator's `Synchronous` condition and config writes read from a cluster's
 * etcd, in one transaction (one revision): the `config` record with its mod revision,
 * the `sync` record and the member records (which replicas stream).
 */
async function readSynchronous(etcd: Etcd3, keys: ClusterKeys): Promise<SynchronousObservation> {
  const res = await etcd
    .if(keys.config, 'Create', '>', -1) // always true: a read-only transaction
    .then(etcd.get(keys.config), etcd.get(keys.sync), etcd.getAll().prefix(keys.membersPrefix))
    .commit();
  const [configKvs, syncKvs, memberKvs] = res.responses.map((r) => r.response_range?.kvs ?? []);
  let config: StoredConfigObservation = { state: 'absent' };
  const configKv = configKvs?.[0];
  if (configKv !== undefined)
    try {
      config = {
        state: 'stored',
        record: ConfigRecord.decode(configKv.value.toString()),
        modRevision: String(configKv.mod_revision),
      };
    } catch (error) {
      config = { state: 'malformed', problem: (error as Error).message };
    }
  let sync: SyncRecord | null = null;
  let syncProblem: string | undefined;
  const syncKv = syncKvs?.[0];
  if (syncKv !== undefined)
    try {
      sync = SyncRecord.decode(syncKv.value.toString());
    } catch (error) {
      syncProblem = (error as Error).message;
    }
  const streaming: string[] = [];
  for (const kv of memberKvs ?? []) {
    try {
      const member = MemberRecord.decode(kv.value.toString());
      if (member.role === 'replica' && member.streaming) streaming.push(member.name);
    } catch {
      // a malformed member record: that member is not counted as streaming
    }
  }
  return { config, sync, ...(syncProblem !== undefined ? { syncProblem } : {}), streaming: streaming.sort() };
}

/** Writes the `config` record as decided (adapters/cluster-config.ts); false when the guard failed (someone wrote first). */
async function writeConfig(etcd: Etcd3, keys: ClusterKeys, write: ConfigWrite): Promise<boolean> {
  const expected = 'create' in write.expect ? null : write.expect.modRevision;
  return (await putClusterConfigIf(etcd, keys, write.record, expected)) !== null;
}

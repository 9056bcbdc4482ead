/**
 * @pgha/controller: the pgha agent, controller and local runtime as a library
 * (the `pgha` binary is its CLI). May import @pgha/core, etcd3, pg, commander and
 * @kubernetes/client-node.
 */

export type { AgentOptions } from './agent/agent.js';
export { Agent } from './agent/agent.js';
export type { Logger } from './log.js';
export { createLogger } from './log.js';
export type { EtcdServer, EtcdServerOptions } from './runtime/local/etcd-server.js';
export { startEtcdServer } from './runtime/local/etcd-server.js';
export type { LocalCluster, LocalClusterOptions, LocalMember } from './runtime/local/local-cluster.js';
export { startLocalCluster } from './runtime/local/local-cluster.js';
export type { ClusterStatus, MemberStatus } from './status/cluster-status.js';
export { formatStatus, readClusterStatus } from './status/cluster-status.js';

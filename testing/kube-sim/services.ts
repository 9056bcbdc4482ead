// Services of the simulated cluster: what kube-proxy and cluster DNS do, for the
// parts our objects use.
// - Each Service with a ClusterIP gets that address on the simulation's network and a
//   TCP listener per port. A new connection goes to one of the ready pods its
//   selector matches at that moment (round robin over the endpoints), at the port's
//   targetPort (a number, or a container port's name). With no ready endpoint the
//   connection is reset, as kube-proxy's reject rule refuses it. Connections already
//   forwarded stay with their pod (kube-proxy's conntrack keeps them too) until either
//   end closes.
// - An Endpoints object per selecting Service mirrors the ready addresses, so
//   `kubectl get endpoints` shows what the proxy forwards to.
// - `hostsLines()` is the cluster DNS as /etc/hosts lines: `<svc>.<ns>.svc` for a
//   ClusterIP, and `<hostname>.<subdomain>.<ns>.svc` for the pods of a headless
//   Service (every pod with publishNotReadyAddresses, ready ones otherwise).
import { connect, createServer, type Server, type Socket } from 'node:net';
import { matchesLabelSelector } from '../kube-api/selectors.js';

interface Pod {
  metadata: { name: string; namespace: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec: { hostname?: string; subdomain?: string; containers: { ports?: { name?: string; containerPort: number }[] }[] };
  status?: { podIP?: string; conditions?: { type: string; status: string }[] };
}

interface ServicePort {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: string;
}

interface Service {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: {
    clusterIP?: string;
    selector?: Record<string, string>;
    ports?: ServicePort[];
    publishNotReadyAddresses?: boolean;
  };
}

export interface ServiceProxyOptions {
  readonly apiUrl: string;
  /** Makes `ip` an address of the simulation's network that the pods and the host reach. */
  readonly addServiceAddress: (ip: string) => void;
  readonly log?: (line: string) => void;
  /** How often the Services and pods are read. Default 100 ms. */
  readonly pollMillis?: number;
}

const isReady = (p: Pod) =>
  p.metadata.deletionTimestamp === undefined &&
  p.status?.podIP !== undefined &&
  (p.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');

export class ServiceProxy {
  private services: Service[] = [];
  private pods: Pod[] = [];
  private readonly listeners = new Map<string, Server>(); // `${ip}:${port}` → server
  private readonly addresses = new Set<string>();
  private readonly sockets = new Set<Socket>();
  private readonly roundRobin = new Map<string, number>();
  private readonly endpointsWritten = new Map<string, string>(); // ns/name → JSON of subsets
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private polling: Promise<void> = Promise.resolve();

  private constructor(private readonly o: ServiceProxyOptions) {}

  static async start(options: ServiceProxyOptions): Promise<ServiceProxy> {
    const proxy = new ServiceProxy(options);
    await proxy.poll();
    proxy.schedule();
    return proxy;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.polling = this.poll().finally(() => this.schedule());
    }, this.o.pollMillis ?? 100);
  }

  private async get<T>(path: string): Promise<T[]> {
    const res = await fetch(`${this.o.apiUrl}${path}`);
    if (!res.ok) throw new Error(`GET ${path}: ${res.status}`);
    return ((await res.json()) as { items: T[] }).items;
  }

  private async poll(): Promise<void> {
    try {
      [this.services, this.pods] = await Promise.all([
        this.get<Service>('/api/v1/services'),
        this.get<Pod>('/api/v1/pods'),
      ]);
    } catch (error) {
      this.o.log?.(`services: reading the API failed: ${(error as Error).message}`);
      return;
    }
    const wanted = new Set<string>();
    for (const svc of this.services) {
      const ip = svc.spec.clusterIP;
      if (ip === undefined || ip === 'None' || ip === '') continue;
      for (const port of svc.spec.ports ?? []) {
        if ((port.protocol ?? 'TCP') !== 'TCP') continue;
        const key = `${ip}:${port.port}`;
        wanted.add(key);
        if (!this.listeners.has(key)) await this.listen(svc, port, ip);
      }
    }
    for (const [key, server] of this.listeners) {
      if (wanted.has(key)) continue;
      server.close();
      this.listeners.delete(key);
      this.o.log?.(`services: stopped forwarding ${key}`);
    }
    await this.writeEndpoints();
  }

  private async listen(svc: Service, port: ServicePort, ip: string): Promise<void> {
    if (!this.addresses.has(ip)) {
      this.o.addServiceAddress(ip);
      this.addresses.add(ip);
    }
    const { namespace, name } = svc.metadata;
    const server = createServer((client) => this.forward(namespace, name, port.port, client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port.port, ip, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((error) => {
      this.o.log?.(`services: cannot listen on ${ip}:${port.port} for ${namespace}/${name}: ${error.message}`);
    });
    if (server.listening) {
      this.listeners.set(`${ip}:${port.port}`, server);
      this.o.log?.(`services: ${namespace}/${name} forwards ${ip}:${port.port}`);
    }
  }

  /** The Service (as last read) and its ready endpoints for `port`, at this moment. */
  endpoints(namespace: string, name: string, port?: number): { ip: string; pod: string; port: number }[] {
    const svc = this.services.find((s) => s.metadata.namespace === namespace && s.metadata.name === name);
    if (svc?.spec.selector === undefined) return [];
    const servicePort = svc.spec.ports?.find((p) => port === undefined || p.port === port) ?? svc.spec.ports?.[0];
    if (servicePort === undefined) return [];
    const selector = svc.spec.selector;
    return this.pods
      .filter(
        (p) =>
          p.metadata.namespace === namespace &&
          matchesLabelSelector({ matchLabels: selector }, p.metadata.labels ?? {}),
      )
      .filter(isReady)
      .flatMap((p) => {
        const target = targetPortOf(p, servicePort);
        return target === undefined ? [] : [{ ip: p.status!.podIP!, pod: p.metadata.name, port: target }];
      });
  }

  private forward(namespace: string, name: string, port: number, client: Socket): void {
    this.sockets.add(client);
    client.on('close', () => this.sockets.delete(client));
    client.on('error', () => undefined);
    const ready = this.endpoints(namespace, name, port);
    if (ready.length === 0) {
      client.resetAndDestroy();
      return;
    }
    const key = `${namespace}/${name}:${port}`;
    const next = (this.roundRobin.get(key) ?? 0) % ready.length;
    this.roundRobin.set(key, next + 1);
    const target = ready[next]!;
    const upstream = connect({ host: target.ip, port: target.port });
    this.sockets.add(upstream);
    upstream.on('close', () => this.sockets.delete(upstream));
    upstream.on('error', () => client.resetAndDestroy());
    client.on('error', () => upstream.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  }

  private async writeEndpoints(): Promise<void> {
    for (const svc of this.services) {
      if (svc.spec.selector === undefined) continue;
      const { namespace, name } = svc.metadata;
      const ports = (svc.spec.ports ?? []).map((p) => ({
        ...(p.name !== undefined ? { name: p.name } : {}),
        port: typeof p.targetPort === 'number' ? p.targetPort : p.port,
        protocol: p.protocol ?? 'TCP',
      }));
      const matching = this.pods.filter(
        (p) =>
          p.metadata.namespace === namespace &&
          matchesLabelSelector({ matchLabels: svc.spec.selector! }, p.metadata.labels ?? {}),
      );
      const address = (p: Pod) => ({
        ip: p.status!.podIP!,
        targetRef: { kind: 'Pod', namespace, name: p.metadata.name },
      });
      const ready = matching.filter(isReady).map(address);
      const notReady = matching
        .filter((p) => !isReady(p) && p.status?.podIP !== undefined && p.metadata.deletionTimestamp === undefined)
        .map(address);
      const subsets =
        ready.length + notReady.length === 0
          ? []
          : [
              {
                ...(ready.length > 0 ? { addresses: ready } : {}),
                ...(notReady.length > 0 ? { notReadyAddresses: notReady } : {}),
                ports,
              },
            ];
      const key = `${namespace}/${name}`;
      const text = JSON.stringify(subsets);
      if (this.endpointsWritten.get(key) === text) continue;
      const path = `/api/v1/namespaces/${namespace}/endpoints`;
      const body = { apiVersion: 'v1', kind: 'Endpoints', metadata: { name, namespace }, subsets };
      let res = await fetch(`${this.o.apiUrl}${path}/${name}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (res.status === 404)
        res = await fetch(`${this.o.apiUrl}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
      if (res.ok) this.endpointsWritten.set(key, text);
    }
  }

  /** Cluster DNS as /etc/hosts lines (see the header). */
  hostsLines(): string[] {
    const lines: string[] = [];
    for (const svc of this.services) {
      const { namespace, name } = svc.metadata;
      const ip = svc.spec.clusterIP;
      if (ip !== undefined && ip !== 'None' && ip !== '') {
        lines.push(`${ip} ${name}.${namespace}.svc ${name}.${namespace}.svc.cluster.local`);
        continue;
      }
      if (svc.spec.selector === undefined) continue;
      for (const p of this.pods) {
        if (p.metadata.namespace !== namespace || p.spec.subdomain !== name || p.status?.podIP === undefined) continue;
        if (!matchesLabelSelector({ matchLabels: svc.spec.selector }, p.metadata.labels ?? {})) continue;
        if (!svc.spec.publishNotReadyAddresses && !isReady(p)) continue;
        const host = p.spec.hostname ?? p.metadata.name;
        lines.push(`${p.status.podIP} ${host}.${name}.${namespace}.svc ${host}.${name}.${namespace}.svc.cluster.local`);
      }
    }
    return lines;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.polling;
    for (const s of this.sockets) s.destroy();
    await Promise.all(
      [...this.listeners.values()].map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
    );
    this.listeners.clear();
  }
}

function targetPortOf(pod: Pod, port: ServicePort): number | undefined {
  const target = port.targetPort ?? port.port;
  if (typeof target === 'number') return target;
  if (/^\d+$/.test(target)) return Number(target);
  for (const c of pod.spec.containers) {
    const found = c.ports?.find((p) => p.name === target);
    if (found) return found.containerPort;
  }
  return undefined;
}

/**
 * The simulated cluster's pod network: pods reach the gateway, each other and a
 * service address; the root namespace reaches pods; removing a pod and destroying
 * the network leave nothing behind. Needs root (skipped otherwise).
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listNetns, netnsUnavailableReason } from '../netns.js';
import { createPodNetwork, type PodEndpoint, type PodNetwork } from './pod-network.js';

const unavailable = netnsUnavailableReason();

/**
 * Connects from inside `netns` to host:port and returns what the server wrote first
 * (or throws). Asynchronous: the servers run in this process.
 */
async function fetchLineFrom(netns: string, host: string, port: number): Promise<string> {
  const script = `const s=require('net').connect(${port},${JSON.stringify(host)});s.setTimeout(3000,()=>{console.error('timeout');process.exit(2)});s.on('data',d=>{process.stdout.write(d);process.exit(0)});s.on('error',e=>{console.error(e.message);process.exit(1)})`;
  const { stdout } = await promisify(execFile)('ip', ['netns', 'exec', netns, process.execPath, '-e', script], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  return stdout;
}

/** A TCP server that writes `greeting` to whoever connects. */
async function greeter(host: string, greeting: string): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => socket.end(greeting));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  return { server, port: (server.address() as { port: number }).port };
}

describe.skipIf(unavailable !== null)('pod network', () => {
  let network: PodNetwork;
  let a: PodEndpoint;
  let b: PodEndpoint;
  const servers: Server[] = [];
  const children: ChildProcess[] = [];

  beforeAll(() => {
    network = createPodNetwork();
    a = network.addPod();
    b = network.addPod();
  });

  afterAll(async () => {
    for (const child of children) if (child.pid !== undefined) child.kill('SIGKILL');
    for (const server of servers) server.close();
    const left = network.destroy();
    expect(left).toEqual([]);
    const namespaces = listNetns();
    expect(namespaces).not.toContain(a.netns);
    expect(namespaces).not.toContain(b.netns);
  });

  it("gives each pod its own address on the gateway's /24", () => {
    const prefix = network.gateway.replace(/\.1$/, '.');
    expect(a.ip.startsWith(prefix)).toBe(true);
    expect(b.ip.startsWith(prefix)).toBe(true);
    expect(a.ip).not.toBe(b.ip);
    expect(execFileSync('ip', ['-n', a.netns, '-4', '-o', 'addr'], { encoding: 'utf8' })).toContain(`${a.ip}/24`);
    expect(execFileSync('ip', ['-n', a.netns, 'route'], { encoding: 'utf8' })).toContain(
      `default via ${network.gateway}`,
    );
  });

  it('lets pods reach the gateway and a service address', async () => {
    const gw = await greeter(network.gateway, 'gateway');
    servers.push(gw.server);
    expect(await fetchLineFrom(a.netns, network.gateway, gw.port)).toBe('gateway');
    const service = network.serviceAddress(7);
    expect(service).toBe(`198.19.${network.gateway.split('.')[2]}.7`);
    network.addServiceAddress(service);
    network.addServiceAddress(service); // idempotent
    const svc = await greeter(service, 'service');
    servers.push(svc.server);
    expect(await fetchLineFrom(a.netns, service, svc.port)).toBe('service');
    expect(await fetchLineFrom(b.netns, service, svc.port)).toBe('service');
    // and the root namespace reaches it too
    expect(await readFrom(service, svc.port)).toBe('service');
  });

  it('lets pods reach each other and the root namespace reach pods', async () => {
    const script = `require('net').createServer(s=>s.end('pod-a')).listen(7001,'0.0.0.0',()=>console.log('listening'))`;
    const child = spawn('ip', ['netns', 'exec', a.netns, process.execPath, '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the server in pod a did not start in 10 s')), 10_000);
      child.stdout!.once('data', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    expect(network.pidsIn(a.netns)).toContain(child.pid);
    expect(await fetchLineFrom(b.netns, a.ip, 7001)).toBe('pod-a');
    expect(await readFrom(a.ip, 7001)).toBe('pod-a');
  });

  it('removes a pod: its processes, namespace and veth go', async () => {
    const c = network.addPod();
    const sleeper = spawn('ip', ['netns', 'exec', c.netns, 'sleep', '600'], { stdio: 'ignore' });
    children.push(sleeper);
    const exited = new Promise((resolve) => sleeper.once('exit', resolve));
    await waitFor(() => network.pidsIn(c.netns).length > 0, 'the sleeper in the new pod');
    await network.removePod(c.netns);
    expect(await exited).toBe(null); // killed by a signal
    expect(listNetns()).not.toContain(c.netns);
    expect(network.pidsIn(c.netns)).toEqual([]);
    const links = execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' });
    const suffix = c.netns.split('-')[2];
    expect(links).not.toMatch(new RegExp(`pk${process.pid.toString(36)}h${suffix}\\b`));
  });
});

describe.skipIf(unavailable !== null)('pod network left by a dead run', () => {
  it('is removed by the next createPodNetwork(): processes, namespace, links', async () => {
    // A run that makes a network and a pod with a process inside, then dies by SIGKILL.
    const module = new URL('./pod-network.ts', import.meta.url).pathname;
    const code = `import { spawn } from 'node:child_process';
      import { createPodNetwork } from ${JSON.stringify(module)};
      const network = createPodNetwork();
      const pod = network.addPod();
      const sleeper = spawn('ip', ['netns', 'exec', pod.netns, 'sleep', '600'], { stdio: 'ignore', detached: true });
      console.log(JSON.stringify({ netns: pod.netns, sleeper: sleeper.pid }));
      setInterval(() => {}, 1000);`;
    const root = new URL('../..', import.meta.url).pathname;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let made: { netns: string; sleeper: number } | undefined;
    let network: PodNetwork | undefined;
    try {
      const report = await new Promise<{ netns: string; sleeper: number }>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the dying run did not report in 20 s')), 20_000);
        child.stdout!.once('data', (d: Buffer) => {
          clearTimeout(timer);
          resolve(JSON.parse(d.toString()));
        });
      });
      made = report;
      const tag = child.pid!.toString(36);
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
      await waitFor(() => listNetns().includes(report.netns), 'the dead run namespace to be listed');
      expect(execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' })).toContain(`pk${tag}br`);
      expect(alive(report.sleeper)).toBe(true);

      network = createPodNetwork();
      expect(listNetns()).not.toContain(report.netns);
      expect(execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' })).not.toContain(`pk${tag}`);
      await waitFor(() => !alive(report.sleeper), 'the dead run sleeper to die');
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await gone;
      }
      if (made !== undefined && alive(made.sleeper)) process.kill(made.sleeper, 'SIGKILL');
      // what the dead run left goes with the next network's stale cleanup
      (network ?? createPodNetwork()).destroy();
    }
  });
});

/** Whether the process exists and is not a zombie (orphans here may wait a while to be reaped). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

async function readFrom(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, host);
    socket.setTimeout(3000, () => reject(new Error(`no answer from ${host}:${port} in 3 s`)));
    let data = '';
    socket.on('data', (d) => {
      data += d;
    });
    socket.on('end', () => resolve(data));
    socket.on('error', reject);
  });
}

async function waitFor(ok: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

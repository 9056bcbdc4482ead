// A gRPC-aware proxy in front of etcd that can apply a request and lose its answer:
// the request reaches etcd (which applies it), and the client gets a reset stream
// instead of the response. That is the ambiguous outcome a real network produces
// when a connection dies after the request left: the caller cannot know whether
// its transaction took effect. Everything else is forwarded unchanged (unary calls,
// watch and keepalive streams), over HTTP/2 cleartext as etcd's gRPC speaks it.
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';

export interface AnswerDropper {
  /** The proxy's endpoint, to give to an etcd client instead of etcd's. */
  readonly url: string;
  /**
   * Loses the answer of the next `count` KV transactions whose request body contains
   * `needle` (for example a key): etcd applies them, the client sees a reset stream.
   */
  dropTxnAnswers(needle: string, count?: number): void;
  /** How many answers were dropped so far. */
  dropped(): number;
  close(): Promise<void>;
}

const hopHeaders = new Set([':scheme', ':authority', ':method', ':path', 'connection', 'host']);

/** Starts the proxy on a free loopback port in front of `upstream` (`http://host:port`). */
export async function startAnswerDropper(upstream: string): Promise<AnswerDropper> {
  let needle: Buffer | null = null;
  let budget = 0;
  let droppedCount = 0;
  const sessions = new Set<http2.ServerHttp2Session | http2.ClientHttp2Session>();
  const server = http2.createServer();
  server.on('session', (session) => {
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
    session.on('error', () => undefined);
    // One upstream connection per client connection, as a client would hold.
    const up = http2.connect(upstream);
    sessions.add(up);
    up.on('error', () => session.destroy());
    up.on('close', () => {
      sessions.delete(up);
      session.destroy();
    });
    session.on('close', () => up.close());
    session.on('stream', (stream, headers) => {
      const forwarded: http2.OutgoingHttpHeaders = {
        ':method': headers[':method'],
        ':path': headers[':path'],
      };
      for (const [name, value] of Object.entries(headers)) if (!hopHeaders.has(name)) forwarded[name] = value;
      const isTxn = headers[':path'] === '/etcdserverpb.KV/Txn';
      let upStream: http2.ClientHttp2Stream;
      try {
        upStream = up.request(forwarded);
      } catch {
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      const body: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => {
        if (isTxn) body.push(chunk);
        upStream.write(chunk);
      });
      stream.on('end', () => upStream.end());
      stream.on('error', () => upStream.close(http2.constants.NGHTTP2_CANCEL));
      stream.on('close', () => {
        if (!upStream.closed) upStream.close(http2.constants.NGHTTP2_CANCEL);
      });
      upStream.on('error', () => {
        if (!stream.closed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      });
      let trailers: http2.IncomingHttpHeaders = {};
      upStream.on('trailers', (t) => {
        trailers = t;
      });
      upStream.on('response', (responseHeaders) => {
        const drop = isTxn && needle !== null && budget > 0 && Buffer.concat(body).includes(needle);
        if (drop) {
          budget -= 1;
          droppedCount += 1;
          // etcd has applied it (it answers only after applying); lose the answer.
          upStream.on('data', () => undefined);
          upStream.on('end', () => {
            if (!stream.closed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
          });
          return;
        }
        const out: http2.OutgoingHttpHeaders = {};
        for (const [name, value] of Object.entries(responseHeaders)) if (!hopHeaders.has(name)) out[name] = value;
        if (responseHeaders['grpc-status'] !== undefined) {
          // Trailers-only response (an error): headers carry the status.
          stream.respond(out, { endStream: true });
          upStream.resume();
          return;
        }
        stream.respond(out, { waitForTrailers: true });
        stream.on('wantTrailers', () => {
          const t: http2.OutgoingHttpHeaders = {};
          for (const [name, value] of Object.entries(trailers)) if (!name.startsWith(':')) t[name] = value;
          stream.sendTrailers(t);
        });
        upStream.on('data', (chunk: Buffer) => stream.write(chunk));
        upStream.on('end', () => stream.end());
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    dropTxnAnswers(text: string, count = 1) {
      needle = Buffer.from(text);
      budget = count;
    },
    dropped: () => droppedCount,
    async close() {
      for (const s of sessions) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// The "image" kubelet.test.ts runs: an HTTP server on $PORT (default 8080) that
// shows a test what a container sees and lets it steer the probes. Plain JavaScript
// so it starts fast under plain node.
//
//   /healthz          200, or 500 once /sick was called (liveness)
//   /ready            503 until /make-ready was called (readiness); counts its calls
//   /ready-hits       how many times /ready was called
//   /env /argv        the process's environment and arguments (JSON)
//   /hostname         os.hostname()
//   /read?path=P      the file P; /write?path=P&data=D writes it
//
// With $EVENTS_FILE set, appends "start <pid>" at start and "SIGTERM <pid>" on
// SIGTERM; exits on SIGTERM unless $IGNORE_SIGTERM is set.
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { hostname } from 'node:os';

const events = process.env.EVENTS_FILE;
const note = (line) => {
  if (events) appendFileSync(events, `${line}\n`);
};
note(`start ${process.pid}`);
process.on('SIGTERM', () => {
  note(`SIGTERM ${process.pid}`);
  if (!process.env.IGNORE_SIGTERM) process.exit(0);
});

let sick = false;
let ready = false;
let readyHits = 0;
createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://x');
  const reply = (code, body) => {
    res.writeHead(code, { 'content-type': 'text/plain' });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  };
  try {
    switch (url.pathname) {
      case '/healthz':
        return reply(sick ? 500 : 200, sick ? 'sick' : 'ok');
      case '/sick':
        sick = true;
        return reply(200, 'ok');
      case '/ready':
        readyHits++;
        return reply(ready ? 200 : 503, ready ? 'ready' : 'not ready');
      case '/make-ready':
        ready = true;
        return reply(200, 'ok');
      case '/ready-hits':
        return reply(200, String(readyHits));
      case '/env':
        return reply(200, process.env);
      case '/argv':
        return reply(200, process.argv.slice(2));
      case '/hostname':
        return reply(200, hostname());
      case '/read':
        return reply(200, readFileSync(url.searchParams.get('path'), 'utf8'));
      case '/write':
        writeFileSync(url.searchParams.get('path'), url.searchParams.get('data') ?? '');
        return reply(200, 'ok');
      default:
        return reply(404, 'not found');
    }
  } catch (error) {
    return reply(500, String(error));
  }
}).listen(Number(process.env.PORT ?? 8080), '0.0.0.0');

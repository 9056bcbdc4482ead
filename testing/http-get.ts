// Test support: one HTTP(S) request with an optional CA (Node's fetch cannot be given
// one), for the agents' API over TLS.
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

/** What {@link httpGet} answers. */
export interface HttpAnswer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly text: string;
}

/**
 * Sends `method` (default GET) to `url`; an `https://` URL's certificate must chain to
 * `ca` (PEM; absent: the system's CAs) and name its host. Rejects on any failure,
 * within `timeoutMillis` (default 5000).
 */
export function httpGet(
  url: string,
  options: { readonly method?: string; readonly ca?: string; readonly timeoutMillis?: number } = {},
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(
      target,
      {
        method: options.method ?? 'GET',
        ...(target.protocol === 'https:' && options.ca !== undefined ? { ca: options.ca } : {}),
        signal: AbortSignal.timeout(options.timeoutMillis ?? 5000),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

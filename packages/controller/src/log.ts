import { createRequire } from 'node:module';
import { PghaError } from '@pgha/core';
import { type DestinationStream, destination, type Logger as PinoLogger, pino, stdTimeFunctions } from 'pino';

/** The two forms a log takes: JSON lines (for machines and files) or pino-pretty's readable lines (for a terminal). */
export const logFormats = ['json', 'pretty'] as const;
export type LogFormat = (typeof logFormats)[number];

/** Levels, least severe first; a logger writes its level and the ones after it (`silent`: nothing). */
export const logLevels = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof logLevels)[number];

/** The observed facts a line carries beside its message: an object of plain JSON-able data. */
export type LogFields = object;

/**
 * A structured logger: one line per event, to stderr (stdout stays for results).
 *
 * `message` is the human sentence (`msg` in the JSON line; tests and operators grep
 * it, so existing sentences keep their wording); `fields` are the facts it was
 * decided from (`term`, `leader`, `leaseRemainingMillis`, ...), top-level keys of the
 * JSON line.
 *
 * @example
 * log.info('action: promote', { term: 4, target: 'pg-1', leaseRemainingMillis: 1730 });
 */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** A logger for a part of this one: its component is `<component>/<name>`, the other bindings stay. */
  child(component: string): Logger;
}

/** How {@link createLogger} writes. */
export interface LoggerOptions {
  /** Default `json`. */
  readonly format?: LogFormat;
  /** Default `info`. */
  readonly level?: LogLevel;
  /** Fields on every line of this logger and its children (`cluster`, `member`). */
  readonly bindings?: LogFields;
  /**
   * Where each line goes, called synchronously with one newline-terminated line.
   * Default: stderr, written synchronously (nothing is lost when the process exits
   * or crashes right after logging).
   */
  readonly write?: (line: string) => void;
  /** Pretty only: ANSI colours. Default: when writing to stderr and it is a terminal. */
  readonly colorize?: boolean;
}

/**
 * Creates a logger backed by pino.
 *
 * JSON lines look like
 * `{"level":"info","time":"2026-12-01T21:40:00.123Z","pid":4242,"hostname":"db1","component":"agent","cluster":"pgha","member":"pgha-1","term":3,"msg":"action: promote"}`.
 * The pretty form renders the same object through pino-pretty, in this process and
 * synchronously (a stream, not a worker-thread transport), one line per event.
 *
 * The second argument may be a bare write function (the form tests use).
 */
export function createLogger(component: string, options: LoggerOptions | ((line: string) => void) = {}): Logger {
  const o: LoggerOptions = typeof options === 'function' ? { write: options } : options;
  const format = o.format ?? 'json';
  const toStderr = o.write === undefined;
  const sink: DestinationStream = toStderr ? stderrDestination() : { write: o.write! };
  const stream =
    format === 'pretty' ? prettyStream(sink, o.colorize ?? (toStderr && process.stderr.isTTY === true)) : sink;
  const root = pino(
    {
      level: o.level ?? 'info',
      timestamp: stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
  return wrap(root, component, o.bindings ?? {});
}

function wrap(root: PinoLogger, component: string, bindings: LogFields): Logger {
  // Children are made from the root, not from each other: pino would repeat a key
  // (`component`) that a child binds again.
  const l = root.child({ component, ...bindings });
  const at =
    (level: 'debug' | 'info' | 'warn' | 'error') =>
    (message: string, fields?: LogFields): void => {
      if (fields === undefined) l[level](message);
      else l[level](fields, message);
    };
  return {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (c) => wrap(root, `${component}/${c}`, bindings),
  };
}

let stderr: DestinationStream | null = null;

/** One synchronous stderr destination per process, shared by every logger. */
function stderrDestination(): DestinationStream {
  if (stderr === null) {
    const boom = destination({ dest: 2, sync: true });
    // A log line that cannot be written (stderr's reader gone: EPIPE) must not take
    // the process down with an unhandled 'error': an agent's postgres dies with it.
    // A full pipe (EAGAIN) is retried by the destination itself, as before.
    boom.on('error', () => undefined);
    stderr = boom;
  }
  return stderr;
}

/**
 * pino-pretty's formatter in front of `sink`: each JSON line pino writes is rendered
 * and written at once. Loaded only when asked for (the agent starts without it).
 */
function prettyStream(sink: DestinationStream, colorize: boolean): DestinationStream {
  const { prettyFactory } = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty');
  const render = prettyFactory({
    colorize,
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
    ignore: 'pid,hostname,component,cluster,member',
    messageFormat: '[{component}{if member} {member}{end}] {msg}',
    singleLine: true,
  });
  return { write: (line: string) => sink.write(render(line)) };
}

/**
 * Resolves the format and level a command logs with: its flag, else the
 * environment (`PGHA_LOG_FORMAT`, `PGHA_LOG_LEVEL`; empty counts as unset), else
 * `json` and `info`. Refuses an unknown value (PghaError `invalid-option`, naming the
 * ones it takes).
 */
export function resolveLogSettings(
  flags: { readonly logFormat?: string; readonly logLevel?: string },
  env: NodeJS.ProcessEnv,
): { readonly format: LogFormat; readonly level: LogLevel } {
  const format = flags.logFormat ?? (env.PGHA_LOG_FORMAT || 'json');
  const level = flags.logLevel ?? (env.PGHA_LOG_LEVEL || 'info');
  if (!(logFormats as readonly string[]).includes(format))
    throw new PghaError(
      'invalid-option',
      `log format '${format}' is not one of ${logFormats.join(', ')}: give --log-format json|pretty (or PGHA_LOG_FORMAT)`,
    );
  if (!(logLevels as readonly string[]).includes(level))
    throw new PghaError(
      'invalid-option',
      `log level '${level}' is not one of ${logLevels.join(', ')}: give --log-level with one of them (or PGHA_LOG_LEVEL)`,
    );
  return { format: format as LogFormat, level: level as LogLevel };
}

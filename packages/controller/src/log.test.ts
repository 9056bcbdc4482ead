import { describe, expect, it } from 'vitest';
import { createLogger, type LoggerOptions, resolveLogSettings } from './log.js';

function capture(options: LoggerOptions = {}) {
  const lines: string[] = [];
  const log = createLogger('agent', { ...options, write: (line) => lines.push(line) });
  return { log, lines };
}

describe('createLogger (json)', () => {
  it('writes one JSON object a line with time, level, bindings, the message and the fields', () => {
    const { log, lines } = capture({ bindings: { cluster: 'demo', member: 'demo-1' } });
    log.info('action: promote', { term: 3, target: { member: 'demo-1', term: 4 }, leaseRemainingMillis: 1500 });
    expect(lines).toHaveLength(1);
    expect(lines[0]!.endsWith('\n')).toBe(true);
    expect(lines[0]!.slice(0, -1)).not.toContain('\n');
    const line = JSON.parse(lines[0]!);
    expect(line).toMatchObject({
      level: 'info',
      component: 'agent',
      cluster: 'demo',
      member: 'demo-1',
      msg: 'action: promote',
      term: 3,
      target: { member: 'demo-1', term: 4 },
      leaseRemainingMillis: 1500,
      pid: process.pid,
    });
    expect(new Date(line.time).toISOString()).toBe(line.time);
  });

  it('keeps the message text greppable inside the JSON line', () => {
    const { log, lines } = capture();
    log.warn('FENCING: lease deadline passed');
    expect(lines[0]).toMatch(/FENCING: lease deadline passed/);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 'warn' });
  });

  it('names a child by its path and keeps the bindings once', () => {
    const { log, lines } = capture({ bindings: { cluster: 'demo' } });
    log.child('health').child('api').error('bound');
    expect(lines[0]!.match(/"component"/g)).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 'error', component: 'agent/health/api', cluster: 'demo' });
  });

  it('writes debug lines only at level debug, and nothing when silent', () => {
    const info = capture();
    info.log.debug('decision: none');
    expect(info.lines).toEqual([]);
    const debug = capture({ level: 'debug' });
    debug.log.debug('decision: none', { term: 3 });
    expect(JSON.parse(debug.lines[0]!)).toMatchObject({ level: 'debug', msg: 'decision: none', term: 3 });
    const silent = capture({ level: 'silent' });
    silent.log.error('x');
    expect(silent.lines).toEqual([]);
  });

  it('takes a bare write function, as before', () => {
    const lines: string[] = [];
    createLogger('test', (line) => lines.push(line)).info('hello');
    expect(JSON.parse(lines[0]!)).toMatchObject({ component: 'test', msg: 'hello' });
  });
});

describe('createLogger (pretty)', () => {
  it('writes one readable line a event: time, level, component and member, message, then the fields', () => {
    const { log, lines } = capture({
      format: 'pretty',
      colorize: false,
      bindings: { cluster: 'demo', member: 'demo-1' },
    });
    log.info('action: promote', { term: 3, leaseRemainingMillis: 1500 });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}\] INFO: \[agent demo-1\] action: promote \{"term":3,"leaseRemainingMillis":1500\}\n$/,
    );
    expect(lines[0]).not.toContain('"level"');
  });

  it('shows a line without fields as its message alone', () => {
    const { log, lines } = capture({ format: 'pretty', colorize: false });
    log.child('controller demo').warn('switchover rejected');
    expect(lines[0]).toMatch(/ WARN: \[agent\/controller demo\] switchover rejected\n$/);
  });
});

describe('resolveLogSettings', () => {
  it('prefers the flag, then the environment, then json and info', () => {
    expect(resolveLogSettings({}, {})).toEqual({ format: 'json', level: 'info' });
    expect(resolveLogSettings({}, { PGHA_LOG_FORMAT: 'pretty', PGHA_LOG_LEVEL: 'debug' })).toEqual({
      format: 'pretty',
      level: 'debug',
    });
    expect(resolveLogSettings({ logFormat: 'json', logLevel: 'warn' }, { PGHA_LOG_FORMAT: 'pretty' })).toEqual({
      format: 'json',
      level: 'warn',
    });
    expect(resolveLogSettings({}, { PGHA_LOG_FORMAT: '' })).toEqual({ format: 'json', level: 'info' });
  });

  it('refuses an unknown format or level, naming the ones it takes', () => {
    expect(() => resolveLogSettings({}, { PGHA_LOG_FORMAT: 'logfmt' })).toThrow(
      /log format 'logfmt' is not one of json, pretty/,
    );
    expect(() => resolveLogSettings({ logLevel: 'verbose' }, {})).toThrow(
      /log level 'verbose' is not one of debug, info, warn, error, silent/,
    );
  });
});

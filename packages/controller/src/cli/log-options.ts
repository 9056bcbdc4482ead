import { Option } from 'commander';
import { createLogger, type LogFields, type Logger, logFormats, logLevels, resolveLogSettings } from '../log.js';

/** The log flags as commander parses them. */
export interface LogFlags {
  readonly logFormat?: string;
  readonly logLevel?: string;
}

/**
 * `--log-format json|pretty`, for a long-running command (the agent, the controller,
 * the operator). No commander default: an unset flag falls back to PGHA_LOG_FORMAT,
 * then to json.
 */
export function logFormatOption(): Option {
  return new Option(
    '--log-format <format>',
    'log lines on stderr as JSON (one object a line) or pretty (readable, through pino-pretty) (env PGHA_LOG_FORMAT; default json)',
  ).choices(logFormats);
}

/** `--log-level`: an unset flag falls back to PGHA_LOG_LEVEL, then to info. */
export function logLevelOption(): Option {
  return new Option('--log-level <level>', 'least severe level logged (env PGHA_LOG_LEVEL; default info)').choices(
    logLevels,
  );
}

/** The logger a command runs with, from its flags and the environment; `bindings` go on every line. */
export function commandLogger(component: string, flags: LogFlags, bindings: LogFields): Logger {
  return createLogger(component, { ...resolveLogSettings(flags, process.env), bindings });
}

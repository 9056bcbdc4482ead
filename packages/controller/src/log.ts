/** A line logger: one timestamped line per event, to stderr (stdout stays for results). */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  child(component: string): Logger;
}

/** Logs `<ISO time> <level> [<component>] <message>` lines to stderr. */
export function createLogger(
  component: string,
  write: (line: string) => void = (l) => process.stderr.write(l),
): Logger {
  const line = (level: string, message: string) =>
    write(`${new Date().toISOString()} ${level} [${component}] ${message}\n`);
  return {
    info: (m) => line('INFO ', m),
    warn: (m) => line('WARN ', m),
    error: (m) => line('ERROR', m),
    child: (c) => createLogger(`${component}/${c}`, write),
  };
}

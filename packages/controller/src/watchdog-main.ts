/**
 * Entry of the watchdog process the agent starts (see agent/watchdog.ts): only the
 * watchdog's loop, nothing else loaded, so a restarted watchdog is armed quickly.
 */
import { runWatchdog } from './agent/watchdog-process.js';

runWatchdog();

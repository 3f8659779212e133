import { pino, type Logger } from "pino";
import { createLogSocketStream, type LogSocketStream } from "./log-socket.ts";

export interface LoggerOptions {
  readonly level: string;
  /** Also write every line to this unix socket. */
  readonly socketPath?: string | undefined;
  /** Where lines go besides the socket; stdout by default. */
  readonly destination?: { write(line: string): void };
}

/** The one root logger: JSON lines to stdout (and to the log socket when configured). */
export function createLogger(options: LoggerOptions): { log: Logger; socket: LogSocketStream | undefined } {
  const base = { service: "aggregate", pid: process.pid };
  const primary = options.destination ?? pino.destination({ dest: 1, sync: true });
  if (!options.socketPath) return { log: pino({ level: options.level, base }, primary), socket: undefined };
  const socket = createLogSocketStream(options.socketPath);
  const log = pino(
    { level: options.level, base },
    pino.multistream(
      [
        { level: "trace", stream: primary },
        { level: "trace", stream: socket },
      ],
      { dedupe: false },
    ),
  );
  return { log, socket };
}

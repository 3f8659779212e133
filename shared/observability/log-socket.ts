/**
 * A log destination that also writes each JSON line to a unix socket (AGGREGATE_LOGGER_SOCKET).
 * Logging must never block or crash the service: while the socket is missing, slow or gone,
 * lines are dropped (and counted) and the stream reconnects with backoff in the background.
 */
import { connect, type Socket } from "node:net";

export interface LogSocketStream {
  write(line: string): void;
  /** Lines not delivered because the socket was down or full. */
  readonly dropped: number;
  readonly connected: boolean;
  close(): void;
}

/** Bytes buffered for a slow reader before lines are dropped instead. */
const MAX_BUFFERED = 1024 * 1024;

export function createLogSocketStream(
  path: string,
  options: { maxBackoffMs?: number } = {},
): LogSocketStream {
  const maxBackoff = options.maxBackoffMs ?? 5_000;
  let socket: Socket | undefined;
  let connected = false;
  let closed = false;
  let dropped = 0;
  let backoff = 100;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const schedule = () => {
    if (closed || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      open();
    }, backoff);
    timer.unref();
    backoff = Math.min(maxBackoff, backoff * 2);
  };

  const open = () => {
    if (closed) return;
    const s = connect(path);
    socket = s;
    s.unref();
    s.on("connect", () => {
      connected = true;
      backoff = 100;
    });
    // Every failure ends in "close": reconnect from there.
    s.on("error", () => undefined);
    s.on("close", () => {
      connected = false;
      if (socket === s) socket = undefined;
      schedule();
    });
  };

  open();
  return {
    write(line) {
      if (!connected || !socket || socket.writableLength > MAX_BUFFERED) {
        dropped++;
        return;
      }
      socket.write(line);
    },
    get dropped() {
      return dropped;
    },
    get connected() {
      return connected;
    },
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      socket?.destroy();
    },
  };
}

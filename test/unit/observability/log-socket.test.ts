import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger, createLogSocketStream } from "../../../shared/observability/index.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function socketPath(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "logsock-"));
  dirs.push(dir);
  return path.join(dir, "log.sock");
}

function listen(file: string): Promise<{ server: Server; lines: string[] }> {
  const lines: string[] = [];
  const server = createServer((conn) => {
    let buf = "";
    conn.on("data", (d) => {
      buf += d.toString();
      const parts = buf.split("\n");
      buf = parts.pop()!;
      lines.push(...parts);
    });
    conn.on("error", () => undefined);
  });
  return new Promise((resolve) => server.listen(file, () => resolve({ server, lines })));
}

async function until(check: () => boolean, ms = 3_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error("timed out");
    await sleep(10);
  }
}

describe("log socket", () => {
  it("writes the same JSON lines to the socket as to the primary destination", async () => {
    const file = socketPath();
    const { server, lines } = await listen(file);
    const primary: string[] = [];
    const { log, socket } = createLogger({
      level: "info",
      socketPath: file,
      destination: { write: (l) => primary.push(l) },
    });
    await until(() => socket!.connected);
    log.info({ tenant_id: "acme" }, "hello");
    await until(() => lines.length === 1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ msg: "hello", tenant_id: "acme" });
    expect(JSON.parse(primary[0]!)).toMatchObject({ msg: "hello", tenant_id: "acme" });
    socket!.close();
    server.close();
  });

  it("drops lines without blocking while the socket is gone, and reconnects when it is back", async () => {
    const file = socketPath();
    const stream = createLogSocketStream(file, { maxBackoffMs: 50 });
    for (let i = 0; i < 1000; i++) stream.write(`{"n":${i}}\n`);
    expect(stream.dropped).toBe(1000);
    const { server, lines } = await listen(file);
    await until(() => stream.connected);
    stream.write('{"after":true}\n');
    await until(() => lines.length === 1);
    // the reader disappears mid-run: writes go on without throwing
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      stream.close();
    });
    expect(() => stream.write('{"late":true}\n')).not.toThrow();
  });
});

/**
 * The operations port: health, readiness, metrics and admin (CONTRACT.md §6). node:http is
 * enough for a handful of routes; each route is a function of the request.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface HttpReply {
  readonly status: number;
  readonly body: string | object;
  readonly contentType?: string;
}

export type Route = (req: IncomingMessage, body: string) => Promise<HttpReply> | HttpReply;

export interface OpsServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Largest request body accepted (admin requests are tiny). */
const MAX_BODY = 64 * 1024;

export async function startOpsServer(
  port: number,
  routes: Readonly<Record<string, Route>>,
  onError: (err: unknown) => void,
): Promise<OpsServer> {
  const server: Server = createServer((req, res) => {
    void handle(req, res).catch((err: unknown) => {
      onError(err);
      send(res, { status: 500, body: { error: { code: "Internal", message: "internal error" } } });
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    const route = routes[`${req.method ?? "GET"} ${url.pathname}`];
    if (!route) {
      const known = Object.keys(routes).some((k) => k.endsWith(` ${url.pathname}`));
      send(
        res,
        known
          ? { status: 405, body: { error: "method not allowed" } }
          : { status: 404, body: { error: "not found" } },
      );
      req.resume();
      return;
    }
    const body = await readBody(req);
    if (body === undefined) {
      send(res, { status: 413, body: { error: "request body too large" } });
      return;
    }
    send(res, await route(req, body));
  }

  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function send(res: ServerResponse, reply: HttpReply): void {
  const text = typeof reply.body === "string" ? reply.body : JSON.stringify(reply.body);
  res.writeHead(reply.status, {
    "content-type":
      reply.contentType ??
      (typeof reply.body === "string" ? "text/plain; charset=utf-8" : "application/json"),
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > MAX_BODY) return undefined;
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * What counts as a NATS server address in `AGGREGATE_NATS_URL`, and how to show one without its
 * credentials. nats.js accepts `nats://`, `tls://`, `ws://` and `wss://` URLs and bare `host:port`.
 */

const URL_SCHEMES: ReadonlySet<string> = new Set(["nats:", "tls:", "ws:", "wss:"]);

/** A hostname, an IPv4 address or a bracketed IPv6 address, then `:port`. */
const HOST_PORT_RE = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):([0-9]{1,5})$/;

/**
 * The WHATWG URL parser silently drops tabs and newlines inside a URL, so whitespace and control
 * characters are refused before it sees the entry.
 */
// eslint-disable-next-line no-control-regex
const WHITESPACE_OR_CONTROL_RE = /[\s\u0000-\u001f\u007f]/;

/** Whether `entry` is a `nats://`, `tls://`, `ws://` or `wss://` URL with a host, or `host:port`. */
export function isNatsServerAddress(entry: string): boolean {
  if (entry === "" || WHITESPACE_OR_CONTROL_RE.test(entry)) return false;
  if (entry.includes("://")) {
    let url: URL;
    try {
      url = new URL(entry);
    } catch {
      return false;
    }
    return URL_SCHEMES.has(url.protocol) && url.hostname !== "";
  }
  const match = HOST_PORT_RE.exec(entry);
  if (match === null) return false;
  const port = Number(match[1]);
  return port >= 1 && port <= 65_535;
}

const USERINFO_RE = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#]*)@/;

/**
 * `entry` with the secret part of its user info replaced: `nats://user:<redacted>@host` for a
 * user and password, `nats://<redacted>@host` for a bare token (NATS reads a lone user as a token).
 * Works on strings that are not valid URLs, since those are the ones that end up in error messages.
 */
export function redactUrlCredentials(entry: string): string {
  return entry.replace(USERINFO_RE, (_match, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(":");
    const shown = colon === -1 ? REDACTED : `${userinfo.slice(0, colon)}:${REDACTED}`;
    return `${scheme}${shown}@`;
  });
}

/** What a secret is shown as, in errors and in the start-up log line. */
export const REDACTED = "<redacted>";

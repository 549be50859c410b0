/**
 * One request as every layer sees it: the edge's steps, the engine and the proxy take an Exchange,
 * never a bare (req, res) pair. Nothing here replaces a method of Node's request, response or socket:
 * what a step adds (the counted body, the user) is a field of the Exchange, and headers every response
 * must carry (HSTS) are set with `res.setHeader` before anything is written.
 *
 * A Handler answers an exchange; a Step wraps the next handler (a chain of steps around one innermost
 * handler, `compose`). A handler resolves when it is done with the exchange (answered, or the client
 * gone) and rejects only on a bug: the access-log step turns a rejection into a 500.
 */
import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'

/** Docker and the OCI conformance suite look for this header on every answer, errors included. */
export const API_VERSION_HEADER = 'Docker-Distribution-API-Version'
export const API_VERSION = 'registry/2.0'

/** Which listener an exchange came in on. */
export type Door = 'https' | 'http' | 'local' | 'internal'

/** What the access log reports of an exchange; filled in while it runs. */
export interface Meter {
  /** Request body bytes read from the client (counted by the body-limit step). */
  received: number
  /** Response body bytes written by Berth (headers excluded). */
  sent: number
  /** Why the exchange did not complete normally. */
  error?: string
}

export interface Exchange {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  /**
   * The request id: X-Request-Id as sent by the client (or a front proxy) when it is sane (1 to 128
   * of `A-Z a-z 0-9 . _ : -`), else a new UUID. Returned in the answer's X-Request-Id and logged as
   * `id` on every log line of this exchange.
   */
  readonly id: string
  readonly door: Door
  /** The client's address, IPv4-mapped IPv6 shown as IPv4; read at the start (Node may detach the socket later). */
  readonly remote: string
  /** The raw path (never decoded) and the query. */
  readonly path: string
  readonly query: URLSearchParams
  /** The request body. The body-limit step replaces it with a counting stream; readers read this, never `req`. */
  body: Readable
  /** The user the authentication step verified, if any. */
  user: string | undefined
  /** How `user` proved who they are (the access log's `auth`): htpasswd Basic, a token, a UI session. */
  credential: 'basic' | 'bearer' | 'session' | undefined
  /**
   * What the caller may do per repository, set by the authorization step when access rules are on;
   * undefined means every action is allowed (no access file). The engine asks it for what only it
   * can tell: moving an existing tag (`overwrite`), the source of a cross-repository mount, and
   * which repositories a catalog lists.
   */
  access: Permissions | undefined
  /** The engine's route name (`manifest`, `blob` …) once the engine matched the path; for metrics labels, never the raw path. */
  route: string | undefined
  /** The repository named in the path, once the engine matched it. */
  repository: string | undefined
  /** The client sent `Expect: 100-continue` and waits for it before the body. */
  readonly expectsContinue: boolean
  readonly meter: Meter
  /** The access log writes this exchange at debug, not info (health probes, which come every few seconds). */
  isQuiet: boolean
}

/** An action of the access rules (access/rules.ts). */
export type AccessAction = 'pull' | 'push' | 'overwrite' | 'delete'

export interface Permissions {
  may(repository: string, action: AccessAction): boolean
  /** Whether the catalog names `repository` to this caller: the rules let them pull it. */
  listable(repository: string): boolean
}

export type Handler = (exchange: Exchange) => Promise<void>
export type Step = (exchange: Exchange, next: Handler) => Promise<void>

/** The handler that runs `steps` in order around `inner`. */
export function compose(steps: readonly Step[], inner: Handler): Handler {
  return steps.reduceRight<Handler>((next, step) => exchange => step(exchange, next), inner)
}

/** The query of most requests (none): shared, so handlers only read it. */
const NO_QUERY = new URLSearchParams()
const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

export function createExchange(req: IncomingMessage, res: ServerResponse, door: Door, options: { expectsContinue?: boolean } = {}): Exchange {
  const rawUrl = req.url ?? '/'
  const queryAt = rawUrl.indexOf('?')
  const given = req.headers['x-request-id']
  // Every answer carries it, errors included; steps add theirs (HSTS) the same way, before any writeHead.
  res.setHeader(API_VERSION_HEADER, API_VERSION)
  return {
    req,
    res,
    id: typeof given === 'string' && SANE_REQUEST_ID.test(given) ? given : randomUUID(),
    door,
    remote: clientAddress(req),
    path: queryAt === -1 ? rawUrl : rawUrl.slice(0, queryAt),
    query: queryAt === -1 ? NO_QUERY : new URLSearchParams(rawUrl.slice(queryAt + 1)),
    body: req,
    user: undefined,
    credential: undefined,
    access: undefined,
    route: undefined,
    repository: undefined,
    expectsContinue: options.expectsContinue ?? false,
    meter: { received: 0, sent: 0 },
    isQuiet: false,
  }
}

/** The client's address, with an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) shown as IPv4. */
export function clientAddress(req: IncomingMessage): string {
  const address = req.socket?.remoteAddress ?? ''
  return address.startsWith('::ffff:') ? address.slice(7) : address
}

/** How many header lines named `name` (lower case) a request had, duplicates included. */
export function countHeaderLines(rawHeaders: readonly string[], name: string): number {
  let count = 0
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const header = rawHeaders[i]!
    if (header.length === name.length && header.toLowerCase() === name) count++
  }
  return count
}

/** Whether the request announces a body (a non-zero length, or a transfer coding). */
export function hasRequestBody(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0'
}

/**
 * The route table of the Distribution API. Paths are matched on the raw request path, never a
 * decoded one: `%2F` and friends stay as they are and then fail the name grammar, so an encoded
 * slash can never become a path separator. Names may contain `/`, so the name group is greedy
 * and the more specific routes come first (first match wins).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import type { Actor, EventSink } from '../events/events.js'
import type { Exchange } from '../http/exchange.js'
import type { Logger } from '../log.js'
import type { Mirror } from '../mirror/mirror.js'
import type { QuotaCheck } from '../storage/quota.js'
import type { RegistryStore } from '../storage/registry-store.js'

export interface RouteParams {
  name?: string
  reference?: string
  digest?: string
  uploadId?: string
}

export interface HandlerContext {
  /** The whole exchange (its meter counts what a handler writes; see http/respond.ts). */
  readonly exchange: Exchange
  readonly request: IncomingMessage
  readonly response: ServerResponse
  /** The request body, counted against the body limit: read this, never `request`. */
  readonly body: Readable
  readonly params: RouteParams
  readonly query: URLSearchParams
  readonly store: RegistryStore
  readonly logger: Logger
  readonly maxManifestBytes: number
  /** Committed changes are told here (the audit trail, webhooks). */
  readonly events: EventSink
  /** The pull-through cache, when mirrors are configured: manifest and blob reads consult it first. */
  readonly mirror: Mirror | undefined
  /** Repository quotas, when configured: asked before an upload starts and before a manifest is stored. */
  readonly quota: QuotaCheck | undefined
}

export type Handler = (context: HandlerContext) => Promise<void>

export interface Route {
  readonly name: string
  readonly pattern: RegExp
  readonly handlers: Partial<Record<string, Handler>>
}

export interface RouteMatch {
  route: Route
  params: RouteParams
}

export function matchRoute(routes: readonly Route[], path: string): RouteMatch | undefined {
  for (const route of routes) {
    const match = route.pattern.exec(path)
    if (match) return { route, params: { ...(match.groups as RouteParams | undefined) } }
  }
  return undefined
}

/** The name of the route `path` matches, without capturing its parameters; undefined when none does. */
export function routeNameOf(routes: readonly Route[], path: string): string | undefined {
  for (const route of routes) if (route.pattern.test(path)) return route.name
  return undefined
}

/** Who made the change an exchange carries: its user, client address and request id. */
export function actorOf(exchange: Exchange): Actor {
  const { headers, method } = exchange.req
  return {
    user: exchange.user,
    address: exchange.remote,
    requestId: exchange.id,
    method,
    host: headers.host,
    userAgent: headers['user-agent'],
    scheme: exchange.door === 'https' ? 'https' : 'http',
  }
}

/**
 * The token realm: the Handler that answers distribution's token request (docs/spec/auth/token.md)
 *
 *   GET <realm>?service=<service>&scope=<scope>&scope=...[&account=<user>][&offline_token=true&client_id=...]
 *
 * with `Authorization: Basic` (a user) or nothing (anonymous), by a token that holds, for each
 * requested scope, the requested actions that `grant` allows: never an action that was not asked
 * for. A partial or empty grant is still a 200 (the spec: "must not be considered an error"); the
 * registry then answers the request itself with 401 or 403.
 *
 * What is supported, and why:
 * - GET only. docker, podman, skopeo and buildkit fetch tokens this way. The OAuth2 POST form is
 *   answered 404, which the spec (oauth.md) names as the signal to fall back to GET: containerd
 *   (ctr, nerdctl, the CRI) tries POST first when it has credentials and falls back on 404; docker
 *   POSTs only with a refresh token, which Berth never issues.
 * - `offline_token` and `client_id` are accepted and ignored: no refresh token is issued (docker login
 *   then keeps the password in its credential store, as with Basic), so there is no long-lived
 *   secret to store, revoke or rotate.
 * - `service`, when present, must be ours (a token for any other audience would be refused by the
 *   registry anyway); `account`, when present with Basic credentials, must name the same user
 *   (as cesanta/docker_auth checks). Both → 400.
 * - A query over 8 KiB or with more than 100 scopes → 400 before any credential is checked.
 *
 * Answers: 200 `{ token, access_token, expires_in, issued_at }` with `Cache-Control: no-store`;
 * wrong credentials, or an Authorization header that is not Basic user:password → 401 UNAUTHORIZED
 * with a Basic challenge (docker shows the message: "unauthorized: incorrect username or password"); throttled → 429 with Retry-After. The
 * Authorization header and the tokens are never logged.
 */
import type { Exchange, Handler } from '../http/exchange.js'
import { RegistryError } from '../http/errors.js'
import { sendError, sendJson } from '../http/respond.js'
import type { Logger } from '../log.js'
import { parseBasicAuthorization } from '../http/authorization.js'
import { parseScopes, type ResourceAccess } from './scope.js'
import type { TokenService } from './token-service.js'

/** How a token request's credentials were judged. */
export type LoginResult =
  | { readonly kind: 'anonymous' }
  | { readonly kind: 'ok'; readonly user: string }
  | { readonly kind: 'refused' }
  | { readonly kind: 'throttled'; readonly retryAfterSeconds: number }

export interface TokenEndpointOptions {
  tokens: TokenService
  /**
   * Checks the request's Basic credentials; called only when the request has none (answer anonymous)
   * or well-formed Basic ones (a header that is not goes 401 without a call). Must not reject.
   */
  login: (exchange: Exchange) => Promise<LoginResult>
  /**
   * The actions `subject` (undefined: anonymous) may take on `requested`'s resource, of those it
   * names or any others: the endpoint keeps only those also requested.
   */
  grant: (subject: string | undefined, requested: Readonly<ResourceAccess>) => readonly string[]
  /** The realm of the Basic challenge sent with a refused login. */
  realm: string
  logger: Logger
}

/** Longest query accepted, in bytes as sent. */
export const MAX_TOKEN_QUERY_BYTES = 8 * 1024
/** Most scopes one request may name (docker sends one to three). */
export const MAX_TOKEN_SCOPES = 100

export function tokenEndpoint(options: TokenEndpointOptions): Handler {
  const { tokens, login, grant, logger } = options
  const challenge = `Basic realm="${options.realm.replace(/["\\]/g, '')}", charset="UTF-8"`
  return async exchange => {
    const method = exchange.req.method
    if (method === 'POST') {
      return sendError(exchange, new RegistryError('NOT_FOUND', null, { message: 'no OAuth2 POST form here; request a token with GET' }))
    }
    if (method !== 'GET') {
      return sendError(exchange, new RegistryError('UNSUPPORTED', null, { message: 'request a token with GET', headers: { Allow: 'GET' } }))
    }
    const request = readRequest(exchange, tokens.service)
    if (request.kind === 'unreadable-credentials') return sendError(exchange, refusedLogin(challenge, 'credentials are not Basic user:password'))
    if (request.kind === 'bad') return sendError(exchange, new RegistryError('UNSUPPORTED', null, { status: 400, message: request.why }))

    const outcome = await login(exchange)
    if (outcome.kind === 'refused') return sendError(exchange, refusedLogin(challenge, 'incorrect username or password'))
    if (outcome.kind === 'throttled') {
      const headers = { 'Retry-After': String(outcome.retryAfterSeconds) }
      return sendError(exchange, new RegistryError('TOOMANYREQUESTS', null, { message: 'too many failed logins from this address; retry later', headers }))
    }
    const subject = outcome.kind === 'ok' ? outcome.user : undefined
    exchange.user = subject
    if (subject !== undefined) exchange.credential = 'basic'

    const granted = request.scopes.map(requested => {
      const allowed = grant(subject, requested)
      // `*` (all actions, as some clients ask for a delete) is answered with the actions allowed, by name.
      const actions = requested.actions.includes('*') ? [...allowed] : requested.actions.filter(action => allowed.includes(action))
      return { type: requested.type, name: requested.name, actions }
    })
    const issued = tokens.issue(subject, granted)
    logger.debug('token issued', {
      id: exchange.id,
      user: subject ?? '-',
      requested: request.scopes.length,
      granted: granted.filter(entry => entry.actions.length > 0).length,
    })
    sendJson(exchange, 200, issued, { 'Cache-Control': 'no-store', Pragma: 'no-cache' })
  }
}

type TokenRequest = { kind: 'ok'; scopes: ResourceAccess[] } | { kind: 'bad'; why: string } | { kind: 'unreadable-credentials' }

const bad = (why: string): TokenRequest => ({ kind: 'bad', why })

/** The requested scopes, or why the request is refused. */
function readRequest(exchange: Exchange, service: string): TokenRequest {
  const url = exchange.req.url ?? ''
  if (Buffer.byteLength(url) - exchange.path.length > MAX_TOKEN_QUERY_BYTES) return bad(`query longer than ${MAX_TOKEN_QUERY_BYTES} bytes`)
  const { query } = exchange
  const services = query.getAll('service')
  if (services.length > 1) return bad('more than one service')
  if (services[0] !== undefined && services[0] !== service) return bad(`this endpoint issues tokens for the service ${JSON.stringify(service)} only`)
  const accounts = query.getAll('account')
  if (accounts.length > 1) return bad('more than one account')
  // A scope parameter may hold several, space-separated (as a challenge's scope does).
  const texts = query.getAll('scope').flatMap(value => value.split(' ').filter(text => text !== ''))
  if (texts.length > MAX_TOKEN_SCOPES) return bad(`more than ${MAX_TOKEN_SCOPES} scopes`)
  const authorization = exchange.req.headers.authorization
  if (authorization !== undefined) {
    const basic = parseBasicAuthorization(authorization)
    if (basic === undefined) return { kind: 'unreadable-credentials' }
    // Without credentials an account names no one and is ignored.
    if (accounts[0] !== undefined && accounts[0] !== '' && accounts[0] !== basic.user) return bad('account does not name the user of the credentials')
  }
  return { kind: 'ok', scopes: parseScopes(texts) }
}

function refusedLogin(challenge: string, message: string): RegistryError {
  return new RegistryError('UNAUTHORIZED', null, { message, headers: { 'WWW-Authenticate': challenge } })
}

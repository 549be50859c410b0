/**
 * The web UI, one step of the edge's chain, on every registry door (HTTPS, local, internal), same
 * origin as `/v2/`, so no CORS:
 *
 *   GET /, /ui/...            the page (one HTML document; the browser code routes)
 *   GET /ui/assets/<file>     the bundle (src/ui, built by esbuild into ui-assets.generated.ts)
 *   /api/ui/...               JSON: session, login, logout (here), data (ui-api.ts)
 *
 * It runs before authentication and authorizes by itself from the session cookie (sessions.ts),
 * so no UI or API answer ever carries `WWW-Authenticate`: the browser never shows its Basic popup
 * (distribution#4458, zot's `X-ZOT-API-CLIENT` trick done by path instead of a header).
 *
 * Who sees what: with an access file, its rules for the session's user (pull to see, delete to
 * delete); without one, a logged-in user everything, and anonymous visitors everything only
 * where the registry asks no login (no htpasswd users), else nothing.
 *
 * Every answer carries a strict Content-Security-Policy (scripts and styles from this origin
 * only, no inline code), `X-Content-Type-Options: nosniff` and `frame-ancestors 'none'`.
 */
import type { EventSink } from '../events/events.js'
import type { Exchange, Step } from '../http/exchange.js'
import { RegistryError, toHttpError } from '../http/errors.js'
import { sendError, sendJson } from '../http/respond.js'
import { toRegistryError } from '../registry/errors.js'
import type { Logger } from '../log.js'
import type { HtpasswdAccessController } from '../edge/auth/basic-auth.js'
import { auditLogin, type LoginRefusals } from '../edge/steps/authenticate.js'
import type { RulePolicy } from '../edge/steps/access-control.js'
import type { SessionInfo } from './api-types.js'
import { CSRF_HEADER, SESSION_COOKIE, cookieValue, sessionCookie, type Session, type Sessions } from './sessions.js'
import { UiApi, type UiApiOptions, type Viewer } from './ui-api.js'
import { UI_ASSETS, UI_INDEX_HTML } from './ui-assets.generated.js'

export const CONTENT_SECURITY_POLICY =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': CONTENT_SECURITY_POLICY,
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'same-origin',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
}

/** Largest login body read. */
const MAX_LOGIN_BYTES = 4096

export interface WebUiOptions extends UiApiOptions {
  readonly sessions: Sessions
  /** The htpasswd users; undefined when no file is configured. */
  readonly auth: HtpasswdAccessController | undefined
  /** The access rules in force, when an access file is configured. */
  readonly policy: (() => RulePolicy) | undefined
  readonly refusals?: LoginRefusals | undefined
  readonly events: EventSink
  readonly logger: Logger
}

/** Whether a path belongs to the UI. */
export function isUiPath(path: string): boolean {
  return path === '/' || path === '/ui' || path.startsWith('/ui/') || path === '/api/ui' || path.startsWith('/api/ui/') || path === '/favicon.ico'
}

export function webUi(options: WebUiOptions): Step {
  const api = new UiApi(options)
  return async (exchange, next) => {
    const { path } = exchange
    if (!isUiPath(path)) return next(exchange)
    exchange.route = path.startsWith('/api/ui') ? 'ui-api' : 'ui'
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) exchange.res.setHeader(name, value)
    try {
      if (path.startsWith('/api/ui')) await answerApi(exchange, path.slice('/api/ui/'.length), options, api)
      else answerPage(exchange, path)
    } catch (error) {
      const known = toHttpError(error) ?? toRegistryError(error)
      if (known.status >= 500) options.logger.error('web UI request failed', { path: path.slice(0, 200), error: (error as Error).message, id: exchange.id })
      // Never a challenge header from here, whatever the error carried.
      const headers = Object.fromEntries(Object.entries(known.headers).filter(([name]) => name.toLowerCase() !== 'www-authenticate'))
      sendError(exchange, new RegistryError(known.code, known.detail, { status: known.status, message: known.message, headers }))
    }
  }
}

function answerPage(exchange: Exchange, path: string): void {
  const method = exchange.req.method
  if (method !== 'GET' && method !== 'HEAD')
    throw new RegistryError('UNSUPPORTED', { method }, { message: 'pages are read with GET', headers: { Allow: 'GET, HEAD' } })
  const name = path === '/favicon.ico' ? 'icon.svg' : path.startsWith('/ui/assets/') ? path.slice('/ui/assets/'.length) : undefined
  if (name !== undefined) {
    const asset = Object.hasOwn(UI_ASSETS, name) ? UI_ASSETS[name] : undefined
    if (asset === undefined) throw new RegistryError('NOT_FOUND', null, { message: 'no such file' })
    return sendText(exchange, asset.type, asset.body, 'public, max-age=300')
  }
  sendText(exchange, 'text/html; charset=utf-8', UI_INDEX_HTML, 'no-cache')
}

function sendText(exchange: Exchange, type: string, body: string, cacheControl: string): void {
  const length = Buffer.byteLength(body)
  exchange.res.writeHead(200, { 'Content-Type': type, 'Content-Length': length, 'Cache-Control': cacheControl })
  if (exchange.req.method !== 'HEAD') exchange.meter.sent += length
  exchange.res.end(exchange.req.method === 'HEAD' ? undefined : body)
}

async function answerApi(exchange: Exchange, route: string, options: WebUiOptions, api: UiApi): Promise<void> {
  const method = exchange.req.method ?? 'GET'
  const session = currentSession(exchange, options)
  const changes = method !== 'GET' && method !== 'HEAD'
  if (changes) checkRequestOrigin(exchange, options, session)
  if (route === 'session') {
    if (method !== 'GET') throw new RegistryError('UNSUPPORTED', { method }, { headers: { Allow: 'GET' } })
    const current = session ?? issue(exchange, options, undefined)
    return sendJson(exchange, 200, sessionInfo(options, current), { 'Cache-Control': 'no-store' })
  }
  if (route === 'login') {
    if (method !== 'POST') throw new RegistryError('UNSUPPORTED', { method }, { headers: { Allow: 'POST' } })
    return login(exchange, options)
  }
  if (route === 'logout') {
    if (method !== 'POST') throw new RegistryError('UNSUPPORTED', { method }, { headers: { Allow: 'POST' } })
    if (session !== undefined) options.sessions.revoke(session)
    return sendJson(exchange, 200, sessionInfo(options, issue(exchange, options, undefined)), { 'Cache-Control': 'no-store' })
  }
  exchange.user = session?.user
  exchange.credential = 'session'
  return api.handle(exchange, route, viewerFor(session?.user, options))
}

/** The request's valid session: signed, not expired, not revoked, its user still in the htpasswd file. */
function currentSession(exchange: Exchange, options: WebUiOptions): Session | undefined {
  const session = options.sessions.verify(cookieValue(exchange.req.headers.cookie, SESSION_COOKIE))
  if (session?.user !== undefined && options.auth?.hasUser(session.user) !== true) return undefined
  return session
}

/**
 * A state change must come from this origin: a live session, its CSRF token in the header, and an
 * Origin (else Referer) naming this scheme and host. The cookie is SameSite=Strict besides.
 */
function checkRequestOrigin(exchange: Exchange, options: WebUiOptions, session: Session | undefined): void {
  const { headers } = exchange.req
  const own = `${exchange.door === 'https' ? 'https' : 'http'}://${headers.host ?? ''}`
  const origin = headers.origin
  const referer = headers.referer
  const sameOrigin = origin !== undefined ? origin === own : referer !== undefined && (referer === own || referer.startsWith(`${own}/`))
  if (!sameOrigin) throw new RegistryError('DENIED', null, { message: 'cross-origin request refused' })
  if (session === undefined) throw new RegistryError('UNAUTHORIZED', null, { message: 'no session or the session has expired; reload the page' })
  const token = headers[CSRF_HEADER]
  if (typeof token !== 'string' || !options.sessions.isValidCsrf(session, token)) {
    throw new RegistryError('DENIED', null, { message: 'missing or wrong CSRF token; reload the page' })
  }
}

function issue(exchange: Exchange, options: WebUiOptions, user: string | undefined): Session {
  const { session, cookie } = options.sessions.issue(user)
  const maxAgeSeconds = Math.max(1, Math.floor((session.expiresAt - Date.now()) / 1000))
  exchange.res.setHeader('Set-Cookie', sessionCookie(cookie, { secure: exchange.door === 'https', maxAgeSeconds }))
  return session
}

function sessionInfo(options: WebUiOptions, session: Session): SessionInfo {
  const usersConfigured = options.auth?.enabled === true
  return {
    user: session.user ?? null,
    csrf: options.sessions.csrfToken(session),
    canLogIn: usersConfigured,
    anonymousSees: options.policy !== undefined ? 'some' : usersConfigured ? 'nothing' : 'everything',
    readOnly: options.readOnly(),
  }
}

export function viewerFor(user: string | undefined, options: Pick<WebUiOptions, 'auth' | 'policy'>): Viewer {
  const policy = options.policy?.()
  if (policy !== undefined) return { user, may: (repository, action) => policy.allows(user, repository, action) }
  const everything = user !== undefined || options.auth?.enabled !== true
  return { user, may: () => everything }
}

async function login(exchange: Exchange, options: WebUiOptions): Promise<void> {
  const type = exchange.req.headers['content-type'] ?? ''
  if (!/^application\/json\s*(;|$)/i.test(type)) throw new RegistryError('UNSUPPORTED', null, { status: 415, message: 'send the login as application/json' })
  const body = await readSmallBody(exchange, MAX_LOGIN_BYTES)
  let parsed: unknown
  try {
    parsed = JSON.parse(body)
  } catch {
    throw new RegistryError('UNSUPPORTED', null, { status: 400, message: 'the login is not valid JSON' })
  }
  const { user, password } = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Record<string, unknown>
  if (typeof user !== 'string' || typeof password !== 'string' || user === '' || user.length > 255 || password.length > 1024 || /[:\s]/.test(user)) {
    throw new RegistryError('UNSUPPORTED', null, { status: 400, message: 'give a user name (no spaces or ":") and a password' })
  }
  const auth = options.auth
  if (auth === undefined || !auth.enabled)
    throw new RegistryError('UNSUPPORTED', null, { status: 400, message: 'no users are configured: nothing to log in to' })
  const decision = await auth.check(`Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`, exchange.remote)
  auditLogin(options.events, exchange, decision)
  if (decision.kind === 'throttled') {
    options.refusals?.loginThrottled()
    throw new RegistryError('TOOMANYREQUESTS', null, {
      message: 'too many failed logins from this address; retry later',
      headers: { 'Retry-After': String(decision.retryAfterSeconds) },
    })
  }
  if (decision.kind !== 'ok') {
    options.refusals?.loginFailed()
    throw new RegistryError('UNAUTHORIZED', null, { message: 'incorrect user name or password' })
  }
  exchange.user = decision.user
  exchange.credential = 'basic'
  const session = issue(exchange, options, decision.user)
  sendJson(exchange, 200, sessionInfo(options, session), { 'Cache-Control': 'no-store' })
}

async function readSmallBody(exchange: Exchange, limit: number): Promise<string> {
  const declared = Number(exchange.req.headers['content-length'] ?? '0')
  if (declared > limit) throw new RegistryError('SIZE_INVALID', null, { status: 413, message: `at most ${limit} bytes` })
  const chunks: Buffer[] = []
  let total = 0
  for await (const chunk of exchange.body) {
    total += (chunk as Buffer).length
    if (total > limit) throw new RegistryError('SIZE_INVALID', null, { status: 413, message: `at most ${limit} bytes` })
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks).toString('utf8')
}

/**
 * Web UI sessions: a signed, expiring cookie (`berth_session`), checked without any server-side
 * record, so any instance on a shared bucket accepts a session another instance issued.
 *
 *   berth_session = base64url(JSON {v, sid, u, exp}) "." base64url(HMAC-SHA256(key, payload))
 *
 * Why signed and not a server-side table: Berth runs as several instances on one bucket behind a
 * balancer without sticky sessions; a table in memory would log the user out whenever a request
 * lands on another instance, and a table in the bucket would cost a read per request. The key
 * (32 random bytes) lives in the CertStore beside the token keys (`ui/session-key`: the certs
 * folder, or the bucket with S3), so sessions survive restarts and are shared by every instance.
 *
 * What a signed cookie cannot do by itself, and what Berth does about it:
 * - Logout: the session id is put on a revocation list (in memory, bounded, until the session's
 *   expiry) and the cookie is cleared. With several instances the list is per instance; the
 *   browser drops the cookie in any case, so only a copied cookie outlives a logout elsewhere, and
 *   only until it expires (SESSION_TTL_MS).
 * - A user removed from the htpasswd file: every request checks that the user still exists.
 *
 * CSRF: every state change needs the session's token in the `X-Berth-Csrf` header (derived from
 * the session id with the same key: HMAC, so nothing is stored), an Origin (or Referer) of this
 * very origin, and the cookie is `SameSite=Strict`. A cross-site page can send none of these:
 * a custom header forces a CORS preflight, which Berth never approves.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { CertStoreNotFoundError, type CertStore } from '../edge/tls/cert-store.js'
import type { Logger } from '../log.js'

export const SESSION_COOKIE = 'berth_session'
export const CSRF_HEADER = 'x-berth-csrf'
/** How long a login lasts (absolute, not sliding). */
export const SESSION_TTL_MS = 12 * 3600_000
/** How long an anonymous session (a CSRF token for the login form) lasts. */
export const ANONYMOUS_TTL_MS = 12 * 3600_000
/** Where the key lives in the CertStore. */
export const SESSION_KEY_NAME = 'ui/session-key'
/** Revoked sessions remembered at most (the oldest is forgotten first: it expires first). */
const MAX_REVOKED = 10_000
/** Cookies longer than this are not even parsed. */
const MAX_COOKIE_CHARS = 1024

export interface Session {
  readonly sid: string
  /** The logged-in user; undefined for an anonymous session. */
  readonly user: string | undefined
  /** ms since the epoch. */
  readonly expiresAt: number
}

export interface SessionOptions {
  /** The signing key, at least 32 bytes. */
  readonly key: Buffer
  readonly ttlMs?: number
  readonly now?: () => number
}

/** Issues and checks session cookies and CSRF tokens. */
export class Sessions {
  readonly #key: Buffer
  readonly #ttlMs: number
  readonly #now: () => number
  /** Revoked session ids → their expiry. */
  readonly #revoked = new Map<string, number>()

  constructor(options: SessionOptions) {
    if (options.key.length < 32) throw new RangeError('session key must be at least 32 bytes')
    this.#key = options.key
    this.#ttlMs = options.ttlMs ?? SESSION_TTL_MS
    this.#now = options.now ?? Date.now
  }

  /** A new session (a new id) for `user`, or an anonymous one. */
  issue(user: string | undefined): { session: Session; cookie: string } {
    const session: Session = {
      sid: randomBytes(16).toString('base64url'),
      user,
      expiresAt: this.#now() + (user === undefined ? ANONYMOUS_TTL_MS : this.#ttlMs),
    }
    const payload = Buffer.from(JSON.stringify({ v: 1, sid: session.sid, u: user ?? null, exp: session.expiresAt })).toString('base64url')
    return { session, cookie: `${payload}.${this.#sign('session', payload)}` }
  }

  /** The session a cookie value holds, or undefined when it is malformed, forged, expired or revoked. */
  verify(value: string | undefined): Session | undefined {
    if (value === undefined || value.length > MAX_COOKIE_CHARS) return undefined
    const dot = value.indexOf('.')
    if (dot <= 0) return undefined
    const payload = value.slice(0, dot)
    if (!safeEqual(value.slice(dot + 1), this.#sign('session', payload))) return undefined
    let parsed: unknown
    try {
      parsed = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
    } catch {
      return undefined
    }
    if (typeof parsed !== 'object' || parsed === null) return undefined
    const { v, sid, u, exp } = parsed as Record<string, unknown>
    if (v !== 1 || typeof sid !== 'string' || (u !== null && typeof u !== 'string') || typeof exp !== 'number') return undefined
    if (exp <= this.#now() || this.#revoked.has(sid)) return undefined
    return { sid, user: u ?? undefined, expiresAt: exp }
  }

  /** Ends a session on this instance (logout). */
  revoke(session: Session): void {
    const now = this.#now()
    for (const [sid, expiresAt] of this.#revoked) {
      if (expiresAt > now && this.#revoked.size < MAX_REVOKED) break
      this.#revoked.delete(sid)
    }
    this.#revoked.set(session.sid, session.expiresAt)
  }

  /** The CSRF token of a session: derived from its id, so nothing is stored. */
  csrfToken(session: Session): string {
    return this.#sign('csrf', session.sid)
  }

  isValidCsrf(session: Session, token: string | undefined): boolean {
    return token !== undefined && token.length < 200 && safeEqual(token, this.csrfToken(session))
  }

  #sign(purpose: string, text: string): string {
    return createHmac('sha256', this.#key).update(purpose).update('\0').update(text).digest('base64url')
  }
}

function safeEqual(a: string, b: string): boolean {
  const left = Buffer.from(a)
  const right = Buffer.from(b)
  return left.length === right.length && timingSafeEqual(left, right)
}

/**
 * The session key from the CertStore, made once (under the store's lock, checked again while
 * holding it, so instances starting together make one key).
 */
export async function loadSessionKey(store: CertStore, logger?: Logger): Promise<Buffer> {
  const read = async (): Promise<Buffer | undefined> => {
    try {
      const text = (await store.load(SESSION_KEY_NAME)).toString('utf8').trim()
      const key = Buffer.from(text, 'base64url')
      return key.length >= 32 ? key : undefined
    } catch (error) {
      if (error instanceof CertStoreNotFoundError) return undefined
      throw error
    }
  }
  const known = await read()
  if (known !== undefined) return known
  const unlock = await store.lock('ui-session-key')
  try {
    const again = await read()
    if (again !== undefined) return again
    const key = randomBytes(32)
    await store.store(SESSION_KEY_NAME, key.toString('base64url'))
    logger?.info('web UI: made the session signing key', { key: SESSION_KEY_NAME })
    return key
  } finally {
    await unlock()
  }
}

/** The value of cookie `name` in a Cookie header, or undefined. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined || header.length > 8192) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq < 0) continue
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}

/** The Set-Cookie line of a session cookie; `secure` on HTTPS. A cleared cookie has Max-Age=0. */
export function sessionCookie(value: string, options: { secure: boolean; maxAgeSeconds: number }): string {
  return [
    `${SESSION_COOKIE}=${value}`,
    'Path=/',
    'HttpOnly',
    'SameSite=Strict',
    `Max-Age=${options.maxAgeSeconds}`,
    ...(options.secure ? ['Secure'] : []),
  ].join('; ')
}

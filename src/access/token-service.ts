/**
 * Issues and verifies Berth's Bearer tokens: JWTs signed ES256 with the newest TokenKeys key, in
 * distribution's claim format (docs/spec/auth/jwt.md):
 *
 *   { iss, sub, aud, exp, nbf, iat, jti, access: [{ type, name, actions }] }
 *
 * `sub` is the user name, or "" for an anonymous client (jwt.md: "empty if the client did not
 * authenticate"); `verify` gives that back as `subject: undefined`. `aud` is the service (the
 * challenge's `service`), `iss` the issuer; both must be exactly ours to verify.
 *
 * Verification is strict (jwt.ts for the envelope): a known `kid`, a valid signature over the bytes
 * received, `nbf - leeway <= now < exp + leeway`, `iat <= now + leeway`, every claim of the right
 * type. A verified token is remembered until it expires (a bounded map keyed by the token string),
 * so a client's every request after the first costs a map lookup, not an ECDSA verification.
 */
import { randomBytes } from 'node:crypto'
import { decodeJws, JwsFormatError, MAX_TOKEN_BYTES, signJws, verifyJws } from './jwt.js'
import type { ResourceAccess } from './scope.js'
import type { TokenKeys } from './token-keys.js'

/** What the service needs of TokenKeys. */
export type TokenKeySource = Pick<TokenKeys, 'signingKey' | 'publicKey'>

export interface TokenServiceOptions {
  keys: TokenKeySource
  /** `iss` of every token, checked on verify. */
  issuer: string
  /** `aud` of every token (the challenge's `service`), checked on verify. */
  service: string
  /** Token lifetime, default 300 s; at least 60 (distribution: older clients assume 60 s). */
  ttlSeconds?: number
  /** Clock skew tolerated between instances, default 30 s. */
  leewaySeconds?: number
  /** Verified tokens remembered at most, default 10000 (0: none); the oldest entry goes first. */
  cacheSize?: number
  /** The clock, in ms since the epoch. */
  now?: () => number
}

/** The token endpoint's answer (distribution's token.md field names). */
export interface IssuedToken {
  token: string
  /** The same token, for OAuth2 clients. */
  access_token: string
  expires_in: number
  /** RFC 3339 UTC. */
  issued_at: string
}

export interface VerifiedToken {
  /** The user; undefined for an anonymous token. */
  readonly subject: string | undefined
  readonly access: readonly Readonly<ResourceAccess>[]
  /** ms since the epoch. */
  readonly expiresAt: number
}

export type TokenRefusal = 'malformed' | 'unknown-key' | 'bad-signature' | 'expired' | 'not-yet-valid' | 'wrong-audience' | 'wrong-issuer' | 'bad-claims'

export type TokenVerdict = ({ readonly ok: true } & VerifiedToken) | { readonly ok: false; readonly reason: TokenRefusal; readonly detail: string }

export class TokenService {
  readonly #keys: TokenKeySource
  readonly #issuer: string
  readonly #service: string
  readonly #ttlSeconds: number
  readonly #leewaySeconds: number
  readonly #cacheSize: number
  readonly #now: () => number
  /** Verified tokens by their text, in insertion order. */
  readonly #cache = new Map<string, { readonly ok: true } & VerifiedToken>()

  constructor(options: TokenServiceOptions) {
    this.#keys = options.keys
    this.#issuer = options.issuer
    this.#service = options.service
    this.#ttlSeconds = options.ttlSeconds ?? 300
    if (!Number.isInteger(this.#ttlSeconds) || this.#ttlSeconds < 60) throw new RangeError('a token lifetime must be a whole number of seconds, at least 60')
    this.#leewaySeconds = options.leewaySeconds ?? 30
    this.#cacheSize = options.cacheSize ?? 10_000
    this.#now = options.now ?? Date.now
  }

  get service(): string {
    return this.#service
  }

  /**
   * A token for `subject` (undefined: anonymous) carrying exactly `granted`; entries with no action
   * are left out. @throws RangeError when the token would exceed MAX_TOKEN_BYTES (the endpoint's
   * limits on scopes keep it well below).
   */
  issue(subject: string | undefined, granted: readonly ResourceAccess[]): IssuedToken {
    if (subject === '') throw new TypeError('an authenticated subject has a name; anonymous is undefined')
    const iat = Math.floor(this.#now() / 1000)
    const access = granted.filter(entry => entry.actions.length > 0).map(({ type, name, actions }) => ({ type, name, actions: [...actions] }))
    const claims = {
      iss: this.#issuer,
      sub: subject ?? '',
      aud: this.#service,
      exp: iat + this.#ttlSeconds,
      nbf: iat,
      iat,
      jti: randomBytes(16).toString('base64url'),
      access,
    }
    const token = signJws(claims, this.#keys.signingKey())
    if (token.length > MAX_TOKEN_BYTES) throw new RangeError('token too long: too many or too long scopes')
    return { token, access_token: token, expires_in: this.#ttlSeconds, issued_at: new Date(iat * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z') }
  }

  /** Never rejects; a refused token comes back with the reason (for the log, never for the client to read). */
  async verify(token: string): Promise<TokenVerdict> {
    const cached = this.#cache.get(token)
    if (cached !== undefined) {
      if (this.#now() < cached.expiresAt + this.#leewaySeconds * 1000) return cached
      this.#cache.delete(token)
      return refuse('expired', 'token expired')
    }
    const verdict = await this.#verify(token)
    if (verdict.ok && this.#cacheSize > 0) {
      if (this.#cache.size >= this.#cacheSize) this.#cache.delete(this.#cache.keys().next().value!)
      this.#cache.set(token, verdict)
    }
    return verdict
  }

  async #verify(token: string): Promise<TokenVerdict> {
    let jws
    try {
      jws = decodeJws(token)
    } catch (error) {
      if (error instanceof JwsFormatError) return refuse('malformed', error.message)
      throw error
    }
    const publicKey = await this.#keys.publicKey(jws.header.kid)
    if (publicKey === undefined) return refuse('unknown-key', 'signed by an unknown key')
    if (!verifyJws(jws, publicKey)) return refuse('bad-signature', 'signature does not verify')
    // Claims are read only once the signature holds: before that they are anyone's words.
    const { iss, sub, aud, exp, nbf, iat, jti, access } = jws.payload
    if (iss !== this.#issuer) return refuse('wrong-issuer', 'issued by another issuer')
    if (aud !== this.#service) return refuse('wrong-audience', 'issued for another service')
    if (!isSeconds(exp) || !isSeconds(nbf) || !isSeconds(iat)) return refuse('bad-claims', 'exp, nbf or iat missing or not a time')
    if (typeof sub !== 'string' || typeof jti !== 'string') return refuse('bad-claims', 'sub or jti missing')
    const parsed = parseAccess(access)
    if (parsed === undefined) return refuse('bad-claims', 'access claim malformed')
    const now = this.#now() / 1000
    if (now >= exp + this.#leewaySeconds) return refuse('expired', 'token expired')
    if (now < nbf - this.#leewaySeconds || now < iat - this.#leewaySeconds) return refuse('not-yet-valid', 'token not valid yet')
    return Object.freeze({ ok: true as const, subject: sub === '' ? undefined : sub, access: parsed, expiresAt: exp * 1000 })
  }
}

function refuse(reason: TokenRefusal, detail: string): TokenVerdict {
  return { ok: false, reason, detail }
}

function isSeconds(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

/** The `access` claim, frozen; undefined when it is not an array of { type, name, actions: string[] }. */
function parseAccess(value: unknown): readonly Readonly<ResourceAccess>[] | undefined {
  if (!Array.isArray(value)) return undefined
  const entries: Readonly<ResourceAccess>[] = []
  for (const entry of value as unknown[]) {
    if (typeof entry !== 'object' || entry === null) return undefined
    const { type, name, actions } = entry as Record<string, unknown>
    if (typeof type !== 'string' || typeof name !== 'string' || !Array.isArray(actions)) return undefined
    if (!actions.every((action): action is string => typeof action === 'string')) return undefined
    entries.push(Object.freeze({ type, name, actions: Object.freeze([...actions]) as string[] }))
  }
  return Object.freeze(entries)
}

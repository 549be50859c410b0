/**
 * Authentication to an upstream registry: the `WWW-Authenticate` challenge (RFC 9110 §11.6.1
 * grammar, as distribution's `challenge.go` reads it) and Docker's token flow
 * (distribution `docs/spec/auth/token.md`): a Bearer challenge names a realm, a service and a
 * scope; the token is fetched from the realm (with Basic credentials when the mirror has them)
 * and kept per scope until `expires_in` (60 s when absent, as the spec says).
 */

export interface Challenge {
  /** Lower-cased: `basic`, `bearer`. */
  readonly scheme: string
  readonly params: Readonly<Record<string, string>>
}

/** The first challenge of a `WWW-Authenticate` value; undefined when it has none. Parameters may be quoted (with `\` escapes) or tokens. */
export function parseChallenge(header: string | string[] | undefined): Challenge | undefined {
  const value = Array.isArray(header) ? header[0] : header
  if (value === undefined) return undefined
  const scheme = /^\s*([A-Za-z][A-Za-z0-9._~+/-]*)/.exec(value)
  if (scheme === null) return undefined
  const params: Record<string, string> = {}
  const param = /\s*,?\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))/gy
  param.lastIndex = scheme[0].length
  for (let match = param.exec(value); match !== null; match = param.exec(value)) {
    const key = match[1]!.toLowerCase()
    if (!Object.hasOwn(params, key)) params[key] = match[2] !== undefined ? match[2].replace(/\\(.)/g, '$1') : (match[3] ?? '')
    if (Object.keys(params).length > 16) break
  }
  return { scheme: scheme[1]!.toLowerCase(), params }
}

/** The Basic `Authorization` value of a user and password (RFC 7617). */
export function basicAuthorization(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`
}

export interface CachedToken {
  readonly value: string
  /** ms since the epoch. */
  readonly expiresAt: number
}

/**
 * Tokens by scope, each until shortly before it expires. Bounded: names a client makes up each
 * cost an entry, so the oldest goes first past `maxEntries`.
 */
export class TokenCache {
  readonly #tokens = new Map<string, CachedToken>()

  constructor(
    private readonly maxEntries = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  get(scope: string): string | undefined {
    const token = this.#tokens.get(scope)
    if (token === undefined) return undefined
    if (token.expiresAt <= this.now()) {
      this.#tokens.delete(scope)
      return undefined
    }
    return token.value
  }

  /** `expiresInSeconds` as the realm said; the token is dropped a tenth early (at most 30 s), so it is never sent just as it lapses. */
  set(scope: string, value: string, expiresInSeconds: number): void {
    const lifetime = Math.min(Math.max(expiresInSeconds, 1), 24 * 3600) * 1000
    this.#tokens.delete(scope)
    this.#tokens.set(scope, { value, expiresAt: this.now() + lifetime - Math.min(lifetime / 10, 30_000) })
    if (this.#tokens.size > this.maxEntries) this.#tokens.delete(this.#tokens.keys().next().value as string)
  }
}

/** The token and its lifetime from a realm's JSON answer (`token`, or OAuth2's `access_token`; `expires_in` defaults to 60). */
export function parseTokenResponse(body: Buffer): { token: string; expiresIn: number } | undefined {
  let json: unknown
  try {
    json = JSON.parse(body.toString('utf8'))
  } catch {
    return undefined
  }
  if (typeof json !== 'object' || json === null) return undefined
  const record = json as Record<string, unknown>
  const token = typeof record.token === 'string' && record.token !== '' ? record.token : record.access_token
  if (typeof token !== 'string' || token === '' || token.length > 16 * 1024 || /[\r\n]/.test(token)) return undefined
  const expiresIn = typeof record.expires_in === 'number' && Number.isFinite(record.expires_in) && record.expires_in > 0 ? record.expires_in : 60
  return { token, expiresIn }
}

/**
 * The client of one mirror's upstream registry: GET/HEAD over keep-alive sockets, with the
 * upstream's own authentication (anonymous, Basic, or Docker's Bearer token flow, see
 * upstream-auth.ts) and redirects followed (blob downloads go to a CDN: `Authorization` is only
 * ever sent to the upstream's own origin and its token realm).
 *
 * Limits: a response's headers must arrive within `headersTimeoutMs` (a trickling upstream cannot
 * hold a request forever before it answers), and a socket silent for `idleTimeoutMs` fails the
 * request or the body being read. Bodies are never read here except the realm's small JSON;
 * callers read (and cap) them.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import https from 'node:https'
import { basicAuthorization, parseChallenge, parseTokenResponse, TokenCache, type Challenge } from './upstream-auth.js'
import { UpstreamCredentialsError, UpstreamUnavailableError } from './errors.js'

export interface UpstreamOptions {
  /** `https://registry.example.com` (no trailing slash; a path prefix is kept). */
  readonly url: string
  readonly username?: string | undefined
  readonly password?: string | undefined
  /** Time from sending a request to its response headers (default 30 s). */
  readonly headersTimeoutMs?: number
  /** Socket inactivity limit, also while a body streams (default 60 s). */
  readonly idleTimeoutMs?: number
}

export interface UpstreamResponse {
  readonly status: number
  readonly headers: IncomingHttpHeaders
  /** The body: read it, or call `discard`. */
  readonly body: IncomingMessage
}

export interface UpstreamRequest {
  readonly method: 'GET' | 'HEAD'
  /** `/v2/library/alpine/manifests/3.20` */
  readonly path: string
  /** The upstream repository, for the token scope `repository:<name>:pull`. */
  readonly repository: string
  readonly headers?: Readonly<Record<string, string>>
}

const MAX_REDIRECTS = 5
const MAX_TOKEN_RESPONSE_BYTES = 64 * 1024
const STALE_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE'])

export class UpstreamClient {
  readonly url: string
  readonly #base: URL
  readonly #basic: string | undefined
  readonly #username: string | undefined
  readonly #tokens = new TokenCache()
  /** The scheme the upstream asked for last: with `basic` and credentials they are sent at once, without a 401 round trip first. */
  #scheme: string | undefined
  readonly #headersTimeoutMs: number
  readonly #idleTimeoutMs: number
  readonly #agents = {
    http: new http.Agent({ keepAlive: true, maxSockets: 64, scheduling: 'lifo' }),
    https: new https.Agent({ keepAlive: true, maxSockets: 64, scheduling: 'lifo' }),
  }

  constructor(options: UpstreamOptions) {
    this.url = options.url.replace(/\/+$/, '')
    this.#base = new URL(this.url)
    this.#basic = options.username !== undefined && options.password !== undefined ? basicAuthorization(options.username, options.password) : undefined
    this.#username = this.#basic === undefined ? undefined : options.username
    this.#headersTimeoutMs = options.headersTimeoutMs ?? 30_000
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 60_000
  }

  /**
   * Sends the request, authenticating as the upstream's challenge asks (once), and follows
   * redirects. Resolves with any status (the caller decides what 404 or 429 means); rejects with
   * UpstreamUnavailableError when no answer came (refused, reset, timed out, a realm that fails).
   */
  async request(request: UpstreamRequest): Promise<UpstreamResponse> {
    const scope = `repository:${request.repository}:pull`
    const target = new URL(this.#base.pathname.replace(/\/$/, '') + request.path, this.#base)
    let response = await this.#follow(request.method, target, { ...request.headers, ...this.#authorizationFor(scope) })
    if (response.status !== 401) return response
    const challenge = parseChallenge(response.headers['www-authenticate'])
    const authorization = challenge === undefined ? undefined : await this.#authorize(challenge, scope, request.repository)
    if (authorization === undefined) return response
    discard(response)
    response = await this.#follow(request.method, target, { ...request.headers, Authorization: authorization })
    // Basic credentials answered 401 are wrong (a user the upstream knows but refuses gets 403).
    if (response.status === 401 && challenge?.scheme === 'basic') {
      discard(response)
      throw new UpstreamCredentialsError(this.url, request.repository, 401, this.#username, 'its Basic login')
    }
    return response
  }

  /** Closes kept-alive sockets. */
  close(): void {
    this.#agents.http.destroy()
    this.#agents.https.destroy()
  }

  #authorizationFor(scope: string): Record<string, string> {
    if (this.#scheme === 'bearer') {
      const token = this.#tokens.get(scope)
      return token === undefined ? {} : { Authorization: `Bearer ${token}` }
    }
    if (this.#scheme === 'basic' && this.#basic !== undefined) return { Authorization: this.#basic }
    return {}
  }

  /** The Authorization for a retry after `challenge`, or undefined when there is none to try. */
  async #authorize(challenge: Challenge, scope: string, repository: string): Promise<string | undefined> {
    this.#scheme = challenge.scheme
    if (challenge.scheme === 'basic') return this.#basic
    if (challenge.scheme !== 'bearer') return undefined
    const realm = challenge.params.realm
    let realmUrl: URL
    try {
      realmUrl = new URL(realm ?? '')
    } catch {
      throw new UpstreamUnavailableError(this.url, 'its Bearer challenge has no valid realm URL')
    }
    if (realmUrl.protocol !== 'https:' && realmUrl.protocol !== 'http:') throw new UpstreamUnavailableError(this.url, 'its token realm is not an http(s) URL')
    // The challenge's own scope when it gives one (it may ask for more than pull); else ours.
    const wanted = challenge.params.scope ?? scope
    if (challenge.params.service !== undefined) realmUrl.searchParams.set('service', challenge.params.service)
    realmUrl.searchParams.set('scope', wanted)
    const response = await this.#send('GET', realmUrl, this.#basic === undefined ? {} : { Authorization: this.#basic })
    if (response.status === 401 || response.status === 403) {
      discard(response)
      throw new UpstreamCredentialsError(this.url, repository, response.status, this.#username, `its token realm ${realmUrl.origin}`)
    }
    if (response.status !== 200) {
      discard(response)
      throw new UpstreamUnavailableError(this.url, `its token realm ${realmUrl.origin} answered ${response.status}`)
    }
    const token = parseTokenResponse(await readCapped(response, MAX_TOKEN_RESPONSE_BYTES, this.url))
    if (token === undefined) throw new UpstreamUnavailableError(this.url, `its token realm ${realmUrl.origin} sent no token`)
    this.#tokens.set(scope, token.token, token.expiresIn)
    return `Bearer ${token.token}`
  }

  /** Sends and follows redirects; `Authorization` goes to the upstream's origin only (never to a CDN it redirects to). */
  async #follow(method: 'GET' | 'HEAD', target: URL, headers: Record<string, string>): Promise<UpstreamResponse> {
    let url = target
    for (let hop = 0; ; hop++) {
      const sameOrigin = url.origin === this.#base.origin
      const sent = sameOrigin ? headers : withoutAuthorization(headers)
      const response = await this.#send(method, url, sent)
      const location = response.headers.location
      if (![301, 302, 303, 307, 308].includes(response.status) || location === undefined) return response
      discard(response)
      if (hop >= MAX_REDIRECTS) throw new UpstreamUnavailableError(this.url, `more than ${MAX_REDIRECTS} redirects`)
      try {
        url = new URL(location, url)
      } catch {
        throw new UpstreamUnavailableError(this.url, 'it redirected to an invalid URL')
      }
      if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new UpstreamUnavailableError(this.url, 'it redirected to a non-http URL')
    }
  }

  async #send(method: 'GET' | 'HEAD', url: URL, headers: Record<string, string>, retried = false): Promise<UpstreamResponse> {
    try {
      return await this.#sendOnce(method, url, headers)
    } catch (error) {
      // A kept-alive socket the upstream closed just as we reused it: GET and HEAD are safe to repeat once.
      if (!retried && (error as { reusedSocket?: boolean }).reusedSocket === true && STALE_SOCKET_CODES.has(String((error as NodeJS.ErrnoException).code))) {
        return this.#send(method, url, headers, true)
      }
      if (error instanceof UpstreamUnavailableError) throw error
      const code = (error as NodeJS.ErrnoException).code
      throw new UpstreamUnavailableError(this.url, code ?? (error as Error).message, { cause: error })
    }
  }

  #sendOnce(method: 'GET' | 'HEAD', url: URL, headers: Record<string, string>): Promise<UpstreamResponse> {
    const isHttps = url.protocol === 'https:'
    return new Promise((resolve, reject) => {
      const request = (isHttps ? https : http).request(url, {
        method,
        headers: { 'User-Agent': 'berth-mirror', ...headers },
        agent: isHttps ? this.#agents.https : this.#agents.http,
      })
      const headersTimer = setTimeout(
        () => request.destroy(Object.assign(new Error(`no answer within ${this.#headersTimeoutMs} ms`), { code: 'ETIMEDOUT' })),
        this.#headersTimeoutMs,
      )
      request.setTimeout(this.#idleTimeoutMs, () => request.destroy(Object.assign(new Error(`idle for ${this.#idleTimeoutMs} ms`), { code: 'ETIMEDOUT' })))
      request.once('response', response => {
        clearTimeout(headersTimer)
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body: response })
      })
      request.once('error', error => {
        clearTimeout(headersTimer)
        reject(Object.assign(error, { reusedSocket: request.reusedSocket }))
      })
      request.end()
    })
  }
}

function withoutAuthorization(headers: Record<string, string>): Record<string, string> {
  const copy: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) if (name.toLowerCase() !== 'authorization') copy[name] = value
  return copy
}

/** Throws the body away and lets the socket go back to the pool (a small body) or closes it (a large one). */
export function discard(response: UpstreamResponse): void {
  const declared = Number(response.headers['content-length'] ?? NaN)
  if (Number.isFinite(declared) && declared <= 64 * 1024) response.body.resume()
  else response.body.destroy()
}

/**
 * Reads a whole body of at most `limit` bytes; a larger one (declared or sent) fails with
 * UpstreamUnavailableError as soon as it is known, without reading the rest.
 */
export async function readCapped(response: UpstreamResponse, limit: number, upstream: string): Promise<Buffer> {
  const declared = Number(response.headers['content-length'] ?? NaN)
  if (Number.isFinite(declared) && declared > limit) {
    response.body.destroy()
    throw new UpstreamUnavailableError(upstream, `it sent ${declared} bytes where at most ${limit} are accepted`)
  }
  const chunks: Buffer[] = []
  let total = 0
  try {
    for await (const chunk of response.body) {
      total += (chunk as Buffer).byteLength
      if (total > limit) throw new UpstreamUnavailableError(upstream, `it sent more than the ${limit} bytes accepted`)
      chunks.push(chunk as Buffer)
    }
  } catch (error) {
    response.body.destroy()
    if (error instanceof UpstreamUnavailableError) throw error
    throw new UpstreamUnavailableError(upstream, `the answer broke off: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error })
  }
  return Buffer.concat(chunks, total)
}

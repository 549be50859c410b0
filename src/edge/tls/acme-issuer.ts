/**
 * Speaks ACME (RFC 8555) to one CA through `acme-client`: the account (key and registration kept in
 * the cert store), orders over HTTP-01, ARI lookups. It knows nothing about timing: the provider
 * decides when to call `obtain()`.
 *
 * acme-client's shared axios instance retries 429/5xx/network errors itself and sleeps for the whole
 * Retry-After (hours, for a rate limit) where nobody can cancel it. Berth owns retries instead
 * (persisted backoff, see renewal.ts), so `configureAcmeHttp()` turns those in-library retries off.
 */
import { Agent as HttpsAgent, get as httpsGet } from 'node:https'
import { rootCertificates } from 'node:tls'
import { get as httpGet } from 'node:http'
import { lookup } from 'node:dns/promises'
import type { AxiosResponse, InternalAxiosRequestConfig } from 'axios'
import acme from 'acme-client'
import type { Logger } from '../../log.js'
import { silentLogger } from '../../log.js'
import type { MemoryChallengeResponder } from './acme-challenges.js'
import { AcmeError } from './acme-options.js'
import { parseRenewalInfo, parseRetryAfter, renewalInfoUrl, type RenewalInfo } from './acme-ari.js'
import { certKeys, CertStoreNotFoundError, type CertStore } from './cert-store.js'

export interface AcmeIssuerOptions {
  directoryUrl: string
  /** Key of this CA in the store layout (`issuerKey(directoryUrl)`). */
  issuer: string
  store: CertStore
  challenges: MemoryChallengeResponder
  email?: string | undefined
  eab?: { kid: string; hmacKey: string } | undefined
  logger?: Logger
  /** Extra PEM CA(s) to trust for the directory's TLS (a private CA; tests: pebble). NODE_EXTRA_CA_CERTS works too. */
  caCertificates?: string | undefined
  /** Port our self-check uses to fetch the challenge (Berth's HTTP port; the CA always uses 80). */
  httpChallengePort?: number
  /** Fetch our own challenge before telling the CA, to explain DNS/port problems (default true). */
  selfCheck?: boolean
  /** Wait between sharing a challenge in the store and telling the CA (default 500 ms). */
  sharedChallengeDelayMs?: number
  /** Polling of pending challenges/orders (acme-client backoff). */
  pollMinMs?: number
  pollMaxMs?: number
  pollAttempts?: number
}

export interface IssuedCertificate {
  /** Full chain PEM, leaf first. */
  certificate: string
  /** PEM private key of the certificate (new for every order). */
  key: string
}

interface Problem {
  status: number
  type?: string
  detail?: string
  retryAfterMs?: number
}

interface AccountMeta {
  url: string
  contact: string[]
  directoryUrl: string
  createdAt: string
}

let httpConfigured = false

/** Turns off acme-client's own sleeping retries (process-wide; only Berth's ACME code uses acme-client). */
export function configureAcmeHttp(): void {
  if (httpConfigured) return
  httpConfigured = true
  const settings = (acme.axios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number } }).acmeSettings
  settings.retryMaxAttempts = 0
}

export class AcmeIssuer {
  private readonly options: AcmeIssuerOptions
  private readonly logger: Logger
  private readonly origin: string
  private readonly agent: HttpsAgent | undefined
  private readonly interceptors: { request: number; response: number }
  private clientPromise: Promise<acme.Client> | undefined
  private lastProblem: Problem | undefined
  private lastRequestUrl: string | undefined
  private clockChecked = false
  private directoryCache: { value: Record<string, unknown>; fetchedAt: number } | undefined

  constructor(options: AcmeIssuerOptions) {
    configureAcmeHttp()
    this.options = options
    this.logger = options.logger ?? silentLogger
    this.origin = new URL(options.directoryUrl).origin
    // The extra CA is added to Node's roots, not put in their place, so the agent can serve every ACME
    // request (the directory may point at other hosts) without weakening anything else.
    this.agent = options.caCertificates ? new HttpsAgent({ ca: [...rootCertificates, options.caCertificates], keepAlive: true }) : undefined
    // acme-client has one shared axios instance (only Berth's ACME code uses it).
    this.interceptors = {
      request: acme.axios.interceptors.request.use((config: InternalAxiosRequestConfig) => {
        if (this.agent && !config.httpsAgent) config.httpsAgent = this.agent
        this.lastRequestUrl = config.url
        return config
      }),
      response: acme.axios.interceptors.response.use((response: AxiosResponse) => {
        if (response.status >= 400) this.recordProblem(response)
        this.checkClock(response.headers['date'] as string | undefined)
        return response
      }),
    }
  }

  /** Releases the interceptors and the agent. */
  close(): void {
    acme.axios.interceptors.request.eject(this.interceptors.request)
    acme.axios.interceptors.response.eject(this.interceptors.response)
    this.agent?.destroy()
  }

  /**
   * CAs backdate certificates by about an hour, so minutes of skew are harmless; hours break JWS
   * freshness and make served certificates look not-yet-valid or expired. Say so once.
   */
  private checkClock(dateHeader: string | undefined): void {
    if (this.clockChecked || !dateHeader) return
    const caTime = Date.parse(dateHeader)
    if (!Number.isFinite(caTime)) return
    this.clockChecked = true
    const skewMs = Date.now() - caTime
    if (Math.abs(skewMs) > 5 * 60_000) {
      this.logger.warn(
        `this machine's clock is ${Math.round(Math.abs(skewMs) / 60_000)} minutes ${skewMs > 0 ? 'ahead of' : 'behind'} the CA's; fix the time (NTP) or certificates may be refused or renewed at the wrong time`,
        { ca: this.options.directoryUrl },
      )
    }
  }

  private recordProblem(response: AxiosResponse): void {
    const data = response.data as { type?: unknown; detail?: unknown } | undefined
    const header = response.headers['retry-after'] as string | undefined
    this.lastProblem = {
      status: response.status,
      ...(typeof data?.type === 'string' ? { type: data.type } : {}),
      ...(typeof data?.detail === 'string' ? { detail: data.detail } : {}),
      ...(header ? { retryAfterMs: parseRetryAfter(header, Date.now()) } : {}),
    }
  }

  /** Loads the account from the store, or registers one (once per CA, under a lock). */
  private client(signal?: AbortSignal): Promise<acme.Client> {
    this.clientPromise ??= this.loadOrRegister(signal).catch((error: unknown) => {
      this.clientPromise = undefined
      throw error
    })
    return this.clientPromise
  }

  private async loadOrRegister(signal?: AbortSignal): Promise<acme.Client> {
    const { store, issuer, directoryUrl } = this.options
    const unlock = await store.lock(`account_${issuer}`, signal)
    try {
      let accountKey: Buffer
      try {
        accountKey = await store.load(certKeys.accountKey(issuer))
      } catch (error) {
        if (!(error instanceof CertStoreNotFoundError)) throw error
        accountKey = await acme.crypto.createPrivateEcdsaKey('P-256')
        await store.store(certKeys.accountKey(issuer), accountKey)
      }
      let meta: AccountMeta | undefined
      try {
        meta = JSON.parse((await store.load(certKeys.accountMeta(issuer))).toString('utf8')) as AccountMeta
      } catch (error) {
        if (!(error instanceof CertStoreNotFoundError)) throw error
      }
      const client = new acme.Client({
        directoryUrl,
        accountKey,
        ...(meta?.url ? { accountUrl: meta.url } : {}),
        ...(this.options.eab ? { externalAccountBinding: this.options.eab } : {}),
        backoffMin: this.options.pollMinMs ?? 1_000,
        backoffMax: this.options.pollMaxMs ?? 10_000,
        backoffAttempts: this.options.pollAttempts ?? 15,
      })
      const contact = this.options.email ? [`mailto:${this.options.email}`] : []
      if (meta && sameList(meta.contact, contact)) return client
      if (meta) {
        await client.updateAccount({ contact })
        this.logger.info('ACME account contact updated', { ca: directoryUrl, email: this.options.email ?? '(none)' })
      } else {
        this.logger.info('registering ACME account', { ca: directoryUrl, email: this.options.email ?? '(none)' })
        this.lastProblem = undefined
        try {
          await client.createAccount({ termsOfServiceAgreed: true, contact })
        } catch (error) {
          const explained = await this.explain(error, 'ACCOUNT_FAILED', 'registering the ACME account failed')
          const problem = this.recorded()
          if (!this.options.eab && (/externalAccountRequired/.test(problem?.type ?? '') || /externalAccountBinding/i.test(explained.message))) {
            throw new AcmeError(
              'ACCOUNT_FAILED',
              `${explained.message}. This CA requires external account binding: pass --acme-eab-kid and --acme-eab-hmac from your account page at the CA`,
              { cause: error },
            )
          }
          throw explained
        }
      }
      const saved: AccountMeta = { url: client.getAccountUrl(), contact, directoryUrl, createdAt: meta?.createdAt ?? new Date().toISOString() }
      await store.store(certKeys.accountMeta(issuer), JSON.stringify(saved, null, 2) + '\n')
      if (!meta) this.logger.info('ACME account registered', { ca: directoryUrl, account: saved.url })
      return client
    } finally {
      await unlock()
    }
  }

  /**
   * Orders a certificate for `names` over HTTP-01 and downloads it. `replaces` is the ARI certID of
   * the certificate being renewed (sent only when the CA supports ARI). Rejects with AcmeError.
   */
  async obtain(names: readonly string[], options: { replaces?: string; signal?: AbortSignal } = {}): Promise<IssuedCertificate> {
    try {
      return await this.obtainOnce(names, options)
    } catch (error) {
      // The CA forgot our account (e.g. a test CA restarted, or the account was deactivated): register again, once.
      if (error instanceof AcmeError && error.code !== 'ACCOUNT_FAILED' && /accountDoesNotExist/.test(this.lastProblem?.type ?? '')) {
        this.logger.warn('the CA does not know our ACME account any more; registering a new one', { ca: this.options.directoryUrl })
        await this.options.store.delete(certKeys.accountMeta(this.options.issuer))
        this.clientPromise = undefined
        return this.obtainOnce(names, options)
      }
      throw error
    }
  }

  private async obtainOnce(names: readonly string[], options: { replaces?: string; signal?: AbortSignal }): Promise<IssuedCertificate> {
    const { signal } = options
    const client = await this.client(signal)
    signal?.throwIfAborted()
    this.lastProblem = undefined
    let order: acme.Order
    const identifiers = names.map(value => ({ type: 'dns', value }))
    try {
      try {
        const payload = { identifiers, ...(options.replaces ? { replaces: options.replaces } : {}) }
        order = await client.createOrder(payload as Parameters<acme.Client['createOrder']>[0])
      } catch (error) {
        // `replaces` (RFC 9773 §5) is a courtesy; a CA refusing it (already replaced, unknown certificate)
        // must not block the renewal itself.
        const problem = this.recorded()
        const status = problem?.status ?? 0
        if (!options.replaces || status === 429 || status < 400 || status >= 500) throw error
        this.logger.warn('the CA refused the ARI "replaces" field; ordering without it', { detail: problem?.detail })
        this.lastProblem = undefined
        order = await client.createOrder({ identifiers })
      }
    } catch (error) {
      throw await this.explain(error, 'ORDER_FAILED', 'placing the certificate order failed')
    }
    this.logger.info('ACME order placed', { domains: names.join(','), order: order.url })

    let authorizations: acme.Authorization[]
    try {
      authorizations = await client.getAuthorizations(order)
    } catch (error) {
      throw await this.explain(error, 'ORDER_FAILED', "fetching the order's authorizations failed")
    }
    const results = await Promise.allSettled(authorizations.map(authz => this.authorize(client, authz, signal)))
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failure) throw failure.reason

    signal?.throwIfAborted()
    const key = await acme.crypto.createPrivateEcdsaKey('P-256')
    const [, csr] = await acme.crypto.createCsr({ commonName: names[0], altNames: [...names] }, key)
    try {
      const finalized = await client.finalizeOrder(order, csr)
      const certificate = await client.getCertificate(finalized)
      return { certificate, key: key.toString('utf8') }
    } catch (error) {
      throw await this.explain(error, 'ORDER_FAILED', 'finalizing the order failed')
    }
  }

  private async authorize(client: acme.Client, authz: acme.Authorization, signal?: AbortSignal): Promise<void> {
    const name = authz.identifier.value
    if (authz.status === 'valid') {
      this.logger.info('ACME authorization still valid, no challenge needed', { domain: name })
      return
    }
    const challenge = authz.challenges.find(c => c.type === 'http-01')
    if (!challenge) {
      throw new AcmeError(
        'VALIDATION_FAILED',
        `the CA offers no HTTP-01 challenge for ${name} (offered: ${authz.challenges.map(c => c.type).join(', ')}); Berth can only answer HTTP-01`,
      )
    }
    const keyAuthorization = await client.getChallengeKeyAuthorization(challenge)
    const { challenges } = this.options
    challenges.add(challenge.token, keyAuthorization, name)
    // Shared too, so another Berth on the same certs/ that holds the HTTP port (and waits for our lock) can answer.
    const sharedKey = certKeys.challenge(this.options.issuer, challenge.token)
    await this.options.store.store(sharedKey, JSON.stringify({ token: challenge.token, name, keyAuthorization }))
    // Give processes polling the store (every 100 ms while they wait for our lock) time to pick it up.
    const sharedReadyAt = Date.now() + (this.options.sharedChallengeDelayMs ?? 500)
    let hint: string | undefined
    let completed = false
    try {
      if (this.options.selfCheck !== false) {
        hint = await this.selfCheck(name, challenge.token, keyAuthorization, signal)
        if (hint) this.logger.warn(`self-check of the HTTP-01 challenge failed, asking the CA anyway: ${hint}`, { domain: name })
        else this.logger.info('self-check of the HTTP-01 challenge passed', { domain: name })
      }
      const remaining = sharedReadyAt - Date.now()
      if (remaining > 0) await new Promise(r => setTimeout(r, remaining))
      signal?.throwIfAborted()
      challenges.logNextAnswer(challenge.token)
      this.lastProblem = undefined
      await client.completeChallenge(challenge)
      completed = true
      await client.waitForValidStatus(challenge)
      this.logger.info('ACME challenge validated by the CA', { domain: name })
    } catch (error) {
      if (!completed) await client.deactivateAuthorization(authz).catch(() => {})
      if (error instanceof AcmeError || signal?.aborted) throw error
      const explained = await this.explain(error, 'VALIDATION_FAILED', `the CA could not validate ${name} over HTTP-01`)
      if (explained.code !== 'VALIDATION_FAILED' || !hint) throw explained
      throw new AcmeError('VALIDATION_FAILED', `${explained.message}. ${hint}`, { cause: error })
    } finally {
      challenges.remove(challenge.token)
      await this.options.store.delete(sharedKey).catch(() => {})
    }
  }

  /**
   * Fetches our own challenge the way the CA will (DNS name, HTTP port), a few times in case the
   * listener is just starting. Returns undefined when it works, else what to fix, in plain words.
   */
  private async selfCheck(name: string, token: string, expected: string, signal?: AbortSignal): Promise<string | undefined> {
    const port = this.options.httpChallengePort ?? 80
    const portWords = port === 80 ? 'port 80' : `port ${port} (Berth's HTTP port; the CA itself always connects to port 80, which must reach it)`
    let addresses: string[]
    try {
      addresses = (await lookup(name, { all: true })).map(a => a.address)
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error)
      return `DNS: ${name} does not resolve (${code}). Create an A/AAAA record pointing ${name} at this server's public IP address; Berth retries by itself`
    }
    let last = ''
    for (let attempt = 0; attempt < 3; attempt++) {
      if (attempt > 0) await new Promise(r => setTimeout(r, 1_000))
      signal?.throwIfAborted()
      const result = await fetchText(`http://${hostForUrl(name)}:${port}/.well-known/acme-challenge/${token}`, 5_000)
      if (result.ok && result.body.trim() === expected) return undefined
      last = result.ok
        ? `${name} resolves to ${addresses.join(', ')} and ${portWords} answered HTTP ${result.status}, but not with Berth's challenge response: the DNS record probably points at another server, or another web server or proxy owns that port`
        : `${name} resolves to ${addresses.join(', ')}, but nothing answered on ${portWords} (${result.error}): open that port in the firewall and forward it to this machine`
    }
    return last
  }

  /**
   * The CA's renewal window for a certificate (RFC 9773), or undefined when the directory has no
   * `renewalInfo`. Errors reject; callers treat ARI as advisory and fall back to the lifetime ratio.
   */
  async renewalInfo(certId: string, now: number): Promise<RenewalInfo | undefined> {
    const base = (await this.directory())['renewalInfo']
    if (typeof base !== 'string') return undefined
    const response = await acme.axios.get(renewalInfoUrl(base, certId), { validateStatus: null, responseType: 'json' })
    if (response.status !== 200) throw new AcmeError('ORDER_FAILED', `renewalInfo answered HTTP ${response.status}`)
    const body: unknown = typeof response.data === 'string' ? JSON.parse(response.data) : response.data
    return parseRenewalInfo(body, response.headers['retry-after'] as string | undefined, now)
  }

  /** The last ACME error response (read through a method: TypeScript can't see the interceptor set it). */
  private recorded(): Problem | undefined {
    return this.lastProblem
  }

  /** Whether the directory advertises ARI, as far as we know without asking (undefined: not fetched yet). */
  get offersRenewalInfo(): boolean | undefined {
    return this.directoryCache ? typeof this.directoryCache.value['renewalInfo'] === 'string' : undefined
  }

  /** The directory (public, no account needed), cached for a day like acme-client does. */
  private async directory(): Promise<Record<string, unknown>> {
    if (this.directoryCache && Date.now() - this.directoryCache.fetchedAt < 86_400_000) return this.directoryCache.value
    const response = await acme.axios.get(this.options.directoryUrl, { validateStatus: null, responseType: 'json' })
    if (response.status !== 200 || typeof response.data !== 'object' || response.data === null) {
      throw new AcmeError('CA_UNREACHABLE', `the ACME directory ${this.options.directoryUrl} answered HTTP ${response.status}`)
    }
    this.directoryCache = { value: response.data as Record<string, unknown>, fetchedAt: Date.now() }
    return this.directoryCache.value
  }

  /** Turns whatever acme-client threw into an AcmeError a user can act on. */
  private async explain(error: unknown, code: 'ORDER_FAILED' | 'ACCOUNT_FAILED' | 'VALIDATION_FAILED', what: string): Promise<AcmeError> {
    if (error instanceof AcmeError) return error
    const problem = this.lastProblem
    const detail = problem?.detail ?? (error instanceof Error ? error.message : String(error))
    if (problem && (problem.status === 429 || /rateLimited/.test(problem.type ?? ''))) {
      return new AcmeError('RATE_LIMITED', `the CA rate-limited us: ${detail}`, {
        cause: error,
        ...(problem.retryAfterMs !== undefined ? { retryAfterMs: problem.retryAfterMs } : {}),
      })
    }
    if (!problem) {
      // No ACME response at all: usually the CA is down or unreachable. acme-client then throws a bare
      // TypeError ("reading 'config'") with the network error lost, so find out again by connecting.
      const directory = await this.probe(this.options.directoryUrl, true)
      if (directory) return new AcmeError('CA_UNREACHABLE', `cannot reach the ACME server at ${this.options.directoryUrl}: ${directory}`, { cause: error })
      const last = this.lastRequestUrl
      if (last && new URL(last).origin !== this.origin) {
        const other = await this.probe(new URL(last).origin + '/', false)
        if (other)
          return new AcmeError('CA_UNREACHABLE', `cannot reach ${new URL(last).origin}, which the ACME directory points to: ${other}`, { cause: error })
      }
      if (error instanceof TypeError) {
        return new AcmeError('CA_UNREACHABLE', `${what}: the connection to ${last ?? this.options.directoryUrl} failed without an answer (network error)`, {
          cause: error,
        })
      }
    }
    if (problem && problem.status >= 500) {
      return new AcmeError('CA_UNREACHABLE', `${what}: the CA answered HTTP ${problem.status}: ${detail}`, {
        cause: error,
        ...(problem.retryAfterMs !== undefined ? { retryAfterMs: problem.retryAfterMs } : {}),
      })
    }
    return new AcmeError(code, `${what}: ${detail}`, { cause: error })
  }

  /** undefined when `url` answers (with 200 if `needOk`), else why not (ECONNREFUSED, certificate error, timeout …). */
  private probe(url: string, needOk: boolean): Promise<string | undefined> {
    return new Promise(resolve => {
      const request = httpsGet(url, { ...(this.agent ? { agent: this.agent } : {}), timeout: 10_000 }, response => {
        response.resume()
        resolve(!needOk || response.statusCode === 200 ? undefined : `it answered HTTP ${response.statusCode}`)
      })
      request.on('timeout', () => request.destroy(new Error('no answer within 10 s')))
      request.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ? `${error.code} (${error.message})` : error.message))
    })
  }
}

function sameList(a: readonly string[] | undefined, b: readonly string[]): boolean {
  return (a ?? []).length === b.length && (a ?? []).every((value, index) => value === b[index])
}

function hostForUrl(name: string): string {
  return name.includes(':') ? `[${name}]` : name
}

type FetchResult = { ok: true; status: number; body: string } | { ok: false; error: string }

/** A small GET with a timeout and a size cap; no redirects followed (a redirect is reported as not-the-answer). */
function fetchText(url: string, timeoutMs: number): Promise<FetchResult> {
  return new Promise(resolve => {
    const request = httpGet(url, { timeout: timeoutMs, headers: { 'user-agent': 'berth-acme-self-check' } }, response => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => {
        if (body.length < 4096) body += chunk
      })
      response.on('end', () => resolve({ ok: true, status: response.statusCode ?? 0, body }))
      response.on('error', error => resolve({ ok: false, error: error.message }))
    })
    request.on('timeout', () => request.destroy(Object.assign(new Error(`no answer within ${timeoutMs / 1000} s`), { code: 'ETIMEDOUT' })))
    request.on('error', (error: NodeJS.ErrnoException) => resolve({ ok: false, error: error.code ?? error.message }))
  })
}

/**
 * Automatic HTTPS: a CertificateProvider that gets its certificate from an ACME CA (Let's Encrypt by
 * default) over HTTP-01, keeps it under `certs/`, and renews it in the background without a restart.
 *
 * Lifecycle:
 * - `start()` checks the options and the certs folder, then loads a stored certificate. A valid stored
 *   certificate for the configured names is served at once and never re-ordered (CA rate limits).
 *   Without one, `start()` still resolves (the edge must be listening on port 80 for the CA to reach
 *   us); the first order runs in the background and `onChange` fires when it lands.
 * - Maintenance runs at start and then after `nextCheckDelay()` (every `checkIntervalMs` ±10 % jitter,
 *   earlier for a retry or renewal time): it adopts a certificate another Berth process stored,
 *   refreshes ARI when the CA offers it, and renews when renewal.ts says so. The composition root
 *   schedules `maintain()` with its other background jobs (`selfSchedule: false`); otherwise `start()`
 *   schedules it the same way.
 * - Orders happen under a store lock, after re-reading storage, so processes sharing `certs/` place
 *   one order. Failures are persisted in the certificate's metadata with the next attempt time
 *   (growing delays, at least the CA's Retry-After), so a restart does not reset the backoff; the old
 *   certificate keeps being served meanwhile.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto'
import type { Logger } from '../../log.js'
import { silentLogger } from '../../log.js'
import type { CertificateProvider, ChallengeResponder, TlsCertificate } from './certificate-source.js'
import { MemoryChallengeResponder, SharedChallengeLookup } from './acme-challenges.js'
import { AcmeIssuer } from './acme-issuer.js'
import { AcmeError, assertAcmeOptions } from './acme-options.js'
import { ariCertId } from './acme-ari.js'
import { scheduled, type PeriodicJob } from '../../scheduler.js'
import { CertStoreNotFoundError, FileCertStore, certKeys, issuerKey, type CertStore, type CertStoreLockOptions } from './cert-store.js'
import {
  DEFAULT_CHECK_INTERVAL_MS,
  DEFAULT_RETRY_DELAYS_MS,
  jittered,
  renewalDecision,
  retryDelay,
  selectInWindow,
  systemClock,
  type AriState,
  type Clock,
  type RenewalDecision,
} from './renewal.js'

/**
 * How long before this process's own renewal time port 80 starts looking up unknown tokens in a
 * shared store: instances renew the same certificate at the same time, give or take a retry.
 */
const SHARED_LOOKUP_LEAD_MS = 7 * 24 * 60 * 60 * 1000

/** A challenge record another process's order stored (`certKeys.challenge`), or undefined when malformed. Throws on bad JSON. */
function parseSharedChallenge(bytes: Buffer): { token: string; name: string; keyAuthorization: string } | undefined {
  const entry = JSON.parse(bytes.toString('utf8')) as { token?: unknown; name?: unknown; keyAuthorization?: unknown }
  if (typeof entry.token !== 'string' || typeof entry.name !== 'string' || typeof entry.keyAuthorization !== 'string') return undefined
  return { token: entry.token, name: entry.name, keyAuthorization: entry.keyAuthorization }
}

export interface AcmeProviderOptions {
  /** Names on the certificate (`--domain`, repeatable); the first one names its folder. */
  domains: readonly string[]
  /** `letsencrypt` (default), `letsencrypt-staging`, `zerossl`, or a directory URL. */
  directory?: string | undefined
  email?: string | undefined
  /** Must be true (`--acme-agree-tos`). */
  agreeTos: boolean
  eab?: { kid: string; hmacKey: string } | undefined
  /** `--certs` folder (default `./certs`). Ignored when `store` is given. */
  certsDir?: string
  store?: CertStore
  /** Lock timing of the default FileCertStore (tests shorten it). */
  lockOptions?: CertStoreLockOptions
  logger?: Logger
  /** Berth's HTTP port, for the self-check that fetches our own challenge (default 80). */
  httpPort?: number
  /** Fetch our own challenge before telling the CA (default true). */
  selfCheck?: boolean
  /** Extra PEM CA(s) trusted for the ACME directory's TLS (private CA, pebble in tests). */
  caCertificates?: string | undefined
  /** Injectable time for renewal decisions (tests jump years ahead). Timers still run in real time. */
  clock?: Clock
  /** How often maintenance looks (default 10 min; jittered ±10 %). */
  checkIntervalMs?: number
  /** `start()` schedules `maintain()` itself (default true); false when the caller schedules it. */
  selfSchedule?: boolean
  /** Waits after 1, 2, … consecutive failures (default certmagic's 1 m … 6 h schedule). */
  retryDelaysMs?: readonly number[]
  /** acme-client polling while the CA validates (defaults 1 s … 10 s, 15 attempts). */
  pollMinMs?: number
  pollMaxMs?: number
  random?: () => number
  /** Told of each order sent to the CA, when it ends (metrics). */
  onOrder?: (result: 'issued' | 'failed') => void
}

/** What `<name>.json` next to the certificate holds. */
export interface CertificateMeta {
  names: string[]
  directoryUrl: string
  issuer?: string
  serial?: string
  fingerprint256?: string
  notBefore?: string
  notAfter?: string
  obtainedAt?: string
  ari?: AriState & { certId: string }
  retry?: { failures: number; lastAttemptAt: string; nextAttemptAt: string; lastError: string }
}

interface Stored {
  tls: TlsCertificate
  notBefore: Date
  fingerprint: string
  chain: string
}

export interface AcmeStatus {
  directoryUrl: string
  names: readonly string[]
  certificate?: { notAfter: string; fingerprint256: string; renewalAt: string; renewalReason: string }
  retry?: CertificateMeta['retry']
}

export class AcmeCertificateProvider implements CertificateProvider {
  /** Hand this to the edge's port-80 listener (`startEdge({ challenges })`). */
  readonly challenges: ChallengeResponder
  readonly directoryUrl: string
  readonly names: readonly string[]
  private readonly responder: MemoryChallengeResponder
  private readonly options: AcmeProviderOptions
  private readonly logger: Logger
  private readonly clock: Clock
  private readonly store: CertStore
  private readonly issuer: string
  private readonly email: string | undefined
  private readonly eab: { kid: string; hmacKey: string } | undefined
  private readonly interval: number
  private readonly random: () => number
  private acme: AcmeIssuer | undefined
  private served: Stored | undefined
  private meta: CertificateMeta | undefined
  private readonly listeners: Array<(certificate: TlsCertificate) => void> = []
  private readonly firstCertificate: Promise<TlsCertificate>
  private resolveFirst!: (certificate: TlsCertificate) => void
  private rejectFirst!: (error: unknown) => void
  private maintenance: PeriodicJob<void> | undefined
  private queue: Promise<unknown> = Promise.resolve()
  private readonly abort = new AbortController()
  private started = false
  private stopped = false

  constructor(options: AcmeProviderOptions) {
    const resolved = assertAcmeOptions({
      domains: options.domains,
      email: options.email,
      agreeTos: options.agreeTos,
      directory: options.directory,
      eabKid: options.eab?.kid,
      eabHmac: options.eab?.hmacKey,
    })
    this.options = options
    this.names = resolved.domains
    this.directoryUrl = resolved.directoryUrl
    this.email = resolved.email
    this.eab = resolved.eab
    this.logger = options.logger ?? silentLogger
    this.clock = options.clock ?? systemClock
    this.interval = options.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS
    this.random = options.random ?? Math.random
    this.issuer = issuerKey(this.directoryUrl)
    this.store = options.store ?? new FileCertStore(options.certsDir ?? './certs', options.lockOptions)
    this.responder = new MemoryChallengeResponder({ logger: this.logger })
    this.challenges = this.store instanceof FileCertStore ? this.responder : this.withSharedLookup(this.responder)
    this.firstCertificate = new Promise((resolve, reject) => {
      this.resolveFirst = resolve
      this.rejectFirst = reject
    })
    this.firstCertificate.catch(() => {}) // nobody may be waiting; stop() rejects it
  }

  private get mainName(): string {
    return this.names[0] as string // assertAcmeOptions guarantees at least one
  }

  current(): TlsCertificate | undefined {
    return this.served?.tls
  }

  onChange(listener: (certificate: TlsCertificate) => void): void {
    this.listeners.push(listener)
  }

  /** Resolves with the first certificate (stored or newly obtained); rejects if stopped before. */
  ready(): Promise<TlsCertificate> {
    return this.firstCertificate
  }

  async start(): Promise<void> {
    if (this.started) return
    this.started = true
    if (this.store instanceof FileCertStore) await this.store.init()
    this.acme = new AcmeIssuer({
      directoryUrl: this.directoryUrl,
      issuer: this.issuer,
      store: this.store,
      challenges: this.responder,
      email: this.email,
      eab: this.eab,
      logger: this.logger,
      caCertificates: this.options.caCertificates,
      httpChallengePort: this.options.httpPort ?? 80,
      selfCheck: this.options.selfCheck ?? true,
      ...(this.options.pollMinMs !== undefined ? { pollMinMs: this.options.pollMinMs } : {}),
      ...(this.options.pollMaxMs !== undefined ? { pollMaxMs: this.options.pollMaxMs } : {}),
    })
    this.meta = await this.loadMeta()
    const stored = await this.loadStored()
    if (stored.certificate) {
      this.swap(stored.certificate, 'loaded')
      if (stored.reason !== 'ok')
        this.logger.warn(`${stored.reason}: serving it until a new certificate for all names is obtained`, { domains: this.names.join(',') })
    } else {
      this.logger.warn(
        `HTTPS is not up yet: ${stored.reason}; ordering one from the CA now (the HTTP port answers the CA's challenges and redirects meanwhile)`,
        {
          domains: this.names.join(','),
          ca: this.directoryUrl,
        },
      )
    }
    if (this.options.selfSchedule !== false)
      this.maintenance = scheduled(
        () => this.nextCheckDelay(),
        signal => this.maintain(signal),
        { runAtStart: true },
      )
  }

  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.abort.abort(new AcmeError('ORDER_FAILED', 'stopped'))
    this.rejectFirst(new AcmeError('ORDER_FAILED', 'the ACME provider was stopped before it had a certificate'))
    // An order in flight stops at its next step; don't hold a shutdown hostage to a slow CA.
    let timer: NodeJS.Timeout | undefined
    await Promise.race([Promise.all([this.queue.catch(() => {}), this.maintenance?.stop()]), new Promise(resolve => (timer = setTimeout(resolve, 3_000)))])
    clearTimeout(timer)
    this.acme?.close()
  }

  /**
   * Orders a new certificate now, even if the current one is not due (CLI `berth cert renew`, tests).
   * Resolves with the served certificate; rejects with AcmeError (the old certificate stays served).
   */
  renew(): Promise<TlsCertificate> {
    return this.enqueue(() => this.obtain(true))
  }

  /** For logs and `berth doctor`. */
  status(): AcmeStatus {
    const decision = this.served ? this.decide(this.served) : undefined
    return {
      directoryUrl: this.directoryUrl,
      names: this.names,
      ...(this.served && decision
        ? {
            certificate: {
              notAfter: this.served.tls.notAfter.toISOString(),
              fingerprint256: this.served.fingerprint,
              renewalAt: decision.at.toISOString(),
              renewalReason: decision.reason,
            },
          }
        : {}),
      ...(this.meta?.retry ? { retry: this.meta.retry } : {}),
    }
  }

  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task, task)
    this.queue = run.catch(() => {})
    return run
  }

  /**
   * One maintenance pass (after `start()`), queued behind any order in progress. Never rejects: a
   * failure is logged (a failed order also persists its retry time). Aborting `signal` stops an
   * order at its next step and resolves at once; `stop()` does the same.
   */
  async maintain(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return
    const pass = this.enqueue(() => this.maintainOnce(signal)).catch((error: unknown) =>
      this.logger.error('certificate maintenance failed', { error: describe(error) }),
    )
    await untilAborted(pass, signal)
  }

  /** When the next `maintain()` is due: the regular interval, or earlier for a retry or renewal time inside it. */
  nextCheckDelay(): number {
    const now = this.clock.now()
    let delay = jittered(this.interval, 0.1, this.random)
    const retryAt = this.meta?.retry ? Date.parse(this.meta.retry.nextAttemptAt) : NaN
    const renewAt = this.served ? this.decide(this.served).at.getTime() : NaN
    // Only future times shorten the wait; a time already past is being handled (or waits for its retry).
    for (const at of [retryAt, renewAt]) if (Number.isFinite(at) && at > now) delay = Math.min(delay, at - now + 50)
    return delay
  }

  private decide(stored: Stored): RenewalDecision | { due: true; at: Date; reason: 'names' } {
    // A certificate that lacks a configured name (a --domain was added) is served until its successor exists.
    if (!this.covers(stored)) return { due: true, at: new Date(this.clock.now()), reason: 'names' }
    return renewalDecision({ notBefore: stored.notBefore, notAfter: stored.tls.notAfter }, this.clock.now(), {
      ari: this.meta?.ari?.certId === this.ariCertIdOf(stored) ? this.meta?.ari : undefined,
      checkIntervalMs: this.interval,
    })
  }

  private ariCertIdOf(stored: Stored): string | undefined {
    try {
      return ariCertId(stored.chain)
    } catch {
      return undefined
    }
  }

  private async maintainOnce(signal: AbortSignal | undefined): Promise<void> {
    if (this.stopped || signal?.aborted) return
    // Another process sharing certs/ may have renewed: serve what it stored.
    this.meta = (await this.loadMeta()) ?? this.meta
    const stored = await this.loadStored()
    if (stored.certificate && stored.certificate.fingerprint !== this.served?.fingerprint && this.isBetter(stored.certificate)) {
      this.swap(stored.certificate, 'adopted')
    }
    if (this.served) await this.refreshAri(this.served)
    const decision = this.served ? this.decide(this.served) : undefined
    if (decision && !decision.due) return
    const retry = this.meta?.retry
    if (retry && Date.parse(retry.nextAttemptAt) > this.clock.now()) {
      this.logger.debug('certificate renewal is waiting for its retry time', { nextAttemptAt: retry.nextAttemptAt, failures: retry.failures })
      return
    }
    if (decision) {
      this.logger.info('certificate renewal is due', {
        domains: this.names.join(','),
        reason: decision.reason,
        notAfter: this.served?.tls.notAfter.toISOString(),
      })
    }
    await this.obtain(false, signal).catch(() => {}) // obtain() logged it and persisted the retry time
  }

  /** Newer stored certificates win, so two processes converge on the same one. */
  private isBetter(candidate: Stored): boolean {
    if (this.served && this.covers(candidate) !== this.covers(this.served)) return this.covers(candidate)
    return (
      !this.served || candidate.tls.notAfter.getTime() > this.served.tls.notAfter.getTime() || candidate.notBefore.getTime() > this.served.notBefore.getTime()
    )
  }

  /** Takes the lock, re-checks storage, orders if still needed, stores, swaps. */
  private async obtain(force: boolean, caller?: AbortSignal): Promise<TlsCertificate> {
    const acme = this.acme
    if (!acme || this.stopped) throw new AcmeError('ORDER_FAILED', 'the ACME provider is not running')
    const signal = caller ? AbortSignal.any([this.abort.signal, caller]) : this.abort.signal
    const unlock = await this.lockWhileAnswering(signal)
    try {
      // Someone (another process, or us before a restart) may have done the work while we waited.
      this.meta = (await this.loadMeta()) ?? this.meta
      const stored = await this.loadStored()
      if (stored.certificate && stored.certificate.fingerprint !== this.served?.fingerprint && this.isBetter(stored.certificate)) {
        this.swap(stored.certificate, 'adopted')
      }
      if (!force && this.served && !this.decide(this.served).due) return this.served.tls
      const retry = this.meta?.retry
      if (!force && retry && Date.parse(retry.nextAttemptAt) > this.clock.now()) {
        throw new AcmeError('ORDER_FAILED', `waiting until ${retry.nextAttemptAt} before trying again (${retry.lastError})`)
      }

      const attemptAt = this.clock.now()
      const replaces = this.served && this.meta?.ari ? this.meta.ari.certId : undefined
      let issued
      try {
        issued = await acme.obtain(this.names, { ...(replaces ? { replaces } : {}), signal })
      } catch (error) {
        if (signal.aborted) throw error
        await this.recordFailure(error, attemptAt)
        this.options.onOrder?.('failed')
        throw error
      }
      const next = parseChain(issued.certificate, issued.key)
      const folder = this.mainName
      await this.store.store(certKeys.siteKey(this.issuer, folder), issued.key)
      await this.store.store(certKeys.siteCert(this.issuer, folder), issued.certificate)
      this.meta = this.metaFor(next, attemptAt)
      await this.saveMeta(this.meta)
      this.logger.info('certificate stored', {
        domains: this.names.join(','),
        ca: this.directoryUrl,
        notAfter: next.tls.notAfter.toISOString(),
        folder: certKeys.siteFolder(this.issuer, folder),
      })
      this.swap(next, 'obtained')
      this.options.onOrder?.('issued')
      return next.tls
    } finally {
      await unlock()
    }
  }

  /**
   * Takes the issue lock. While another process holds it (and is probably ordering), copy its pending
   * challenges from the store into our responder: the CA may be routed to our HTTP port instead of its.
   */
  private async lockWhileAnswering(signal: AbortSignal): Promise<() => Promise<void>> {
    let waiting = true
    const locked = this.store.lock(certKeys.issueLock(this.issuer, this.mainName), signal).finally(() => {
      waiting = false
    })
    const sync = async (): Promise<void> => {
      while (waiting) {
        await this.syncSharedChallenges().catch((error: unknown) => this.logger.debug('could not read shared challenges', { error: describe(error) }))
        await new Promise(resolve => setTimeout(resolve, 100))
      }
      this.responder.syncShared([])
    }
    const syncing = sync()
    try {
      return await locked
    } finally {
      await syncing
    }
  }

  /**
   * A store shared with other instances: a token this process does not hold may belong to another
   * instance's order, so a miss is looked up in the store (bounded: SharedChallengeLookup).
   */
  private withSharedLookup(own: MemoryChallengeResponder): ChallengeResponder {
    const shared = new SharedChallengeLookup({
      load: async token => {
        const entry = parseSharedChallenge(await this.store.load(certKeys.challenge(this.issuer, token)))
        return entry?.token === token ? entry : undefined
      },
      mayOrder: () => this.mayOrderSoon(),
      now: () => this.clock.now(),
      logger: this.logger,
    })
    return { keyAuthorization: (token, requestId) => own.keyAuthorization(token, requestId) ?? shared.keyAuthorization(token, requestId) }
  }

  /** No certificate yet, or within SHARED_LOOKUP_LEAD_MS of renewing it: another instance may be ordering. */
  private mayOrderSoon(): boolean {
    if (this.served === undefined) return true
    return this.clock.now() >= this.decide(this.served).at.getTime() - SHARED_LOOKUP_LEAD_MS
  }

  private async syncSharedChallenges(): Promise<void> {
    const entries: Array<{ token: string; name: string; keyAuthorization: string }> = []
    for (const key of await this.store.list(certKeys.challenges(this.issuer))) {
      try {
        const entry = parseSharedChallenge(await this.store.load(key))
        if (entry !== undefined) entries.push(entry)
      } catch {
        // Deleted or half-visible between list and load: the next pass sees the settled state.
      }
    }
    this.responder.syncShared(entries)
  }

  private async recordFailure(error: unknown, attemptAt: number): Promise<void> {
    const failures = (this.meta?.retry?.failures ?? 0) + 1
    const retryAfterMs = error instanceof AcmeError ? (error.retryAfterMs ?? 0) : 0
    const wait = retryDelay(failures, this.options.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS, retryAfterMs)
    const nextAttemptAt = new Date(this.clock.now() + wait).toISOString()
    const message = describe(error)
    this.meta = {
      ...(this.meta ?? { names: [...this.names], directoryUrl: this.directoryUrl }),
      retry: { failures, lastAttemptAt: new Date(attemptAt).toISOString(), nextAttemptAt, lastError: message },
    }
    await this.saveMeta(this.meta).catch((saveError: unknown) => this.logger.error('could not save the retry state', { error: describe(saveError) }))
    const serving = this.served
      ? `still serving the current certificate (valid until ${this.served.tls.notAfter.toISOString()})`
      : 'HTTPS stays down until a certificate is obtained'
    this.logger.error(`could not obtain a certificate: ${message}; ${serving}`, { domains: this.names.join(','), failures, nextAttemptAt })
  }

  private metaFor(stored: Stored, attemptAt: number): CertificateMeta {
    const leaf = new X509Certificate(stored.chain)
    const issuerCn = /(?:^|\n)CN=([^\n]+)/.exec(leaf.issuer)?.[1]
    return {
      names: [...this.names],
      directoryUrl: this.directoryUrl,
      ...(issuerCn ? { issuer: issuerCn } : {}),
      serial: leaf.serialNumber,
      fingerprint256: stored.fingerprint,
      notBefore: stored.notBefore.toISOString(),
      notAfter: stored.tls.notAfter.toISOString(),
      obtainedAt: new Date(attemptAt).toISOString(),
    }
  }

  /** Fetches ARI when the CA offers it and our last answer told us to ask again. Advisory only. */
  private async refreshAri(stored: Stored): Promise<void> {
    const acme = this.acme
    const certId = this.ariCertIdOf(stored)
    if (!acme || !certId) return
    const now = this.clock.now()
    const known = this.meta?.ari
    if (known && known.certId === certId && Date.parse(known.nextFetchAt) > now) return
    try {
      const info = await acme.renewalInfo(certId, now)
      if (!info) return
      const keep = known && known.certId === certId && known.windowStart === info.windowStart.toISOString() && known.windowEnd === info.windowEnd.toISOString()
      const selectedAt = keep
        ? known.selectedAt
        : new Date(selectInWindow(info.windowStart.getTime(), info.windowEnd.getTime(), now, this.random)).toISOString()
      this.meta = {
        ...(this.meta ?? this.metaFor(stored, now)),
        ari: {
          certId,
          windowStart: info.windowStart.toISOString(),
          windowEnd: info.windowEnd.toISOString(),
          selectedAt,
          nextFetchAt: new Date(now + info.retryAfterMs).toISOString(),
          ...(info.explanationUrl ? { explanationUrl: info.explanationUrl } : {}),
        },
      }
      await this.saveMeta(this.meta)
      if (!keep)
        this.logger.info('CA renewal window (ARI) updated', {
          windowStart: info.windowStart.toISOString(),
          windowEnd: info.windowEnd.toISOString(),
          renewAt: selectedAt,
          explanation: info.explanationUrl,
        })
    } catch (error) {
      // Only worth a warning when the CA is known to offer ARI; otherwise (CA down at start) the order path reports it.
      const log = acme.offersRenewalInfo ? this.logger.warn : this.logger.debug
      log("could not fetch the CA's renewal information (ARI); using the lifetime rule", { error: describe(error) })
    }
  }

  private swap(next: Stored, how: 'loaded' | 'obtained' | 'adopted'): void {
    const first = !this.served
    this.served = next
    if (this.meta?.retry && how !== 'loaded') {
      const { retry: _retry, ...rest } = this.meta
      this.meta = rest
    }
    const decision = this.decide(next)
    const words = {
      loaded: 'certificate loaded from storage',
      obtained: 'certificate obtained and now served',
      adopted: 'certificate renewed by another Berth process, now served',
    }
    this.logger.info(words[how], {
      domains: next.tls.names.join(','),
      notAfter: next.tls.notAfter.toISOString(),
      nextRenewal: decision.at.toISOString(),
    })
    if (first) this.resolveFirst(next.tls)
    if (how === 'loaded') return
    for (const listener of this.listeners) {
      try {
        listener(next.tls)
      } catch (error) {
        this.logger.error('a certificate change listener failed', { error: describe(error) })
      }
    }
  }

  private async loadMeta(): Promise<CertificateMeta | undefined> {
    try {
      const parsed = JSON.parse((await this.store.load(certKeys.siteMeta(this.issuer, this.mainName))).toString('utf8')) as CertificateMeta
      return typeof parsed === 'object' && parsed !== null ? parsed : undefined
    } catch (error) {
      if (error instanceof CertStoreNotFoundError) return undefined
      if (error instanceof SyntaxError) {
        this.logger.warn('ignoring an unreadable certificate metadata file', { key: certKeys.siteMeta(this.issuer, this.mainName) })
        return undefined
      }
      throw error
    }
  }

  private async saveMeta(meta: CertificateMeta): Promise<void> {
    await this.store.store(certKeys.siteMeta(this.issuer, this.mainName), JSON.stringify(meta, null, 2) + '\n')
  }

  /** The stored certificate if it can be served for our names, else why not (for the log). */
  private async loadStored(): Promise<{ certificate?: Stored; reason: string }> {
    let chain: string
    let key: string
    try {
      chain = (await this.store.load(certKeys.siteCert(this.issuer, this.mainName))).toString('utf8')
      key = (await this.store.load(certKeys.siteKey(this.issuer, this.mainName))).toString('utf8')
    } catch (error) {
      if (error instanceof CertStoreNotFoundError) return { reason: `no certificate for ${this.names.join(', ')} from this CA in storage yet` }
      throw error
    }
    let stored: Stored
    try {
      stored = parseChain(chain, key)
    } catch (error) {
      return { reason: `the stored certificate cannot be used (${describe(error)})` }
    }
    if (stored.tls.notAfter.getTime() <= this.clock.now()) return { reason: `the stored certificate expired on ${stored.tls.notAfter.toISOString()}` }
    const missing = this.names.filter(name => !stored.tls.names.includes(name))
    return { certificate: stored, reason: missing.length > 0 ? `the stored certificate does not cover ${missing.join(', ')}` : 'ok' }
  }

  private covers(stored: Stored): boolean {
    return this.names.every(name => stored.tls.names.includes(name))
  }
}

/** Parses a PEM chain + key into what we serve; throws if the key does not match the leaf. */
function parseChain(chain: string, key: string): Stored {
  const leaf = new X509Certificate(chain)
  if (!leaf.checkPrivateKey(createPrivateKey(key))) throw new Error('the key does not belong to the certificate')
  const names = (leaf.subjectAltName ?? '')
    .split(/,\s*/)
    .map(entry => /^DNS:(.+)$/.exec(entry)?.[1])
    .filter((name): name is string => Boolean(name))
    .map(name => name.toLowerCase())
  return {
    tls: { key, cert: chain, names, notAfter: new Date(leaf.validTo) },
    notBefore: new Date(leaf.validFrom),
    fingerprint: leaf.fingerprint256,
    chain,
  }
}

/** Settles with `work`, or as soon as `signal` aborts (`work` then ends unobserved). */
function untilAborted(work: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return work
  return new Promise(resolve => {
    const done = (): void => {
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done)
    void work.then(done)
  })
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

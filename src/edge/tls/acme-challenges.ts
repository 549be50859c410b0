/**
 * The HTTP-01 challenges an order is waiting on, kept in memory for the edge's port-80 listener
 * (`GET /.well-known/acme-challenge/<token>` → the key authorization, RFC 8555 §8.3).
 */
import type { Logger } from '../../log.js'
import { silentLogger } from '../../log.js'
import type { ChallengeResponder } from './certificate-source.js'

interface Pending {
  keyAuthorization: string
  name: string
  /** Read from the shared store (another Berth process's order), not added by our own order. */
  shared?: boolean
  /** Log the next fetch: set once our own self-check is done, so the log line means "the CA fetched it". */
  logNextAnswer: boolean
}

export class MemoryChallengeResponder implements ChallengeResponder {
  private readonly pending = new Map<string, Pending>()
  private readonly logger: Logger

  constructor(options: { logger?: Logger } = {}) {
    this.logger = options.logger ?? silentLogger
  }

  /** Called by the edge for every challenge request; logs the first answer per token. */
  keyAuthorization(token: string, requestId?: string): string | undefined {
    const entry = this.pending.get(token)
    if (!entry) return undefined
    if (entry.logNextAnswer) {
      entry.logNextAnswer = false
      this.logger.info('ACME challenge answered on the HTTP port', { domain: entry.name, token, id: requestId })
    }
    return entry.keyAuthorization
  }

  add(token: string, keyAuthorization: string, name: string): void {
    this.pending.set(token, { keyAuthorization, name, logNextAnswer: false })
  }

  remove(token: string): void {
    this.pending.delete(token)
  }

  /**
   * Replaces the challenges copied from the shared store with `entries` (another process is ordering
   * while we wait for its lock; the CA may reach us instead of it). Our own challenges are kept.
   */
  syncShared(entries: ReadonlyArray<{ token: string; name: string; keyAuthorization: string }>): void {
    const wanted = new Set(entries.map(e => e.token))
    for (const [token, entry] of this.pending) if (entry.shared && !wanted.has(token)) this.pending.delete(token)
    for (const entry of entries) {
      if (this.pending.has(entry.token)) continue
      this.pending.set(entry.token, { keyAuthorization: entry.keyAuthorization, name: entry.name, logNextAnswer: true, shared: true })
    }
  }

  /** From now on, log the first fetch of this token (the CA's, after our self-check). */
  logNextAnswer(token: string): void {
    const entry = this.pending.get(token)
    if (entry) entry.logNextAnswer = true
  }

  get size(): number {
    return this.pending.size
  }
}

/** Asks several responders in turn; for an edge in front of more than one provider. */
export function combineResponders(...responders: ChallengeResponder[]): ChallengeResponder {
  return {
    async keyAuthorization(token, requestId) {
      for (const responder of responders) {
        const value = await responder.keyAuthorization(token, requestId)
        if (value !== undefined) return value
      }
      return undefined
    },
  }
}

export interface SharedChallengeLookupOptions {
  /** Reads the challenge another instance stored for `token`; undefined (or a rejection) when there is none. */
  load(token: string): Promise<{ name: string; keyAuthorization: string } | undefined>
  /** Whether an order can be running now (no certificate, or renewal near): lookups happen only then. */
  mayOrder(): boolean
  /** Lookups at once; a request beyond this is answered 404 without a read. Default 4. */
  maxInFlight?: number
  /** Lookups per second on average (bursts up to this many); beyond, 404 without a read. Default 10. */
  perSecond?: number
  now?: () => number
  logger?: Logger
}

/**
 * Port 80's fallback when several instances share one store: the CA may ask this instance for a
 * token of an order another instance placed, before this one copied that order's challenges
 * (it copies them only while it waits for the issue lock). On a miss it reads the token's
 * challenge from the store. A stranger can send any token-shaped path, so lookups happen only
 * while an order can be running, at most `maxInFlight` at once and `perSecond` on average; the
 * rest are answered 404 without touching the store.
 */
export class SharedChallengeLookup {
  readonly #options: SharedChallengeLookupOptions
  readonly #maxInFlight: number
  readonly #perSecond: number
  readonly #now: () => number
  readonly #logger: Logger
  #inFlight = 0
  #budget: number
  #refilledAt: number

  constructor(options: SharedChallengeLookupOptions) {
    this.#options = options
    this.#maxInFlight = options.maxInFlight ?? 4
    this.#perSecond = options.perSecond ?? 10
    this.#now = options.now ?? Date.now
    this.#logger = options.logger ?? silentLogger
    this.#budget = this.#perSecond
    this.#refilledAt = this.#now()
  }

  async keyAuthorization(token: string, requestId?: string): Promise<string | undefined> {
    if (this.#inFlight >= this.#maxInFlight || !this.#options.mayOrder() || !this.#spend()) return undefined
    this.#inFlight++
    try {
      const entry = await this.#options.load(token).catch(() => undefined)
      if (entry === undefined) return undefined
      this.#logger.info('ACME challenge answered on the HTTP port, from the shared store', { domain: entry.name, token, id: requestId })
      return entry.keyAuthorization
    } finally {
      this.#inFlight--
    }
  }

  #spend(): boolean {
    const now = this.#now()
    this.#budget = Math.min(this.#perSecond, this.#budget + ((now - this.#refilledAt) / 1000) * this.#perSecond)
    this.#refilledAt = now
    if (this.#budget < 1) return false
    this.#budget -= 1
    return true
  }
}

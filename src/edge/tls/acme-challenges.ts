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
    keyAuthorization(token, requestId) {
      for (const responder of responders) {
        const value = responder.keyAuthorization(token, requestId)
        if (value !== undefined) return value
      }
      return undefined
    },
  }
}

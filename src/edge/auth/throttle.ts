/**
 * Slows down repeated failed logins per client address (a token bucket per address).
 * Each failure takes a token; an address with no tokens left gets 429 without any bcrypt work until
 * tokens refill. Other addresses are unaffected, so a guessing client cannot lock out real users.
 */
export interface LoginThrottleOptions {
  /** Failures allowed in a burst, default 10 (docker retries a few times on a wrong password). */
  burst?: number
  /** One token back every this many ms, default 6000 (10 failures a minute sustained). */
  refillMs?: number
  /** Addresses tracked at most; the oldest are forgotten first. Default 10000. */
  maxAddresses?: number
  now?: () => number
}

export class LoginThrottle {
  private readonly buckets = new Map<string, { tokens: number; updated: number }>()
  private readonly burst: number
  private readonly refillMs: number
  private readonly maxAddresses: number
  private readonly now: () => number

  constructor(options: LoginThrottleOptions = {}) {
    this.burst = options.burst ?? 10
    this.refillMs = options.refillMs ?? 6000
    this.maxAddresses = options.maxAddresses ?? 10_000
    this.now = options.now ?? Date.now
  }

  /** Milliseconds the address must wait before its next uncached attempt; 0 when it may try now. */
  retryAfterMs(address: string): number {
    const bucket = this.refill(address)
    if (!bucket || bucket.tokens >= 1) return 0
    return Math.ceil((1 - bucket.tokens) * this.refillMs)
  }

  /**
   * Takes a token before an uncached check (so parallel guesses cannot all pass the gate before the
   * first one fails). False when none is left. Give it back with `refund` when the login succeeds.
   */
  take(address: string): boolean {
    if (this.retryAfterMs(address) > 0) return false
    this.fail(address)
    return true
  }

  /** Returns the token of a check that succeeded. */
  refund(address: string): void {
    const bucket = this.refill(address)
    if (bucket) bucket.tokens = Math.min(this.burst, bucket.tokens + 1)
  }

  /** Records one failed login from the address. */
  fail(address: string): void {
    const bucket = this.refill(address) ?? { tokens: this.burst, updated: this.now() }
    bucket.tokens = Math.max(0, bucket.tokens - 1)
    this.buckets.delete(address)
    if (this.buckets.size >= this.maxAddresses) {
      const oldest = this.buckets.keys().next().value
      if (oldest !== undefined) this.buckets.delete(oldest)
    }
    this.buckets.set(address, bucket)
  }

  private refill(address: string): { tokens: number; updated: number } | undefined {
    const bucket = this.buckets.get(address)
    if (!bucket) return undefined
    const now = this.now()
    bucket.tokens = Math.min(this.burst, bucket.tokens + (now - bucket.updated) / this.refillMs)
    bucket.updated = now
    if (bucket.tokens >= this.burst) {
      this.buckets.delete(address)
      return undefined
    }
    return bucket
  }
}

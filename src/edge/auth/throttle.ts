/**
 * Slows down password guessing: counts distinct wrong passwords, not requests.
 *
 * Two token buckets hold the failures: one per (address, user) and a larger one per address (for
 * guesses spread over many user names). A check that needs bcrypt first takes a token from both;
 * when either is empty it is answered 429 without bcrypt until tokens refill. Each bucket remembers
 * the secrets it was charged for, so the same wrong password sent again (a client retrying, or ten
 * parallel requests with one typo) is charged once. A successful login clears its (address, user)
 * bucket and gives the address its token back. Credentials verified before never reach the
 * throttle (the edge answers them from the cache), and one user's typos never block another user
 * behind the same address until the address bucket, sized for many users, is empty.
 */
export interface LoginThrottleOptions {
  /** Distinct wrong passwords per (address, user) in a burst, default 10. */
  burst?: number
  /** One (address, user) token back every this many ms, default 6000 (10 a minute sustained). */
  refillMs?: number
  /** Distinct wrong (user, password) pairs per address in a burst, default 50. */
  addressBurst?: number
  /** One address token back every this many ms, default 2000 (30 a minute sustained). */
  addressRefillMs?: number
  /** Buckets kept at most, per kind; the oldest are forgotten first. Default 10000. */
  maxAddresses?: number
  now?: () => number
}

interface Bucket {
  tokens: number
  updated: number
  /** Fingerprints of the secrets this bucket was charged for, oldest first. */
  secrets: Set<string>
}

class Buckets {
  private readonly map = new Map<string, Bucket>()

  constructor(
    private readonly burst: number,
    private readonly refillMs: number,
    private readonly maxEntries: number,
    private readonly now: () => number,
  ) {}

  retryAfterMs(key: string): number {
    const bucket = this.refill(key)
    if (!bucket || bucket.tokens >= 1) return 0
    return Math.ceil((1 - bucket.tokens) * this.refillMs)
  }

  hasCharged(key: string, secret: string): boolean {
    return this.refill(key)?.secrets.has(secret) ?? false
  }

  charge(key: string, secret: string): void {
    const bucket = this.refill(key) ?? { tokens: this.burst, updated: this.now(), secrets: new Set<string>() }
    bucket.tokens = Math.max(0, bucket.tokens - 1)
    bucket.secrets.add(secret)
    if (bucket.secrets.size > 2 * this.burst) bucket.secrets.delete(bucket.secrets.values().next().value!)
    this.map.delete(key)
    if (this.map.size >= this.maxEntries) {
      const oldest = this.map.keys().next().value
      if (oldest !== undefined) this.map.delete(oldest)
    }
    this.map.set(key, bucket)
  }

  refund(key: string, secret: string): void {
    const bucket = this.refill(key)
    if (!bucket) return
    bucket.secrets.delete(secret)
    bucket.tokens = Math.min(this.burst, bucket.tokens + 1)
  }

  clear(key: string): void {
    this.map.delete(key)
  }

  private refill(key: string): Bucket | undefined {
    const bucket = this.map.get(key)
    if (!bucket) return undefined
    const now = this.now()
    bucket.tokens = Math.min(this.burst, bucket.tokens + (now - bucket.updated) / this.refillMs)
    bucket.updated = now
    if (bucket.tokens >= this.burst) {
      this.map.delete(key)
      return undefined
    }
    return bucket
  }
}

export class LoginThrottle {
  private readonly perUser: Buckets
  private readonly perAddress: Buckets

  constructor(options: LoginThrottleOptions = {}) {
    const now = options.now ?? Date.now
    const max = options.maxAddresses ?? 10_000
    this.perUser = new Buckets(options.burst ?? 10, options.refillMs ?? 6000, max, now)
    this.perAddress = new Buckets(options.addressBurst ?? 50, options.addressRefillMs ?? 2000, max, now)
  }

  /**
   * Called before a bcrypt check of `secret` (a fingerprint of user and password) for `user` from
   * `address`. Returns 0 and charges both buckets when the check may run (nothing is charged for a
   * secret already counted), else the milliseconds to wait. Charging before the check means
   * parallel guesses cannot all pass before the first one fails.
   */
  admit(address: string, user: string, secret: string): number {
    const userKey = keyOf(address, user)
    if (this.perUser.hasCharged(userKey, secret)) return 0
    const wait = Math.max(this.perUser.retryAfterMs(userKey), this.perAddress.retryAfterMs(address))
    if (wait > 0) return wait
    this.perUser.charge(userKey, secret)
    this.perAddress.charge(address, secret)
    return 0
  }

  /** The admitted check succeeded: the user's failures from this address are forgiven. */
  succeeded(address: string, user: string, secret: string): void {
    this.perUser.clear(keyOf(address, user))
    this.perAddress.refund(address, secret)
  }

  /** The admitted check did not run (e.g. refused for load): gives the tokens back. */
  release(address: string, user: string, secret: string): void {
    this.perUser.refund(keyOf(address, user), secret)
    this.perAddress.refund(address, secret)
  }

  /** Milliseconds before `user` may be tried again from `address` with a new password; 0 when now. */
  retryAfterMs(address: string, user: string): number {
    return Math.max(this.perUser.retryAfterMs(keyOf(address, user)), this.perAddress.retryAfterMs(address))
  }
}

function keyOf(address: string, user: string): string {
  return `${address}\0${user}`
}

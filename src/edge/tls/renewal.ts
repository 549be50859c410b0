/**
 * When to renew a certificate and when to retry after a failure. Pure functions of a clock reading,
 * so tests can jump years ahead (pebble 2.4 issues 5-year certificates).
 *
 * Policy (certmagic's, see research/edge-anchors.md §1, §10):
 * - normally renew when a third of the lifetime remains (90 d → 30 d, 45 d → 15 d);
 * - when the CA offers ARI (RFC 9773), renew at the time picked inside its suggested window instead
 *   (a little early: one check interval before it, so a check lands inside the window);
 * - emergency: whatever ARI says, renew once less than 1/20 of the lifetime remains;
 * - failures wait 1 m, 2 m, 2 m, 5 m, 10 m ×3, 20 m ×4, 30 m ×6, 1 h ×3, 2 h ×2, 3 h ×2, then 6 h,
 *   and never less than the CA's Retry-After. The schedule is persisted, so restarts keep it.
 */

export interface Clock {
  /** Milliseconds since the epoch, like Date.now(). */
  now(): number
}

export const systemClock: Clock = { now: () => Date.now() }

export interface Lifetime {
  readonly notBefore: Date
  readonly notAfter: Date
}

/** What the CA's renewalInfo said, with the time we picked inside the window. */
export interface AriState {
  readonly windowStart: string
  readonly windowEnd: string
  /** Uniformly random time inside the window (RFC 9773 §4.2), ISO 8601. */
  readonly selectedAt: string
  /** When to ask the CA again (its Retry-After), ISO 8601. */
  readonly nextFetchAt: string
  readonly explanationUrl?: string
}

export type RenewalReason = 'lifetime' | 'ari' | 'emergency' | 'expired'

export interface RenewalDecision {
  readonly due: boolean
  /** When renewal becomes (or became) due. */
  readonly at: Date
  readonly reason: RenewalReason
}

export const DEFAULT_CHECK_INTERVAL_MS = 10 * 60_000
export const RENEWAL_RATIO = 1 / 3
export const EMERGENCY_RATIO = 1 / 20

/**
 * Decides whether `certificate` should be renewed at `now`. `checkIntervalMs` is how often the
 * caller looks; an ARI time is honoured one interval early so the renewal happens inside the window.
 */
export function renewalDecision(certificate: Lifetime, now: number, options: { ari?: AriState | undefined; checkIntervalMs?: number } = {}): RenewalDecision {
  const notBefore = certificate.notBefore.getTime()
  // certmagic: NotAfter truncated to the second, +1 s (the last valid second is inclusive).
  const expiresAt = Math.floor(certificate.notAfter.getTime() / 1000) * 1000 + 1000
  const lifetime = Math.max(expiresAt - notBefore, 0)
  const interval = options.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS

  if (now >= expiresAt) return { due: true, at: new Date(expiresAt), reason: 'expired' }
  const emergencyAt = expiresAt - lifetime * EMERGENCY_RATIO
  if (options.ari) {
    const selected = Date.parse(options.ari.selectedAt)
    if (Number.isFinite(selected)) {
      const at = Math.min(selected - interval, emergencyAt)
      return { due: now >= at, at: new Date(at), reason: at === emergencyAt ? 'emergency' : 'ari' }
    }
  }
  const at = expiresAt - lifetime * RENEWAL_RATIO
  return { due: now >= at, at: new Date(at), reason: 'lifetime' }
}

const MINUTE = 60_000
const HOUR = 60 * MINUTE

/** certmagic `retryIntervals` (async.go): the wait after the n-th consecutive failure. */
export const DEFAULT_RETRY_DELAYS_MS: readonly number[] = [
  1 * MINUTE,
  2 * MINUTE,
  2 * MINUTE,
  5 * MINUTE,
  10 * MINUTE,
  10 * MINUTE,
  10 * MINUTE,
  20 * MINUTE,
  20 * MINUTE,
  20 * MINUTE,
  20 * MINUTE,
  30 * MINUTE,
  30 * MINUTE,
  30 * MINUTE,
  30 * MINUTE,
  30 * MINUTE,
  30 * MINUTE,
  1 * HOUR,
  1 * HOUR,
  1 * HOUR,
  2 * HOUR,
  2 * HOUR,
  3 * HOUR,
  3 * HOUR,
  6 * HOUR,
]

/** Wait after `failures` consecutive failures (1-based), at least `retryAfterMs` when the CA asked for it. */
export function retryDelay(failures: number, delays: readonly number[] = DEFAULT_RETRY_DELAYS_MS, retryAfterMs = 0): number {
  if (delays.length === 0) throw new RangeError('retry delays must not be empty')
  const index = Math.min(Math.max(failures, 1), delays.length) - 1
  return Math.max(delays[index] ?? 0, retryAfterMs)
}

/** `intervalMs` ± `ratio` of jitter, so many servers started together don't ask the CA in lockstep. */
export function jittered(intervalMs: number, ratio = 0.1, random: () => number = Math.random): number {
  return Math.max(0, Math.round(intervalMs * (1 + ratio * (2 * random() - 1))))
}

/** Picks a uniformly random time in [start, end] (RFC 9773 §4.2); `now` when the window already ended. */
export function selectInWindow(start: number, end: number, now: number, random: () => number = Math.random): number {
  if (end <= now) return now
  const from = Math.max(start, now)
  return Math.round(from + (end - from) * random())
}

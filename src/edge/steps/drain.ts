/**
 * Shutdown without cutting uploads: counts the exchanges in flight and, once draining, answers new
 * ones with 503 (Retry-After) so clients retry elsewhere or later while those in flight finish.
 */
import type { Step } from '../../http/exchange.js'
import { RegistryError } from '../../http/errors.js'
import { sendError } from '../../http/respond.js'

/** After the last exchange, a moment for its final bytes to reach the client before connections are ended. */
const SETTLE_MS = 300

export class Drain {
  private active = 0
  private draining = false
  private onIdle: (() => void) | undefined

  readonly step: Step = async (exchange, next) => {
    if (this.draining) {
      return sendError(exchange, new RegistryError('UNAVAILABLE', null, { message: 'the registry is shutting down', headers: { 'Retry-After': '10' } }), {
        close: true,
      })
    }
    this.active++
    exchange.res.once('close', () => {
      this.active--
      if (this.active === 0) this.onIdle?.()
    })
    return next(exchange)
  }

  /** Whether shutdown has begun (new exchanges are refused). */
  get isDraining(): boolean {
    return this.draining
  }

  /** Refuses new exchanges from now on; resolves when none is in flight any more, or after graceMs. */
  async start(graceMs: number): Promise<void> {
    this.draining = true
    if (this.active === 0) return
    await Promise.race([new Promise<void>(resolve => (this.onIdle = resolve)), delay(graceMs)])
    await delay(SETTLE_MS)
  }
}

function delay(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms).unref())
}

/**
 * Health probes, answered on every door before authentication (and before the client-certificate
 * check and the redirect), logged at debug only:
 *   GET|HEAD /livez   200 while the process serves requests;
 *   GET|HEAD /readyz  200 when every readiness check passes, else 503 naming the failing ones:
 *                     {"status":"not ready","failed":{"storage":"not writable"}}.
 * Each check answers from memory (health.ts), so a probe costs no I/O. Other methods get 405.
 */
import type { Step } from '../../http/exchange.js'
import { RegistryError } from '../../http/errors.js'
import { sendError, sendJson } from '../../http/respond.js'
import type { ReadinessCheck } from '../../health.js'

export const LIVENESS_PATH = '/livez'
export const READINESS_PATH = '/readyz'

const NO_STORE = { 'Cache-Control': 'no-store' }

export function healthProbes(checks: readonly ReadinessCheck[]): Step {
  return (exchange, next) => {
    const { path } = exchange
    if (path !== LIVENESS_PATH && path !== READINESS_PATH) return next(exchange)
    exchange.isQuiet = true
    const method = exchange.req.method
    if (method !== 'GET' && method !== 'HEAD') {
      sendError(exchange, new RegistryError('UNSUPPORTED', { method }, { message: `${method} is not supported on ${path}`, headers: { Allow: 'GET, HEAD' } }))
      return Promise.resolve()
    }
    if (path === LIVENESS_PATH) {
      sendJson(exchange, 200, { status: 'alive' }, NO_STORE)
      return Promise.resolve()
    }
    let failed: Record<string, string> | undefined
    for (const check of checks) {
      const failure = check.failure()
      if (failure !== undefined) (failed ??= {})[check.name] = failure
    }
    sendJson(exchange, failed === undefined ? 200 : 503, failed === undefined ? { status: 'ready' } : { status: 'not ready', failed }, NO_STORE)
    return Promise.resolve()
  }
}

/**
 * Authentication with the htpasswd users (Basic). A verified user is recorded on the exchange; no
 * or wrong credentials get 401 with the Basic challenge, a throttled address 429. Without a
 * controller (no htpasswd file) every request passes as anonymous.
 */
import type { EventSink } from '../../events/events.js'
import type { Exchange, Step } from '../../http/exchange.js'
import { RegistryError } from '../../http/errors.js'
import { sendError } from '../../http/respond.js'
import type { AuthResult, HtpasswdAccessController } from '../auth/basic-auth.js'

/** Told of each refused login; a challenge without credentials (a client's first request) is not one. */
export interface LoginRefusals {
  loginFailed(): void
  loginThrottled(): void
}

/** Tells the audit trail what a password check decided: new logins, failures and throttling (not cached answers). */
export function auditLogin(events: EventSink | undefined, exchange: Exchange, decision: AuthResult): void {
  if (events === undefined) return
  const actor = { user: decision.kind === 'ok' ? decision.user : undefined, address: exchange.remote, requestId: exchange.id }
  if (decision.kind === 'ok' && decision.verified === true) events.emit({ action: 'login', outcome: 'ok', userName: decision.user }, actor)
  else if (decision.kind === 'challenge' && decision.user !== undefined) events.emit({ action: 'login', outcome: 'failed', userName: decision.user }, actor)
  else if (decision.kind === 'throttled') events.emit({ action: 'login', outcome: 'throttled', userName: decision.user }, actor)
}

export function authenticate(auth: HtpasswdAccessController, realm: string, refusals?: LoginRefusals, events?: EventSink): Step {
  const challenge = `Basic realm="${realm.replace(/["\\]/g, '')}", charset="UTF-8"`
  return async (exchange, next) => {
    const decision = await auth.check(exchange.req.headers.authorization, exchange.req.socket?.remoteAddress ?? exchange.remote)
    auditLogin(events, exchange, decision)
    if (decision.kind === 'challenge') {
      if (decision.user !== undefined) refusals?.loginFailed()
      return sendError(exchange, new RegistryError('UNAUTHORIZED', null, { headers: { 'WWW-Authenticate': challenge } }))
    }
    if (decision.kind === 'throttled') {
      refusals?.loginThrottled()
      const headers = { 'Retry-After': String(decision.retryAfterSeconds) }
      return sendError(exchange, new RegistryError('TOOMANYREQUESTS', null, { message: 'too many failed logins from this address; retry later', headers }))
    }
    if (decision.kind === 'ok') {
      exchange.user = decision.user
      exchange.credential = 'basic'
    }
    return next(exchange)
  }
}

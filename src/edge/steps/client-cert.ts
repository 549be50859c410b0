/**
 * With `--client-ca`: a request over a connection without a valid client certificate gets 400, as
 * nginx's `ssl_verify_client on` answers (the TLS handshake asks for a certificate but lets every
 * client in, so the refusal is a readable answer instead of an opaque TLS alert).
 */
import type { TLSSocket } from 'node:tls'
import type { Step } from '../../http/exchange.js'
import { RegistryError } from '../../http/errors.js'
import { sendError } from '../../http/respond.js'
import type { Logger } from '../../log.js'

export function clientCertificate(logger: Logger): Step {
  return async (exchange, next) => {
    const socket = exchange.req.socket as TLSSocket
    if (socket.authorized) return next(exchange)
    const sent = Object.keys(socket.getPeerCertificate?.() ?? {}).length > 0
    const reason = sent ? String(socket.authorizationError ?? 'not trusted') : 'no client certificate sent'
    logger.warn('client certificate refused', { remote: exchange.remote, reason, id: exchange.id })
    // nginx's wording; the cause goes to the log only.
    const message = sent ? 'The SSL certificate error: the client certificate is not signed by a trusted CA' : 'No required SSL certificate was sent'
    sendError(exchange, new RegistryError('DENIED', null, { status: 400, message }))
  }
}

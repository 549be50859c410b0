/**
 * RFC 9112 §3.2: a request with more than one Host line is a 400. Node keeps the first and drops
 * the rest, so a front proxy that keeps the last would see another host than Berth does.
 */
import { countHeaderLines, type Step } from '../../http/exchange.js'
import { RegistryError } from '../../http/errors.js'
import { sendError } from '../../http/respond.js'

export const hostCheck: Step = async (exchange, next) => {
  if (countHeaderLines(exchange.req.rawHeaders, 'host') <= 1) return next(exchange)
  sendError(exchange, new RegistryError('UNSUPPORTED', null, { status: 400, message: 'more than one Host header' }), { close: true })
}

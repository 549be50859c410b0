/**
 * The outermost step: the answer's X-Request-Id, one access-log line per exchange when its response
 * closes (at debug for a quiet exchange, else info; a client gone before the end is `aborted`, never
 * an error), and the last guard against a bug in an inner step (a rejection becomes a 500 and an
 * error line, never a crash).
 */
import type { Step } from '../../http/exchange.js'
import { RegistryError } from '../../http/errors.js'
import { sendError } from '../../http/respond.js'
import type { Logger } from '../../log.js'

export function accessLog(logger: Logger): Step {
  return async (exchange, next) => {
    const started = process.hrtime.bigint()
    const { req, res, meter } = exchange
    res.setHeader('X-Request-Id', exchange.id)
    res.once('close', () => {
      const write = exchange.isQuiet ? logger.debug : logger.info
      write('request', {
        method: req.method,
        path: exchange.path,
        status: res.statusCode,
        bytes: meter.sent,
        received: meter.received,
        ms: Math.round(Number(process.hrtime.bigint() - started) / 1e6),
        // Only a verified name: a failed attempt's "user" may be a mistyped password.
        user: exchange.user ?? '-',
        auth: exchange.user === undefined ? undefined : exchange.credential,
        remote: exchange.remote,
        door: exchange.door,
        id: exchange.id,
        aborted: res.writableFinished ? undefined : true,
        error: meter.error ?? (res.writableFinished ? undefined : 'client closed the connection'),
      })
    })
    try {
      await next(exchange)
    } catch (error) {
      logger.error('request handler failed', { method: req.method, path: exchange.path.slice(0, 300), error: (error as Error).message, id: exchange.id })
      sendError(exchange, new RegistryError('UNKNOWN', null, { message: 'internal error', cause: error }))
    }
  }
}

/**
 * The last step before the innermost handler: answers `Expect: 100-continue` (only now, after the
 * checks, so a refused upload never sends its body), then waits for the response's turn on its
 * connection. Node runs every pipelined request of a connection at once and queues the responses:
 * a request is handled only when its response gets the socket, else a client pipelining many GETs
 * and reading slowly holds an exchange and its buffers per queued request.
 */
import type { Step } from '../../http/exchange.js'
import { responseTurn } from '../../http/response-turn.js'

export const continueAndTakeTurn: Step = async (exchange, next) => {
  if (exchange.expectsContinue) exchange.res.writeContinue()
  if (!(await responseTurn(exchange.req, exchange.res))) return
  return next(exchange)
}

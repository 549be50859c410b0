/**
 * Waiting for a pipelined response's turn on its connection, shared by the edge and the engine.
 *
 * Node runs every pipelined request of a connection at once and queues their responses; a queued
 * response has no socket until the ones before it are sent. The edge forwards a request, and the
 * engine opens a blob, only once its response has the socket, so a client that pipelines many GETs
 * and reads slowly does not hold an exchange and its buffers per queued request
 * (test/hardening/pipelining, slow-clients).
 *
 * All the waiters of one connection share one 'close' listener on it: a listener each would pass
 * EventEmitter's limit of 10 at the eleventh queued request and put a MaxListenersExceededWarning
 * ("possible memory leak") in the server's log, for a client doing nothing wrong.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'

const waitersByConnection = new WeakMap<Socket, Set<() => void>>()

/**
 * Resolves true once `response` owns its connection (at once unless it is a queued pipelined
 * response), false if the connection closes first (then nothing is left to answer). Never rejects.
 */
export function responseTurn(request: IncomingMessage, response: ServerResponse): Promise<boolean> {
  if (response.socket !== null) return Promise.resolve(true)
  const connection = request.socket
  if (response.destroyed || connection.destroyed) return Promise.resolve(false)
  const waiters = waitersOf(connection)
  return new Promise(resolve => {
    const done = (): void => {
      response.off('socket', done)
      waiters.delete(done)
      resolve(response.socket !== null && !connection.destroyed)
    }
    response.once('socket', done)
    waiters.add(done)
  })
}

/** The waiters of `connection`, created with the one 'close' listener that resolves them all. */
function waitersOf(connection: Socket): Set<() => void> {
  const known = waitersByConnection.get(connection)
  if (known !== undefined) return known
  const waiters = new Set<() => void>()
  waitersByConnection.set(connection, waiters)
  connection.once('close', () => {
    waitersByConnection.delete(connection)
    for (const done of waiters) done()
  })
  return waiters
}

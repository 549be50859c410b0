/**
 * The one place responses are written from parts: JSON bodies, empty answers, and errors (the OCI
 * JSON error body for every error the process makes, edge and engine alike), plus the lingering close
 * after an answer given before the request body was read.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { hasRequestBody, type Exchange } from './exchange.js'
import type { RegistryError } from './errors.js'

/** What a writer needs of an exchange: where to write and where to count. */
export type Reply = Pick<Exchange, 'req' | 'res' | 'meter'>

export function sendJson(reply: Reply, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  const length = Buffer.byteLength(text)
  reply.res.writeHead(status, {
    ...headers,
    'Content-Type': headers['Content-Type'] ?? 'application/json',
    'Content-Length': length,
  })
  countSent(reply, length)
  reply.res.end(text)
}

/** Sends a status with no body; a header given as an array is sent as one line per value. */
export function sendEmpty(response: ServerResponse, status: number, headers: Record<string, string | number | string[]> = {}): void {
  // RFC 9110 §8.6: no Content-Length on a 204.
  response.writeHead(status, status === 204 ? headers : { ...headers, 'Content-Length': 0 })
  response.end()
}

/** Adds a body's bytes to the meter, except for HEAD (Node drops the body). */
export function countSent(reply: Reply, bytes: number): void {
  if (reply.req.method !== 'HEAD') reply.meter.sent += bytes
}

/**
 * Writes `error` as the OCI JSON error body. When the answer has begun (headers sent) or the client
 * is gone, the connection is cut instead: that is the only honest signal left. When the request body
 * was not read, the connection lingers (see `lingerAfterResponse`) so the client can read the error.
 * With `close`, the connection ends after this answer in any case.
 */
export function sendError(reply: Reply, error: RegistryError, options: { close?: boolean } = {}): void {
  const { req, res } = reply
  // Already answered in full: the failure belongs to a body still coming in, and cutting now could
  // lose that answer before the client reads it.
  if (res.writableEnded && !res.destroyed) return
  if (res.headersSent || res.destroyed) {
    res.destroy()
    return
  }
  if (hasUnreadBody(req)) lingerAfterResponse(req, res)
  else if (options.close) res.shouldKeepAlive = false
  sendJson(reply, error.status, error.toBody(), { ...error.headers, 'Content-Type': 'application/json; charset=utf-8' })
}

/** How long an unread request body is drained after an early answer before the socket is destroyed. */
const LINGER_MS = 5000

/**
 * Call before answering a request whose body may not be read (401/413 before or during an upload).
 * If the body is still incomplete once the answer is written, the rest is read and dropped, the
 * connection is ended, and it is destroyed after 5 s at the latest. Destroying it at once with unread bytes makes the kernel
 * send a RST, and the client would lose the answer it has not read yet (nginx's "lingering close").
 * The answer carries no `Connection: close`: Node would then destroy the socket itself as soon as the
 * answer is flushed. Idempotent.
 */
export function lingerAfterResponse(req: IncomingMessage, res: ServerResponse): void {
  if (lingering.has(res)) return
  lingering.add(res)
  const socket = req.socket
  res.once('finish', () => {
    if (!hasUnreadBody(req)) return
    req.unpipe()
    req.removeAllListeners('data')
    req.on('error', () => {})
    req.resume()
    socket.end()
    const timer = setTimeout(() => socket.destroy(), LINGER_MS)
    timer.unref()
    socket.once('close', () => clearTimeout(timer))
  })
}
const lingering = new WeakSet<ServerResponse>()

/** Whether body bytes of `req` may still be unread (`complete` is set only after the handler starts, even without a body). */
function hasUnreadBody(req: IncomingMessage): boolean {
  return !req.complete && hasRequestBody(req)
}

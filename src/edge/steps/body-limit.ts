/**
 * The body limit (the seed's `client_max_body_size 5G`), counted from the first byte: a declared
 * Content-Length over the limit is answered 413 at once; every body is then read through one counting
 * stream (`exchange.body`), which the engine and the proxy both read. The chunk that crosses the limit
 * is never passed on: the stream fails with BodyTooLargeError, which the reader's error path answers
 * as 413 (or, with the answer begun, cuts the connection). Nothing is destroyed with an error here, so
 * nothing a client sends can reach an 'error' event without a listener.
 */
import { Transform, type TransformCallback } from 'node:stream'
import { hasRequestBody, type Meter, type Step } from '../../http/exchange.js'
import { BodyTooLargeError, RegistryError } from '../../http/errors.js'
import { lingerAfterResponse, sendError } from '../../http/respond.js'
import { STREAM_HIGH_WATER_MARK } from '../listeners.js'

/** A pass-through that counts into `meter.received` and fails before passing more than `limit` bytes. */
export class CountingBody extends Transform {
  constructor(
    private readonly limit: number,
    private readonly meter: Meter,
  ) {
    super({ highWaterMark: STREAM_HIGH_WATER_MARK })
    // A reader sees the error through its own listener or the stream's state; a body nobody reads
    // (a route without one, an early answer) must not make an unhandled 'error' end the process.
    this.on('error', () => {})
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.meter.received += chunk.length
    if (this.meter.received > this.limit) {
      const error = new BodyTooLargeError(this.limit)
      this.meter.error ??= error.message
      callback(error)
      return
    }
    callback(null, chunk)
  }
}

export function bodyLimit(maxBodyBytes: number): Step {
  if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes <= 0) throw new RangeError(`maxBodyBytes must be a positive integer, got ${maxBodyBytes}`)
  return (exchange, next) => {
    const { req } = exchange
    const declared = req.headers['content-length']
    if (declared !== undefined && Number(declared) > maxBodyBytes) {
      const error = new BodyTooLargeError(maxBodyBytes)
      sendError(
        exchange,
        new RegistryError(
          'SIZE_INVALID',
          { limit: maxBodyBytes },
          { status: 413, message: `request body of ${declared} bytes is larger than the limit of ${maxBodyBytes} bytes`, cause: error },
        ),
      )
      return Promise.resolve()
    }
    if (hasRequestBody(req)) {
      const counted = new CountingBody(maxBodyBytes, exchange.meter)
      // A client gone mid-body fails the reader as a client abort, as reading `req` itself would.
      req.once('close', () => {
        if (!req.complete) counted.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }))
      })
      req.on('error', () => {}) // reported through `counted` above; never an unhandled 'error'
      req.pipe(counted)
      exchange.body = counted
      // Answered before the body was read to its end: drain the rest, then close (never a stalled connection).
      lingerAfterResponse(req, exchange.res)
    }
    return next(exchange)
  }
}

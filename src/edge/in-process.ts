/**
 * In-process dispatch from the edge to Berth's own engine (a change of DESIGN, issue #7).
 *
 * The design puts the engine behind an internal listener that the edge reaches over loopback HTTP.
 * Measured on the test machine, that hop (a second HTTP serialisation and parse, and every body byte
 * copied through a loopback socket and two more stream buffers) cost a third to a half of blob GET
 * and PUT throughput. So when the edge fronts the built-in engine, `server.ts` hands it the engine's
 * request listener and the edge calls it with the client's own request and response: body bytes go
 * TLS socket → engine → file and file → engine → TLS socket with no further copy.
 *
 * What stays the same, and where it is now done:
 * - the internal listener and its secret still exist (for tools and as the design's boundary);
 *   `--upstream` still uses the streaming proxy (proxy.ts). The engine still checks the secret:
 *   the edge sets it on the request here, after authentication, exactly as the proxy sends it, and
 *   replaces whatever a client sent under that name.
 * - the body limit: Content-Length is checked by the edge before dispatch; a chunked body is counted
 *   here as the HTTP parser delivers it (a wrapper on `push`, so counting never changes how the engine
 *   reads the stream). The chunk that crosses the limit is never delivered; the client gets the
 *   413 (if nothing was answered yet) with a lingering close, and the engine's read fails with
 *   BodyTooLargeError, so it cuts the chunk back as it does when a client aborts.
 * - abort propagation: the engine reads the client's request and writes the client's response, so a
 *   client gone mid-upload fails the engine's read, and one gone mid-download fails its pipeline.
 * - X-Forwarded-Proto/Host/For and X-Real-IP are set on the request the engine sees, as the proxy does.
 * - the edge's response headers (HSTS) are set before the engine writes its head (writeHead merges).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ForwardContext, ForwardResult } from './proxy.js'
import { BodyTooLargeError, INTERNAL_HEADER } from './proxy.js'
import { closeAfterResponse, sendError } from './responses.js'

/** A Node request listener that never throws (the registry app's `handle`). */
export type EngineHandler = (req: IncomingMessage, res: ServerResponse) => void

export interface InProcessEngine {
  handle: EngineHandler
  /** The engine's internal secret, set as `x-berth-internal` on every request handed over. */
  secret?: string
}

function clientAddress(req: IncomingMessage): string {
  const address = req.socket.remoteAddress ?? ''
  return address.startsWith('::ffff:') ? address.slice(7) : address
}

function byteLength(chunk: unknown, encoding?: unknown): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
  if (chunk instanceof Uint8Array) return chunk.byteLength
  return 0
}

/**
 * Hands one authenticated request to the engine in this process. Resolves when the response is
 * closed (finished or the client gone); never rejects.
 */
export function dispatchInProcess(engine: InProcessEngine, context: ForwardContext): Promise<ForwardResult> {
  const { req, res, proto, maxBodyBytes } = context
  const result = context.result
  return new Promise(resolve => {
    const headers = req.headers
    const address = clientAddress(req)
    const forwardedFor = headers['x-forwarded-for']
    headers['x-forwarded-for'] = forwardedFor ? `${Array.isArray(forwardedFor) ? forwardedFor.join(', ') : forwardedFor}, ${address}` : address
    headers['x-real-ip'] = address
    headers['x-forwarded-proto'] = proto
    if (headers.host) headers['x-forwarded-host'] = headers.host
    if (engine.secret !== undefined) headers[INTERNAL_HEADER] = engine.secret
    else delete headers[INTERNAL_HEADER]
    for (const [name, value] of Object.entries(context.responseHeaders)) res.setHeader(name, value)

    // Bytes received: counted where the HTTP parser hands body bytes to the request stream.
    let tooLarge: BodyTooLargeError | undefined
    const push = req.push
    req.push = function countedPush(this: IncomingMessage, chunk: unknown, encoding?: BufferEncoding): boolean {
      // The rest of a refused body, its end included: read off the socket and dropped.
      if (tooLarge !== undefined) return false
      if (chunk === null || chunk === undefined) return push.call(this, chunk, encoding)
      result.received += byteLength(chunk, encoding)
      if (result.received > maxBodyBytes) {
        tooLarge = new BodyTooLargeError(maxBodyBytes)
        result.error ??= tooLarge.message
        if (!res.headersSent) {
          closeAfterResponse(req, res)
          sendError(res, 413, 'SIZE_INVALID', `request body larger than the limit of ${maxBodyBytes} bytes`, context.responseHeaders)
          // The engine's read must fail (so it cuts the chunk back) but the socket must stay open
          // for the lingering close that lets the client read the 413: IncomingMessage's own
          // _destroy would destroy the socket, so this request's stream is failed on its own.
          req._destroy = (error: Error | null, callback: (error?: Error | null) => void) => callback(error)
          req.destroy(tooLarge)
        } else {
          res.destroy()
        }
        return false
      }
      return push.call(this, chunk, encoding)
    } as typeof req.push

    // Bytes sent: counted at the response's write and end (the access log's `bytes`).
    const write = res.write
    const end = res.end
    res.write = function countedWrite(this: ServerResponse, chunk: unknown, ...rest: unknown[]): boolean {
      result.sent += byteLength(chunk, rest[0])
      return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest)
    } as typeof res.write
    res.end = function countedEnd(this: ServerResponse, chunk?: unknown, ...rest: unknown[]): ServerResponse {
      if (typeof chunk !== 'function') result.sent += byteLength(chunk, rest[0])
      return (end as (...args: unknown[]) => ServerResponse).call(this, chunk, ...rest)
    } as typeof res.end

    res.once('close', () => {
      if (!res.writableFinished && result.error === undefined) result.error = 'client closed the connection'
      resolve(result)
    })
    engine.handle(req, res)
  })
}

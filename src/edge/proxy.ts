/**
 * The streaming proxy to the upstream (the engine on its internal port, or any registry).
 *
 * A small node:http proxy instead of http-proxy-3: the body limit must count bytes on the same stream
 * that feeds the upstream and answer 413 mid-body, and abort handling needs the same hooks; with a
 * library both would sit on top of its own piping. Behaviour (edge-anchors §4):
 * - no buffering: the request is piped to the upstream and the response to the client, with
 *   backpressure (pipe/pipeline pause the source when the destination is full);
 * - a client gone mid-upload or mid-download destroys the upstream request (and its socket);
 *   an upstream gone mid-response destroys the client connection (it sees a truncated body);
 * - a refused/failed upstream before the response → 502 OCI JSON; no error escapes to the process;
 * - keep-alive agent to the upstream; idle timeouts on the upstream socket, no total timeout;
 * - hop-by-hop headers stripped, `Host` kept (distribution builds upload URLs from it),
 *   X-Forwarded-Proto/Host/For and X-Real-IP set, `Expect` stripped (the edge answers 100-continue).
 */
import http from 'node:http'
import https from 'node:https'
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { pipeline } from 'node:stream'
import type { Logger } from '../log.js'
import { silentLogger } from '../log.js'
import { API_VERSION, API_VERSION_HEADER, closeAfterResponse, sendError } from './responses.js'

/** Header the engine requires on every request (must match src/registry's INTERNAL_SECRET_HEADER). */
export const INTERNAL_HEADER = 'x-berth-internal'

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'forwarded',
  INTERNAL_HEADER,
])

export interface UpstreamTarget {
  /** `http://127.0.0.1:5001`, `https://registry.internal`, or `unix:/run/berth/engine.sock`. A path prefix is kept. */
  url: string
  /** Sent as `x-berth-internal` on every request; never logged. */
  secret?: string
}

/** How a kept-alive socket the upstream closed under a reused request fails. */
const STALE_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE'])

/**
 * Stream buffer limit of every client connection (socket, request, response) and of the proxy's
 * upstream requests: how much a connection may queue before its peer is paused. It was 1 MiB, which
 * let each of many concurrent uploads queue a megabyte in its request while its chunk was written,
 * and each slow reader a megabyte in its socket: measured, 100 downloads that do not read held
 * 1.2 MiB each with it and 0.56 MiB (two 256 KiB read chunks) with 64 KiB. A 1 GiB PUT over TLS
 * also took less CPU with it and a 256 KiB write buffer (3.3 s against 5.0 s, medians of 6 on a
 * busy machine: the bytes are hashed and written while still in cache); GET did not change.
 */
export const STREAM_HIGH_WATER_MARK = 64 * 1024

export class BodyTooLargeError extends Error {
  override readonly name = 'BodyTooLargeError'
  constructor(readonly limit: number) {
    super(`request body larger than ${limit} bytes`)
  }
}

export interface ForwardContext {
  req: IncomingMessage
  res: ServerResponse
  /** 'https' behind TLS, 'http' in local mode; sent as X-Forwarded-Proto. */
  proto: 'http' | 'https'
  /** Per-request body limit in bytes (counted while streaming). */
  maxBodyBytes: number
  /** Extra headers for the client response (HSTS). */
  responseHeaders: Record<string, string>
  /** Filled in while the exchange runs (the access log reads it when the response closes). */
  result: ForwardResult
}

export interface ForwardResult {
  /** Request body bytes read from the client. */
  received: number
  /** Response body bytes received from the upstream and written to the client. */
  sent: number
  /** Why the exchange did not complete normally, for the access log. */
  error?: string
}

export interface UpstreamProxyOptions {
  logger?: Logger
  /** Upstream socket inactivity limit, default 15 min (the seed recipe's proxy_read_timeout 900). */
  idleTimeoutMs?: number
}

function clientAddress(req: IncomingMessage): string {
  const address = req.socket.remoteAddress ?? ''
  return address.startsWith('::ffff:') ? address.slice(7) : address
}

export class UpstreamProxy {
  private readonly agent: http.Agent
  private readonly transport: typeof http | typeof https
  private readonly base: { host?: string; port?: number; socketPath?: string; prefix: string }
  private readonly logger: Logger
  private readonly idleTimeoutMs: number

  constructor(
    private readonly target: UpstreamTarget,
    options: UpstreamProxyOptions = {},
  ) {
    this.logger = options.logger ?? silentLogger
    this.idleTimeoutMs = options.idleTimeoutMs ?? 15 * 60_000
    // No cap on upstream sockets: each client request in flight holds one, and a cap (it was 256)
    // let that many slow uploads or slow readers queue every other client behind them. The real
    // bounds are the file descriptor limit and the per-connection idle timeouts.
    const agentOptions = { keepAlive: true, keepAliveMsecs: 1000, maxSockets: Infinity, maxFreeSockets: 32, scheduling: 'lifo' as const }
    if (target.url.startsWith('unix:')) {
      this.transport = http
      this.base = { socketPath: target.url.slice('unix:'.length).replace(/^\/\//, ''), prefix: '' }
    } else {
      let url: URL
      try {
        url = new URL(target.url)
      } catch {
        throw new TypeError(`invalid upstream URL ${JSON.stringify(target.url)}`)
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`upstream URL must be http:, https: or unix:, got ${url.protocol}`)
      this.transport = url.protocol === 'https:' ? https : http
      this.base = {
        host: url.hostname.replace(/^\[|\]$/g, ''),
        port: Number(url.port) || (url.protocol === 'https:' ? 443 : 80),
        prefix: url.pathname.replace(/\/+$/, ''),
      }
    }
    this.agent = this.transport === https ? new https.Agent(agentOptions) : new http.Agent(agentOptions)
  }

  /**
   * Forwards one request and streams the answer back. Resolves when the exchange is over (response
   * finished or either side gone); never rejects. Errors before the response become 413/502 JSON.
   */
  forward(context: ForwardContext): Promise<ForwardResult> {
    const { req, res, proto, maxBodyBytes } = context
    const result = context.result
    return new Promise(resolve => {
      let settled = false
      const done = (error?: string): void => {
        if (error && !result.error) result.error = error
        if (settled) return
        settled = true
        resolve(result)
      }

      const headers: OutgoingHttpHeaders = {}
      for (const [name, value] of Object.entries(req.headers)) {
        if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value
      }
      const address = clientAddress(req)
      const forwardedFor = req.headers['x-forwarded-for']
      headers['x-forwarded-for'] = forwardedFor ? `${Array.isArray(forwardedFor) ? forwardedFor.join(', ') : forwardedFor}, ${address}` : address
      headers['x-real-ip'] = address
      headers['x-forwarded-proto'] = proto
      if (req.headers.host) headers['x-forwarded-host'] = req.headers.host
      if (this.target.secret) headers[INTERNAL_HEADER] = this.target.secret
      const chunked = /\bchunked\b/i.test(req.headers['transfer-encoding'] ?? '')
      if (chunked) headers['transfer-encoding'] = 'chunked'

      // A request without a body is sent again, once, when it failed on a kept-alive connection the
      // upstream closed as it was being reused (its keep-alive timeout racing our request): the
      // upstream never saw it, and nginx retries the same way (proxy_next_upstream error).
      const bodyless = !chunked && (req.headers['content-length'] === undefined || req.headers['content-length'] === '0')
      const open = (): http.ClientRequest => {
        const request = this.transport.request({
          agent: this.agent,
          host: this.base.host,
          port: this.base.port,
          socketPath: this.base.socketPath,
          method: req.method,
          path: this.base.prefix + (req.url ?? '/'),
          headers,
          setHost: false,
          // Larger socket buffers: fewer, bigger reads and TLS records on multi-GB blobs.
          highWaterMark: STREAM_HIGH_WATER_MARK,
        } as http.RequestOptions)
        request.setTimeout(this.idleTimeoutMs, () => request.destroy(new Error('upstream idle timeout')))
        return request
      }
      let upstream = open()

      // The client went away (mid-upload or mid-download): stop the upstream exchange too.
      res.once('close', () => {
        if (!res.writableFinished) {
          upstream.destroy()
          done('client closed the connection')
        }
      })

      let failed = false
      let responded = false
      let retried = false
      const fail = (error: Error): void => {
        if (failed) return
        if (!responded && !retried && bodyless && upstream.reusedSocket && !res.destroyed && STALE_SOCKET_CODES.has((error as NodeJS.ErrnoException).code ?? '')) {
          retried = true
          req.unpipe(upstream)
          this.logger.debug('upstream closed a kept-alive connection as it was reused; sending again', { method: req.method, code: (error as NodeJS.ErrnoException).code })
          upstream = open()
          attach(upstream)
          upstream.end()
          return
        }
        failed = true
        req.unpipe(upstream)
        if (responded && !(error instanceof BodyTooLargeError)) {
          // The upstream already answered (often early, e.g. 401/404 while a body was still coming):
          // a failure writing the rest of the body must not cut that answer, so the response stream
          // is left alone; its pipeline ends the client side if the response itself breaks.
          done(`upstream: ${error.message}`)
          return
        }
        upstream.destroy()
        if (error instanceof BodyTooLargeError) {
          if (!res.headersSent) {
            closeAfterResponse(req, res)
            sendError(res, 413, 'SIZE_INVALID', `request body larger than the limit of ${maxBodyBytes} bytes`, context.responseHeaders)
          } else res.destroy()
          done(error.message)
          return
        }
        if (res.headersSent || res.destroyed) {
          res.destroy()
          done(`upstream: ${error.message}`)
          return
        }
        this.logger.warn('upstream request failed', { method: req.method, error: error.message, code: (error as NodeJS.ErrnoException).code })
        if (!req.complete) closeAfterResponse(req, res)
        sendError(res, 502, 'UNAVAILABLE', 'the registry behind this proxy is not reachable', context.responseHeaders)
        done(`upstream: ${error.message}`)
      }

      const attach = (request: http.ClientRequest): void => {
        // Errors of a request given up for a retry are not this exchange's any more.
        request.on('error', error => {
          if (request === upstream) fail(error)
        })
        request.on('response', response => {
          responded = true
          const out: OutgoingHttpHeaders = {}
          for (const [name, value] of Object.entries(response.headers)) {
            if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value
          }
          if (out[API_VERSION_HEADER] === undefined && response.statusCode === 401) out[API_VERSION_HEADER] = API_VERSION
          Object.assign(out, context.responseHeaders)
          // An answer before the whole body arrived (an error from the upstream): this connection
          // cannot be reused with an unread body on it.
          if (!req.complete) closeAfterResponse(req, res)
          res.writeHead(response.statusCode ?? 502, response.statusMessage, out)
          response.on('data', (chunk: Buffer) => (result.sent += chunk.length))
          pipeline(response, res, error => {
            if (error) {
              upstream.destroy()
              res.destroy()
              done(res.writableFinished ? undefined : `response: ${error.message}`)
              return
            }
            // Answered before the whole body came (e.g. 202 to a POST whose body still trickles): the
            // upstream connection still waits for the rest of a body that will never be sent, so it
            // can never be reused. Without this it held one of the agent's sockets until the idle
            // timeout (15 min), and a slow-body client could take them all (test/hardening/slow-clients).
            if (!req.complete) upstream.destroy()
            done()
          })
        })
      }
      attach(upstream)

      // Count before piping so the chunk that crosses the limit is never forwarded.
      req.on('data', (chunk: Buffer) => {
        result.received += chunk.length
        if (result.received > maxBodyBytes && !failed) fail(new BodyTooLargeError(maxBodyBytes))
      })
      req.on('error', () => upstream.destroy())
      req.pipe(upstream)
    })
  }

  /** Closes the idle upstream connections. */
  close(): void {
    this.agent.destroy()
  }
}

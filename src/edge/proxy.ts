/**
 * The streaming proxy: the innermost handler with `--upstream` (another registry behind Berth's edge).
 *
 * Behaviour (edge-anchors §4):
 * - no buffering: the counted request body (`exchange.body`) is piped to the upstream and the response
 *   to the client, with backpressure;
 * - a client gone mid-upload or mid-download destroys the upstream request (and its socket);
 *   an upstream gone mid-response destroys the client connection (it sees a truncated body);
 * - a refused or failed upstream before the response → 502 OCI JSON; no error escapes to the process;
 * - keep-alive agent to the upstream; idle timeouts on the upstream socket, no total timeout;
 * - hop-by-hop headers stripped, `Host` kept (distribution builds upload URLs from it),
 *   X-Forwarded-Proto/Host/For and X-Real-IP set, `Expect` stripped (the edge answers 100-continue).
 */
import http from 'node:http'
import https from 'node:https'
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http'
import { pipeline } from 'node:stream'
import { API_VERSION, API_VERSION_HEADER, type Exchange } from '../http/exchange.js'
import { BodyTooLargeError, RegistryError, toHttpError } from '../http/errors.js'
import { lingerAfterResponse, sendError } from '../http/respond.js'
import type { Logger } from '../log.js'
import { STREAM_HIGH_WATER_MARK } from './listeners.js'

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
])

/** How a kept-alive socket the upstream closed under a reused request fails. */
const STALE_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE'])

export interface UpstreamProxyOptions {
  /** `http://127.0.0.1:5001`, `https://registry.internal`, or `unix:/run/berth/engine.sock`. A path prefix is kept. */
  url: string
  logger: Logger
  /** Upstream socket inactivity limit (the seed recipe's proxy_read_timeout). */
  idleTimeoutMs: number
}

interface Target {
  transport: typeof http | typeof https
  host?: string
  port?: number
  socketPath?: string
  prefix: string
}

function parseTarget(url: string): Target {
  if (url.startsWith('unix:')) return { transport: http, socketPath: url.slice('unix:'.length).replace(/^\/\//, ''), prefix: '' }
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new TypeError(`invalid upstream URL ${JSON.stringify(url)}`)
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new TypeError(`upstream URL must be http:, https: or unix:, got ${parsed.protocol}`)
  const secure = parsed.protocol === 'https:'
  return {
    transport: secure ? https : http,
    host: parsed.hostname.replace(/^\[|\]$/g, ''),
    port: Number(parsed.port) || (secure ? 443 : 80),
    prefix: parsed.pathname.replace(/\/+$/, ''),
  }
}

/** The request headers for the upstream: hop-by-hop ones dropped, the X-Forwarded-* family set. */
function upstreamHeaders(exchange: Exchange): OutgoingHttpHeaders {
  const { req } = exchange
  const headers: OutgoingHttpHeaders = {}
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value
  }
  const forwardedFor = req.headers['x-forwarded-for']
  headers['x-forwarded-for'] = forwardedFor ? `${Array.isArray(forwardedFor) ? forwardedFor.join(', ') : forwardedFor}, ${exchange.remote}` : exchange.remote
  headers['x-real-ip'] = exchange.remote
  headers['x-forwarded-proto'] = exchange.door === 'https' ? 'https' : 'http'
  if (req.headers.host) headers['x-forwarded-host'] = req.headers.host
  if (isChunked(req)) headers['transfer-encoding'] = 'chunked'
  return headers
}

function isChunked(req: IncomingMessage): boolean {
  return /\bchunked\b/i.test(req.headers['transfer-encoding'] ?? '')
}

export class UpstreamProxy {
  private readonly agent: http.Agent
  private readonly target: Target

  constructor(private readonly options: UpstreamProxyOptions) {
    this.target = parseTarget(options.url)
    // No cap on upstream sockets: each client request in flight holds one, and a cap would let that
    // many slow uploads or slow readers queue every other client behind them. The real bounds are the
    // file descriptor limit and the per-connection idle timeouts.
    const agentOptions = { keepAlive: true, keepAliveMsecs: 1000, maxSockets: Infinity, maxFreeSockets: 32, scheduling: 'lifo' as const }
    this.agent = this.target.transport === https ? new https.Agent(agentOptions) : new http.Agent(agentOptions)
  }

  /**
   * Forwards one exchange and streams the answer back. Resolves when the exchange is over (response
   * finished or either side gone); never rejects. Errors before the response become 413/502 JSON.
   */
  readonly handle = (exchange: Exchange): Promise<void> => new Promise(resolve => new Forwarding(this, exchange, resolve).start())

  /** Opens one upstream request for `exchange`. */
  open(exchange: Exchange, headers: OutgoingHttpHeaders): http.ClientRequest {
    const { transport, host, port, socketPath, prefix } = this.target
    const request = transport.request({
      agent: this.agent,
      host,
      port,
      socketPath,
      method: exchange.req.method,
      path: prefix + (exchange.req.url ?? '/'),
      headers,
      setHost: false,
      highWaterMark: STREAM_HIGH_WATER_MARK,
    } as http.RequestOptions)
    request.setTimeout(this.options.idleTimeoutMs, () => request.destroy(new Error('upstream idle timeout')))
    return request
  }

  get logger(): Logger {
    return this.options.logger
  }

  /** Closes the idle upstream connections. */
  /**
   * One readiness attempt: `GET <prefix>/v2/` on the upstream. Resolves when it answers with a
   * status below 500 (401 included: it serves, and checks logins itself); rejects otherwise.
   */
  probe(timeoutMs: number): Promise<void> {
    const { transport, host, port, socketPath, prefix } = this.target
    return new Promise((resolve, reject) => {
      const request = transport.request(
        { agent: this.agent, host, port, socketPath, method: 'GET', path: `${prefix}/v2/` } as http.RequestOptions,
        response => {
          response.resume()
          const status = response.statusCode ?? 0
          if (status < 500) resolve()
          else reject(new Error(`upstream answered ${status}`))
        },
      )
      request.setTimeout(timeoutMs, () => request.destroy(new Error(`upstream gave no answer within ${timeoutMs} ms`)))
      request.once('error', reject)
      request.end()
    })
  }

  close(): void {
    this.agent.destroy()
  }
}

/** One exchange through the proxy: its upstream request, the one retry, and how it ends. */
class Forwarding {
  private upstream!: http.ClientRequest
  private readonly headers: OutgoingHttpHeaders
  /** A request without a body may be sent again once (see `fail`). */
  private readonly bodyless: boolean
  private settled = false
  private failed = false
  private responded = false
  private retried = false

  constructor(
    private readonly proxy: UpstreamProxy,
    private readonly exchange: Exchange,
    private readonly resolve: () => void,
  ) {
    this.headers = upstreamHeaders(exchange)
    const { req } = exchange
    this.bodyless = !isChunked(req) && (req.headers['content-length'] === undefined || req.headers['content-length'] === '0')
  }

  start(): void {
    const { res, body } = this.exchange
    this.upstream = this.attach(this.proxy.open(this.exchange, this.headers))
    // The client went away (mid-upload or mid-download): stop the upstream exchange too.
    res.once('close', () => {
      if (res.writableFinished) return
      this.upstream.destroy()
      this.done('client closed the connection')
    })
    body.on('error', error => this.fail(error))
    if (this.bodyless) this.upstream.end()
    else body.pipe(this.upstream)
  }

  private done(error?: string): void {
    if (error && !this.exchange.meter.error) this.exchange.meter.error = error
    if (this.settled) return
    this.settled = true
    this.resolve()
  }

  private attach(request: http.ClientRequest): http.ClientRequest {
    // Errors of a request given up for a retry are not this exchange's any more.
    request.on('error', error => {
      if (request === this.upstream) this.fail(error)
    })
    request.on('response', response => this.relay(response))
    return request
  }

  private fail(error: Error): void {
    if (this.failed) return
    const { req, res, body } = this.exchange
    const code = (error as NodeJS.ErrnoException).code ?? ''
    // A bodyless request that failed on a kept-alive connection the upstream closed as it was being
    // reused: the upstream never saw it; sent again once, as nginx does (proxy_next_upstream error).
    if (!this.responded && !this.retried && this.bodyless && this.upstream.reusedSocket && !res.destroyed && STALE_SOCKET_CODES.has(code)) {
      this.retried = true
      this.proxy.logger.debug('upstream closed a kept-alive connection as it was reused; sending again', { method: req.method, code, id: this.exchange.id })
      this.upstream = this.attach(this.proxy.open(this.exchange, this.headers))
      this.upstream.end()
      return
    }
    this.failed = true
    body.unpipe(this.upstream)
    const tooLarge = error instanceof BodyTooLargeError
    if (this.responded && !tooLarge) {
      // The upstream already answered (often early, e.g. 401/404 while a body was still coming): a
      // failure writing the rest of the body must not cut that answer; the response's pipeline ends
      // the client side if the response itself breaks.
      return this.done(`upstream: ${error.message}`)
    }
    this.upstream.destroy()
    if (tooLarge) {
      sendError(this.exchange, toHttpError(error)!)
      return this.done(error.message)
    }
    if (res.headersSent || res.destroyed) {
      res.destroy()
      return this.done(`upstream: ${error.message}`)
    }
    this.proxy.logger.warn('upstream request failed', { method: req.method, error: error.message, code, id: this.exchange.id })
    sendError(this.exchange, new RegistryError('UNAVAILABLE', null, { status: 502, message: 'the registry behind this proxy is not reachable' }))
    this.done(`upstream: ${error.message}`)
  }

  private relay(response: IncomingMessage): void {
    const { req, res, meter } = this.exchange
    this.responded = true
    const out: OutgoingHttpHeaders = {}
    for (const [name, value] of Object.entries(response.headers)) {
      if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value
    }
    if (out[API_VERSION_HEADER.toLowerCase()] === undefined && response.statusCode === 401) out[API_VERSION_HEADER] = API_VERSION
    // An answer before the whole body arrived (an error from the upstream): the rest is drained.
    if (!req.complete) lingerAfterResponse(req, res)
    res.writeHead(response.statusCode ?? 502, response.statusMessage, out)
    if (req.method !== 'HEAD') response.on('data', (chunk: Buffer) => (meter.sent += chunk.length))
    pipeline(response, res, error => {
      if (error) {
        this.upstream.destroy()
        res.destroy()
        return this.done(res.writableFinished ? undefined : `response: ${error.message}`)
      }
      // Answered before the whole body came (e.g. 202 to a POST whose body still trickles): the
      // upstream connection waits for a body that will never be sent and can never be reused.
      if (!req.complete) this.upstream.destroy()
      this.done()
    })
  }
}

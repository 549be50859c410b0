/**
 * The edge: Berth's front door. Listeners (HTTPS + HTTP redirect, or plain HTTP in local mode),
 * then per request, in this order: access log → client certificate (with --client-ca) → body limit
 * on Content-Length → basic auth → streaming proxy (which also counts chunked bodies against the
 * limit) to the upstream (the engine on its internal loopback port, or any registry with `--upstream`).
 */
import { readFile } from 'node:fs/promises'
import http from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Logger } from '../log.js'
import { silentLogger } from '../log.js'
import { responseTurn } from '../response-turn.js'
import { HtpasswdAccessController } from './auth/basic-auth.js'
import type { LoginThrottleOptions } from './auth/throttle.js'
import { STREAM_HIGH_WATER_MARK, UpstreamProxy } from './proxy.js'
import type { ForwardResult } from './proxy.js'
import { dispatchInProcess, type InProcessEngine } from './in-process.js'
import { createRedirectHandler } from './redirect.js'
import { closeAfterResponse, countHeaderLines, sendError } from './responses.js'
import type { CertificateProvider, ChallengeResponder, TlsCertificate } from './tls/certificate-source.js'
import { ALPN_PROTOCOLS, ECDH_CURVES, HSTS_VALUE, MIN_TLS_VERSION, TLS12_CIPHERS, TLS13_CIPHERS } from './tls/tls-options.js'

/** 5 GiB, the seed's `client_max_body_size 5G`. */
export const DEFAULT_MAX_BODY_BYTES = 5 * 1024 ** 3
export const DEFAULT_REALM = 'Berth Registry'

export interface EdgeOptions {
  /** Bind address; default all interfaces ('::', dual-stack; '0.0.0.0' where IPv6 is off). */
  host?: string
  /** 'local': plain HTTP on localPort. 'https': TLS on httpsPort plus redirect/ACME on httpPort. */
  mode: 'local' | 'https'
  /** Local mode port, default 5000 (0 = random, for tests). */
  localPort?: number
  /** HTTPS mode ports, default 80 and 443 (0 = random). */
  httpPort?: number
  httpsPort?: number
  /**
   * The HTTPS port clients use, for redirect Locations, when it differs from httpsPort (a container
   * mapping 443→8443). Default: the bound HTTPS port.
   */
  publicHttpsPort?: number
  /** Configured names: port 80 redirects only to these (no open redirect). */
  domains: string[]
  /**
   * Required in https mode. startEdge calls its `start()` once port 80 listens (so ACME HTTP-01 can be
   * answered) and its `stop()` on close. If it has no certificate yet, handshakes fail until `onChange`.
   */
  certificate?: CertificateProvider
  /** ACME HTTP-01 answers served on port 80. */
  challenges?: ChallengeResponder
  /** When set and the file exists → basic auth; the file is watched (created later → auth switches on). */
  htpasswdPath?: string
  /** Basic auth realm, default 'Berth Registry'. */
  realm?: string
  /** Per-request body limit, default 5 GiB. */
  maxBodyBytes?: number
  /** PEM bundle of CAs client certificates must chain to (nginx `ssl_verify_client on`); https mode only. */
  clientCaPath?: string
  /** Where requests go. `secret` is sent as the `x-berth-internal` header. */
  upstream: { url: string; secret?: string }
  /**
   * The built-in engine's request listener, when the upstream is Berth's own engine in this process:
   * requests are then handed to it directly instead of over the loopback hop (in-process.ts says why
   * and what stays the same). `upstream` still names the engine's internal listener.
   */
  engine?: InProcessEngine
  /** Socket inactivity limit on both sides, default 15 min (no total request timeout: uploads take long). */
  idleTimeoutMs?: number
  /** Time a client has to send its complete request headers (slowloris), default 60 s like nginx. */
  headersTimeoutMs?: number
  /** Failed-login throttle per address (default: a burst of 10, then one attempt per 6 s). */
  loginThrottle?: LoginThrottleOptions
  logger?: Logger
}

export interface Edge {
  /** Actual bound addresses (port 0 resolved), e.g. `https://127.0.0.1:8443`; a wildcard bind shows as localhost. */
  readonly urls: { local?: string; http?: string; https?: string }
  /** Stops listening, ends connections, stops watchers and the certificate provider. Idempotent. */
  close(): Promise<void>
}

type Server = http.Server | https.Server

function listen(server: Server, port: number, host: string | undefined): Promise<void> {
  const attempt = (address: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const onError = (error: Error): void => reject(error)
      server.once('error', onError)
      server.listen(port, address, () => {
        server.off('error', onError)
        resolve()
      })
    })
  if (host !== undefined) return attempt(host)
  return attempt('::').catch(async (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EAFNOSUPPORT' && error.code !== 'EADDRNOTAVAIL') throw error
    await attempt('0.0.0.0')
  })
}

function urlOf(scheme: string, server: Server): string {
  const address = server.address() as AddressInfo
  const host = address.address === '::' || address.address === '0.0.0.0' ? 'localhost' : address.family === 'IPv6' ? `[${address.address}]` : address.address
  return `${scheme}://${host}:${address.port}`
}

/** Options shared by every Node HTTP server of the edge (edge-anchors §0.1, §10). */
function serverOptions(headersTimeoutMs: number): http.ServerOptions {
  return {
    requestTimeout: 0, // Node 20 default 300 s would cut a long layer upload (408)
    headersTimeout: headersTimeoutMs,
    // How often Node checks the headers timeout (default 30 s, which would let a slow client hold
    // its socket up to 90 s).
    connectionsCheckingInterval: Math.min(5_000, Math.max(100, Math.floor(headersTimeoutMs / 4))),
    keepAliveTimeout: 65_000,
    noDelay: true,
    highWaterMark: STREAM_HIGH_WATER_MARK,
  }
}

export async function startEdge(options: EdgeOptions): Promise<Edge> {
  const logger = options.logger ?? silentLogger
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  const realm = (options.realm ?? DEFAULT_REALM).replace(/["\\]/g, '')
  const idleTimeoutMs = options.idleTimeoutMs ?? 15 * 60_000
  const headersTimeoutMs = options.headersTimeoutMs ?? 60_000
  const secure = options.mode === 'https'
  if (secure && !options.certificate) throw new TypeError('startEdge: https mode needs a certificate provider')
  if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes <= 0) throw new RangeError(`maxBodyBytes must be a positive integer, got ${maxBodyBytes}`)

  const cleanups: (() => Promise<void> | void)[] = []
  const cleanup = async (): Promise<void> => {
    for (const step of cleanups.splice(0).reverse()) {
      try {
        await step()
      } catch (error) {
        logger.warn('edge shutdown step failed', { error: (error as Error).message })
      }
    }
  }

  try {
    const auth = options.htpasswdPath ? await HtpasswdAccessController.open(options.htpasswdPath, { logger, ...(options.loginThrottle ? { throttle: options.loginThrottle } : {}) }) : undefined
    if (auth) cleanups.push(() => auth.close())
    else if (secure) logger.warn('no htpasswd file configured: the registry accepts requests without credentials')
    const proxy = new UpstreamProxy(options.upstream, { logger, idleTimeoutMs })
    cleanups.push(() => proxy.close())
    const clientCa = secure && options.clientCaPath ? await readFile(options.clientCaPath, 'utf8') : undefined
    const responseHeaders: Record<string, string> = secure ? { 'strict-transport-security': HSTS_VALUE } : {}
    const challenge = { 'www-authenticate': `Basic realm="${realm}", charset="UTF-8"`, ...responseHeaders }

    const handle = async (req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<void> => {
      const started = process.hrtime.bigint()
      let user: string | undefined
      const outcome: ForwardResult = { received: 0, sent: 0 }
      // Read now: by the time the response closes, Node may have detached the socket (req.socket null).
      const remote = req.socket?.remoteAddress
      res.once('close', () => {
        const path = (req.url ?? '').split('?')[0]
        logger.info('request', {
          method: req.method,
          path,
          status: res.statusCode,
          bytes: outcome.sent ?? 0,
          received: outcome.received ?? 0,
          ms: Math.round(Number(process.hrtime.bigint() - started) / 1e6),
          user: user ?? '-',
          remote,
          aborted: res.writableFinished ? undefined : true,
          error: outcome.error,
        })
      })
      const hasBody = req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0'
      const reject = (status: number, code: Parameters<typeof sendError>[2], message: string, headers: Record<string, string>): void => {
        if (hasBody && !expectsContinue) closeAfterResponse(req, res)
        else if (hasBody) res.shouldKeepAlive = false
        sendError(res, status, code, message, headers)
      }

      if (clientCa !== undefined) {
        const socket = req.socket as TLSSocket
        if (!socket.authorized) {
          // nginx's wording for ssl_verify_client failures; the cause goes to the log only.
          const sent = Object.keys(socket.getPeerCertificate?.() ?? {}).length > 0
          logger.warn('client certificate refused', { remote: req.socket.remoteAddress, reason: String(socket.authorizationError ?? 'none sent') })
          return reject(400, 'DENIED', sent ? 'The SSL certificate error: the client certificate is not signed by a trusted CA' : 'No required SSL certificate was sent', responseHeaders)
        }
      }
      // RFC 9112 §3.2: more than one Host line is a 400 (Node silently keeps the first one).
      if (countHeaderLines(req.rawHeaders, 'host') > 1) {
        res.shouldKeepAlive = false
        return reject(400, 'UNSUPPORTED', 'more than one Host header', responseHeaders)
      }
      const declared = req.headers['content-length']
      if (declared !== undefined && Number(declared) > maxBodyBytes) {
        return reject(413, 'SIZE_INVALID', `request body of ${declared} bytes is larger than the limit of ${maxBodyBytes} bytes`, responseHeaders)
      }
      if (auth) {
        const decision = await auth.check(req.headers.authorization, req.socket.remoteAddress ?? '')
        // Only a verified name is logged: a failed attempt's "user" may be a mistyped password.
        if (decision.kind === 'challenge') return reject(401, 'UNAUTHORIZED', 'authentication required', challenge)
        if (decision.kind === 'throttled') {
          return reject(429, 'TOOMANYREQUESTS', 'too many failed logins from this address; retry later', { 'retry-after': String(decision.retryAfterSeconds), ...responseHeaders })
        }
        if (decision.kind === 'ok') user = decision.user
      }
      if (expectsContinue) res.writeContinue()
      // Node runs every pipelined request of a connection at once and queues the responses: forward
      // one only when its response gets the socket, else a client pipelining many GETs and reading
      // slowly holds an upstream exchange and its buffers per queued request (slowhttptest slow read).
      if (!(await responseTurn(req, res))) return
      const context = { req, res, proto: secure ? ('https' as const) : ('http' as const), maxBodyBytes, responseHeaders, result: outcome }
      if (options.engine !== undefined) await dispatchInProcess(options.engine, context)
      else await proxy.forward(context)
    }
    const listener = (expectsContinue: boolean) => (req: IncomingMessage, res: ServerResponse) => {
      handle(req, res, expectsContinue).catch((error: unknown) => {
        logger.error('edge handler failed', { error: (error as Error).message })
        sendError(res, 500, 'UNKNOWN', 'internal error in the proxy')
      })
    }

    const servers: Server[] = []
    const track = (server: Server): Server => {
      server.setTimeout(idleTimeoutMs) // idle sockets are destroyed (no 'timeout' listener → Node destroys)
      server.on('checkContinue', listener(true))
      servers.push(server)
      cleanups.push(
        () =>
          new Promise<void>(resolve => {
            server.close(() => resolve())
            server.closeAllConnections()
          }),
      )
      return server
    }
    const urls: { local?: string; http?: string; https?: string } = {}

    if (!secure) {
      const server = track(http.createServer(serverOptions(headersTimeoutMs), listener(false)))
      await listen(server, options.localPort ?? 5000, options.host)
      urls.local = urlOf('http', server)
      logger.info('listening (local mode, plain HTTP)', { url: urls.local, upstream: options.engine ? 'in-process' : options.upstream.url })
    } else {
      const provider = options.certificate as CertificateProvider
      let httpsServer: https.Server | undefined
      const redirect = createRedirectHandler({
        domains: options.domains,
        challenges: options.challenges,
        httpsPort: () => options.publicHttpsPort ?? ((httpsServer?.address() as AddressInfo | null)?.port ?? options.httpsPort ?? 443),
      })
      const httpServer = track(
        http.createServer(serverOptions(headersTimeoutMs), (req, res) => {
          const started = process.hrtime.bigint()
          res.once('close', () =>
            logger.info('request', {
              method: req.method,
              path: (req.url ?? '').split('?')[0],
              status: res.statusCode,
              ms: Math.round(Number(process.hrtime.bigint() - started) / 1e6),
              remote: req.socket.remoteAddress,
              port: 'http',
            }),
          )
          redirect(req, res)
        }),
      )
      httpServer.removeAllListeners('checkContinue')
      await listen(httpServer, options.httpPort ?? 80, options.host)
      urls.http = urlOf('http', httpServer)

      await provider.start()
      cleanups.push(() => provider.stop())
      const contextOptions = (certificate: TlsCertificate | undefined) => ({
        ...(certificate ? { key: certificate.key, cert: certificate.cert } : {}),
        ...(clientCa !== undefined ? { ca: clientCa } : {}),
        minVersion: MIN_TLS_VERSION as 'TLSv1.2',
        ciphers: `${TLS13_CIPHERS}:${TLS12_CIPHERS}`,
        ecdhCurve: ECDH_CURVES,
        // Server order (the Mozilla list order, every suite ECDHE + AEAD): testssl.sh rates "no cipher
        // order" HIGH, and registry clients (dockerd, containerd, skopeo on servers) have AES-NI, so
        // letting them prefer ChaCha20 (Mozilla's reason for "off") buys nothing here.
        honorCipherOrder: true,
      })
      const initial = provider.current()
      if (!initial) logger.warn('no TLS certificate yet: HTTPS handshakes fail until one is obtained')
      httpsServer = https.createServer(
        {
          ...serverOptions(headersTimeoutMs),
          ...contextOptions(initial),
          ALPNProtocols: ALPN_PROTOCOLS,
          // Ask for a client certificate but decide per request: a clear 400 instead of an opaque TLS alert.
          requestCert: clientCa !== undefined,
          rejectUnauthorized: false,
        },
        listener(false),
      )
      const server = httpsServer
      provider.onChange(certificate => {
        try {
          // New connections get the new certificate; open ones keep theirs.
          server.setSecureContext(contextOptions(certificate))
          logger.info('TLS certificate in service', { names: certificate.names.join(','), notAfter: certificate.notAfter.toISOString() })
        } catch (error) {
          logger.error('new TLS certificate refused by OpenSSL; keeping the current one', { error: (error as Error).message })
        }
      })
      server.on('tlsClientError', (error: Error) => logger.debug('TLS handshake failed', { error: error.message }))
      track(server)
      await listen(server, options.httpsPort ?? 443, options.host)
      urls.https = urlOf('https', server)
      logger.info('listening', { https: urls.https, http: urls.http, upstream: options.engine ? 'in-process' : options.upstream.url, domains: options.domains.join(',') })
    }

    let closing: Promise<void> | undefined
    return {
      urls,
      close: () => (closing ??= cleanup()),
    }
  } catch (error) {
    await cleanup()
    throw error
  }
}

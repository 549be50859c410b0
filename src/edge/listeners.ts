/**
 * The transports: Node HTTP(S) servers that only accept connections and hand each request to one
 * handler as an Exchange. Nothing here decides anything about a request.
 */
import type http from 'node:http'
import type https from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { createExchange, type Door, type Handler } from '../http/exchange.js'
import type { Logger } from '../log.js'

/**
 * Stream buffer limit of every client connection (socket, request, response), of the counted body
 * and of the proxy's upstream requests: how much a connection may queue before its peer is paused.
 * Larger values multiply with the number of slow uploaders and slow readers (test/hardening/slow-clients).
 */
export const STREAM_HIGH_WATER_MARK = 64 * 1024

export type Server = http.Server | https.Server

/** Where a listener binds: a TCP port on `host`, or a unix socket when `port` is its path. */
export interface ListenAddress {
  readonly port: number | string
  readonly host: string | undefined
}

export interface ListenerTimeouts {
  /** Socket inactivity limit (no total request timeout: uploads take long). */
  idleTimeoutMs: number
  /** Time a client has to send its complete request headers (slowloris); on TLS doors counted from the end of the handshake. */
  headersTimeoutMs: number
  /** Time a client has to complete its TLS handshake (TLS doors only). */
  handshakeTimeoutMs: number
}

/** Options shared by every Node HTTP server of the edge (edge-anchors §0.1, §10). */
export function serverOptions(timeouts: ListenerTimeouts): http.ServerOptions {
  return {
    requestTimeout: 0, // Node 20's default 300 s would cut a long layer upload (408)
    headersTimeout: timeouts.headersTimeoutMs,
    // How often Node checks the headers timeout (its default 30 s would let a slow client hold its socket up to 90 s).
    connectionsCheckingInterval: Math.min(5_000, Math.max(100, Math.floor(timeouts.headersTimeoutMs / 4))),
    keepAliveTimeout: 65_000,
    noDelay: true,
    highWaterMark: STREAM_HIGH_WATER_MARK,
  }
}

/** Makes `server` hand every request (plain and `Expect: 100-continue`) to `handler` as a `door` exchange. */
export function serve(server: Server, door: Door, handler: Handler, timeouts: ListenerTimeouts, logger: Logger): Server {
  const accept = (expectsContinue: boolean) => (req: http.IncomingMessage, res: http.ServerResponse) => {
    const exchange = createExchange(req, res, door, { expectsContinue })
    handler(exchange).catch((error: unknown) => {
      // The access-log step catches everything; this guards against a bug in it.
      logger.error('request handler failed', { error: (error as Error).message, id: exchange.id })
      if (!res.destroyed) res.destroy()
    })
  }
  server.on('request', accept(false))
  server.on('checkContinue', accept(true))
  server.setTimeout(timeouts.idleTimeoutMs) // idle sockets are destroyed (no 'timeout' listener → Node destroys)
  closeSilentTls(server, timeouts.headersTimeoutMs)
  // Accept failures (EMFILE, ENFILE) are reported here; they must not end the process.
  server.on('error', (error: NodeJS.ErrnoException) => {
    if (server.listening) logger.error('listener error', { code: error.code, error: error.message })
  })
  return server
}

/**
 * Destroys a TLS connection that sends nothing within `ms` of its handshake. Node's headers timeout
 * covers a plain connection from accept and a TLS one once its first bytes arrive, but not a TLS
 * connection that stays silent after the handshake (the idle timeout would hold it).
 */
function closeSilentTls(server: Server, ms: number): void {
  server.on('secureConnection', (socket: Socket) => {
    const timer = setTimeout(() => socket.destroy(), ms)
    timer.unref()
    const stop = (): void => clearTimeout(timer)
    socket.once('data', stop)
    socket.once('close', stop)
  })
}

/** Listens on `port`; without `host`, on every interface ('::' dual-stack, '0.0.0.0' where IPv6 is off). */
export function listen(server: Server, port: number | string, host: string | undefined): Promise<void> {
  const attempt = (address: string | undefined): Promise<void> =>
    new Promise((resolve, reject) => {
      const onError = (error: Error): void => reject(error)
      server.once('error', onError)
      const done = (): void => {
        server.off('error', onError)
        resolve()
      }
      if (typeof port === 'string') server.listen(port, done)
      else server.listen(port, address, done)
    })
  if (host !== undefined || typeof port === 'string') return attempt(host)
  return attempt('::').catch(async (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EAFNOSUPPORT' && error.code !== 'EADDRNOTAVAIL') throw error
    await attempt('0.0.0.0')
  })
}

/** `scheme://host:port` of a listening server; a wildcard bind shows as localhost, a unix socket as `unix:path`. */
export function urlOf(scheme: string, server: Server): string {
  const address = server.address()
  if (typeof address === 'string') return `unix:${address}`
  const { address: host, family, port } = address as AddressInfo
  const shown = host === '::' || host === '0.0.0.0' ? 'localhost' : family === 'IPv6' ? `[${host}]` : host
  return `${scheme}://${shown}:${port}`
}

/** Stops accepting and ends every connection of `server`. */
export function closeServer(server: Server): Promise<void> {
  return new Promise(resolve => {
    server.close(() => resolve())
    server.closeAllConnections()
  })
}

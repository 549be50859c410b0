/**
 * Connection limits over every door together, so that no client can take the descriptors the
 * process needs to serve the others:
 *
 * - per client address (`throttleKey`: IPv4 as is, IPv6 by its /64): a connection beyond the limit
 *   is closed as soon as it is accepted, unanswered;
 * - in total: a connection beyond the limit is kept just long enough to be answered 503
 *   `UNAVAILABLE` with Retry-After (then closed, or destroyed after REFUSED_GRACE_MS); beyond
 *   MAX_REFUSED of those at once, new ones are closed unanswered too.
 *
 * The total is set below the process's file limit (`connectionLimitFor`) so `accept` never fails
 * with EMFILE, and files and upstream sockets opened for admitted requests still find descriptors.
 */
import { readFile } from 'node:fs/promises'
import type { Socket } from 'node:net'
import type { Step } from '../http/exchange.js'
import { RegistryError } from '../http/errors.js'
import { sendError } from '../http/respond.js'
import { throttleKey } from './auth/basic-auth.js'
import type { Server } from './listeners.js'

export interface ConnectionLimitOptions {
  /** Open connections of all doors together before new ones are answered 503. */
  maxConnections: number
  /** Open connections per client address (IPv6: per /64) before new ones are closed at once. */
  maxConnectionsPerAddress: number
}

/** Descriptors kept for the process itself: stdio, event loop, listeners, workers, logs, certificates. */
export const RESERVED_DESCRIPTORS = 64
/** Connections over the total held at once to be answered 503. */
export const MAX_REFUSED = 32
/** How long a refused connection has to send its request and read the 503. */
export const REFUSED_GRACE_MS = 5_000
const RETRY_AFTER_SECONDS = 5

/** What to do with a new connection: serve it, answer its request 503, or close it unanswered. */
export type Admission = 'admit' | 'refuse' | 'drop'

/**
 * The total connection limit for a file limit: half of what the reserve and the refused
 * connections leave, since each admitted connection may hold a second descriptor (the blob file it
 * reads or writes, or its upstream socket).
 */
export function connectionLimitFor(fileLimit: number): number {
  return Math.max(16, Math.floor((fileLimit - RESERVED_DESCRIPTORS - MAX_REFUSED) / 2))
}

/** The soft limit on open files of this process (Linux `/proc/self/limits`); undefined where unknown or unlimited. */
export async function readFileLimit(limitsPath = '/proc/self/limits'): Promise<number | undefined> {
  const text = await readFile(limitsPath, 'utf8').catch(() => '')
  const match = /^Max open files\s+(\d+)/m.exec(text)
  return match ? Number(match[1]) : undefined
}

export class ConnectionLimits {
  #total = 0
  #refused = 0
  readonly #perAddress = new Map<string, number>()
  /** Open refused connections: their TCP sockets, and by `connectionKey` the TLS sockets over them. */
  readonly #refusedSockets = new WeakSet<Socket>()
  readonly #refusedKeys = new Set<string>()

  constructor(readonly options: ConnectionLimitOptions) {
    for (const [name, value] of Object.entries(options)) {
      if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`)
    }
  }

  /** Open connections counted (admitted and refused). */
  get open(): number {
    return this.#total + this.#refused
  }

  /**
   * Decides on a new connection from `address` (undefined: a unix socket, limited in total only).
   * Unless the answer is 'drop', the connection counts until `release` is called once.
   */
  admit(address: string | undefined): { admission: Admission; release: () => void } {
    const key = address === undefined ? undefined : throttleKey(address)
    const fromAddress = key === undefined ? 0 : (this.#perAddress.get(key) ?? 0)
    if (fromAddress >= this.options.maxConnectionsPerAddress) return { admission: 'drop', release: () => {} }
    let admission: Admission = 'admit'
    if (this.#total >= this.options.maxConnections) {
      if (this.#refused >= MAX_REFUSED) return { admission: 'drop', release: () => {} }
      admission = 'refuse'
    }
    if (admission === 'admit') this.#total++
    else this.#refused++
    if (key !== undefined) this.#perAddress.set(key, fromAddress + 1)
    let released = false
    const release = (): void => {
      if (released) return
      released = true
      if (admission === 'admit') this.#total--
      else this.#refused--
      if (key === undefined) return
      const left = (this.#perAddress.get(key) ?? 1) - 1
      if (left > 0) this.#perAddress.set(key, left)
      else this.#perAddress.delete(key)
    }
    return { admission, release }
  }

  /** Applies the limits to every connection `server` accepts (TCP, before any TLS handshake). */
  attach(server: Server): void {
    server.on('connection', (socket: Socket) => {
      const { admission, release } = this.admit(socket.remoteAddress)
      if (admission === 'drop') {
        socket.destroy()
        return
      }
      socket.once('close', release)
      if (admission === 'admit') return
      this.#refusedSockets.add(socket)
      const key = connectionKey(socket)
      if (key !== undefined) {
        this.#refusedKeys.add(key)
        socket.once('close', () => this.#refusedKeys.delete(key))
      }
      const timer = setTimeout(() => socket.destroy(), REFUSED_GRACE_MS)
      timer.unref()
      socket.once('close', () => clearTimeout(timer))
    })
  }

  /** The step that answers every request on a refused connection 503 and closes it. */
  readonly step: Step = async (exchange, next) => {
    if (!this.#isRefused(exchange.req.socket)) return next(exchange)
    const error = new RegistryError('UNAVAILABLE', null, {
      message: 'the registry has too many open connections; try again shortly',
      headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) },
    })
    sendError(exchange, error, { close: true })
  }

  #isRefused(socket: Socket): boolean {
    if (this.#refused === 0) return false
    if (this.#refusedSockets.has(socket)) return true
    const key = connectionKey(socket)
    return key !== undefined && this.#refusedKeys.has(key)
  }
}

/** One key for a TCP connection, whether seen as its TCP socket or as the TLS socket over it; undefined for a unix socket. */
function connectionKey(socket: Socket): string | undefined {
  if (socket.remotePort === undefined) return undefined
  return `${socket.localAddress}|${socket.localPort}|${socket.remoteAddress}|${socket.remotePort}`
}

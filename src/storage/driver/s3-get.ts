/**
 * Object downloads for S3Driver.reader without the SDK's HTTP stack: one GET of a presigned URL
 * (signed locally) on a kept-alive socket whose reads land straight in pooled buffers
 * (`onread`), handed to the consumer as chunks and back to the pool through `recycle`. The SDK's
 * path allocated a fresh 64 KiB buffer per socket read and ran each through Node's HTTP parser
 * and stream layers; on a download through Berth that garbage and parsing were a quarter of the
 * one thread.
 *
 * Contract: `s3Get` resolves once the response head arrived: a 2xx gives a stream of exactly
 * Content-Length bytes; any other status rejects with an S3GetError carrying the status and the
 * S3 error code. Memory per download is bounded (HIGH_WATER_CHUNKS reads queued plus one), whatever
 * the object's size. A socket returns to the pool only after its whole body was read.
 */
import net from 'node:net'
import { Readable } from 'node:stream'
import tls from 'node:tls'

/** Size of one socket read (and so of the largest chunk). */
const READ_BYTES = 256 * 1024
/**
 * Chunks queued in the stream before the socket is paused. Object mode: a read takes one chunk as
 * it came (byte mode would concatenate what is queued into a fresh buffer).
 */
const HIGH_WATER_CHUNKS = 2
/** Idle sockets kept per origin. */
const MAX_IDLE = 16
/** An idle socket unused this long is closed (below the usual servers' keep-alive timeouts). */
const IDLE_MS = 4_000
/** The most bytes of a response head or an error body read. */
const MAX_HEAD = 64 * 1024
const ATTEMPTS = 3

/** A read of fewer bytes than this is copied out, so a queued chunk never pins more than 4× its size. */
const SMALL_READ = READ_BYTES / 4

/**
 * Read buffers: taken for each socket read, given back by `PooledBody.recycle` once the consumer
 * is done with a chunk. Only buffers this module allocated are kept, at most MAX_POOLED.
 */
const MAX_POOLED = 16
const pool = {
  free: [] as Buffer[],
  /** Buffers taken and not given back yet: only these are taken back, and each once. */
  lent: new WeakSet<ArrayBufferLike>(),
  take(): Buffer {
    const buffer = this.free.pop() ?? Buffer.allocUnsafeSlow(READ_BYTES)
    this.lent.add(buffer.buffer)
    return buffer
  },
  give(chunk: Uint8Array): void {
    if (!this.lent.has(chunk.buffer)) return
    this.lent.delete(chunk.buffer)
    if (this.free.length < MAX_POOLED) this.free.push(Buffer.from(chunk.buffer, 0, READ_BYTES))
  },
}

export class S3GetError extends Error {
  constructor(
    readonly status: number,
    readonly code: string | undefined,
    message: string,
    /** A server error (5xx): worth another attempt. */
    readonly retryable = false,
  ) {
    super(message)
    this.name = 'S3GetError'
  }
}

interface Head {
  status: number
  length: number | undefined
  close: boolean
  chunked: boolean
}

/** One connection and what its reads are for right now. */
class Connection {
  readonly socket: net.Socket
  onRead: (bytes: Buffer) => boolean = () => false
  onGone: (error: Error) => void = () => {}
  idleTimer: NodeJS.Timeout | undefined

  constructor(url: URL, connectTimeoutMs: number) {
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80))
    const onread = {
      buffer: () => pool.take(),
      callback: (n: number, buffer: Uint8Array): boolean => this.onRead(Buffer.from(buffer.buffer, buffer.byteOffset, n)),
    }
    this.socket =
      url.protocol === 'https:'
        ? // Node's tls.connect takes `onread` as net.connect does (its types omit it).
          tls.connect({ host: url.hostname, port, ...(net.isIP(url.hostname) === 0 ? { servername: url.hostname } : {}), onread } as tls.ConnectionOptions)
        : net.connect({ host: url.hostname, port, onread })
    this.socket.setNoDelay(true)
    const timer = setTimeout(() => this.socket.destroy(new Error(`connecting to ${url.host} timed out`)), connectTimeoutMs)
    this.socket.once(url.protocol === 'https:' ? 'secureConnect' : 'connect', () => clearTimeout(timer))
    this.socket.on('error', error => this.onGone(error))
    this.socket.on('close', () => {
      clearTimeout(timer)
      this.onGone(new Error('the store closed the connection'))
    })
  }
}

const idle = new Map<string, Connection[]>()

function takeConnection(url: URL, connectTimeoutMs: number): Connection {
  const list = idle.get(url.origin)
  while (list !== undefined && list.length > 0) {
    const connection = list.pop() as Connection
    clearTimeout(connection.idleTimer)
    if (!connection.socket.destroyed) {
      connection.socket.ref()
      return connection
    }
  }
  return new Connection(url, connectTimeoutMs)
}

function giveBack(url: URL, connection: Connection): void {
  connection.onRead = () => {
    connection.socket.destroy() // bytes nobody asked for
    return false
  }
  connection.onGone = () => {
    const list = idle.get(url.origin)
    const at = list?.indexOf(connection) ?? -1
    if (list !== undefined && at !== -1) list.splice(at, 1)
  }
  let list = idle.get(url.origin)
  if (list === undefined) idle.set(url.origin, (list = []))
  if (list.length >= MAX_IDLE) return void connection.socket.destroy()
  connection.socket.resume()
  connection.socket.unref() // an idle socket does not keep a command from exiting
  connection.idleTimer = setTimeout(() => connection.socket.destroy(), IDLE_MS).unref()
  list.push(connection)
}

function parseHead(text: string): Head {
  const lines = text.split('\r\n')
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')
  if (status === null) throw new Error('the store sent no HTTP/1.1 status line')
  const head: Head = { status: Number(status[1]), length: undefined, close: false, chunked: false }
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':')
    if (colon <= 0) continue
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    if (name === 'content-length') head.length = Number(value)
    else if (name === 'connection') head.close = value.toLowerCase() === 'close'
    else if (name === 'transfer-encoding') head.chunked = value.toLowerCase() !== 'identity'
  }
  if (head.length !== undefined && !Number.isSafeInteger(head.length)) throw new Error('the store sent a bad Content-Length')
  return head
}

/** A stream of chunks that are pooled buffers; `recycle` hands one back once its bytes were used. */
export class PooledBody extends Readable {
  resumeSocket: (() => void) | undefined
  stopSocket: (() => void) | undefined

  constructor() {
    super({ objectMode: true, highWaterMark: HIGH_WATER_CHUNKS })
  }

  override _read(): void {
    this.resumeSocket?.()
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.stopSocket?.()
    callback(error)
  }

  recycle(chunk: Uint8Array): void {
    pool.give(chunk)
  }
}

/**
 * GETs `url` (presigned; `range` as a Range header value) and resolves with the status and a
 * body stream once the head arrived. Connection failures before the head are retried (a kept-alive
 * socket the server closed, a refused connect), up to three attempts in all.
 */
export async function s3Get(url: URL, range: string | undefined, timeoutMs: number): Promise<{ status: number; body: PooledBody }> {
  let lastError: unknown
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    try {
      return await attemptGet(url, range, timeoutMs)
    } catch (error) {
      if (error instanceof S3GetError && !error.retryable) throw error
      lastError = error
    }
  }
  throw lastError
}

function attemptGet(url: URL, range: string | undefined, timeoutMs: number): Promise<{ status: number; body: PooledBody }> {
  const connection = takeConnection(url, Math.min(10_000, timeoutMs))
  const socket = connection.socket
  return new Promise((resolve, reject) => {
    let headBytes: Buffer[] = []
    let headSize = 0
    let head: Head | undefined
    let remaining = 0
    let body: PooledBody | undefined
    let errorBody: Buffer[] | undefined
    let settled = false
    const timer = setTimeout(() => fail(new Error(`the store did not answer ${url.pathname} within ${timeoutMs} ms`)), timeoutMs)

    const fail = (error: Error): void => {
      clearTimeout(timer)
      socket.destroy()
      if (!settled) {
        settled = true
        reject(error)
      } else body?.destroy(error)
    }

    const finishBody = (): void => {
      if (head?.close === true) socket.destroy()
      else giveBack(url, connection)
    }

    const onHead = (parsed: Head, rest: Buffer): boolean => {
      head = parsed
      clearTimeout(timer)
      if (parsed.chunked || parsed.length === undefined) {
        // Some stores frame error bodies in chunks: the status still says what happened (a 404 is
        // a missing object, never an I/O error); the body is not read and the socket not reused.
        const ok = parsed.status >= 200 && parsed.status <= 299
        fail(
          ok
            ? new Error('the store answered without a Content-Length')
            : new S3GetError(parsed.status, undefined, `HTTP ${parsed.status}`, parsed.status >= 500),
        )
        return false
      }
      remaining = parsed.length
      if (parsed.status < 200 || parsed.status > 299) {
        errorBody = []
        return onErrorBytes(rest)
      }
      body = new PooledBody()
      const stream = body
      body.resumeSocket = () => {
        if (remaining > 0 && !socket.destroyed) socket.resume()
      }
      body.stopSocket = () => {
        if (remaining > 0) socket.destroy() // the body was not read to its end: the socket cannot be reused
      }
      settled = true
      resolve({ status: parsed.status, body: stream })
      if (remaining === 0) {
        stream.push(null)
        finishBody()
        return true
      }
      return rest.byteLength === 0 ? true : onBodyBytes(rest)
    }

    const onBodyBytes = (read: Buffer): boolean => {
      const stream = body as PooledBody
      let bytes = read
      if (read.byteLength < SMALL_READ) {
        bytes = Buffer.from(read)
        pool.give(read)
      }
      if (bytes.byteLength > remaining) {
        fail(new Error('the store sent more bytes than its Content-Length'))
        return false
      }
      remaining -= bytes.byteLength
      const more = stream.push(bytes)
      if (remaining === 0) {
        stream.push(null)
        finishBody()
        return true
      }
      return more
    }

    const onErrorBytes = (bytes: Buffer): boolean => {
      const parsed = head as Head
      if (bytes.byteLength > 0) {
        const copy = Buffer.from(bytes)
        pool.give(bytes)
        remaining -= copy.byteLength
        ;(errorBody as Buffer[]).push(copy)
      } else pool.give(bytes)
      if (remaining < 0) {
        fail(new Error('the store sent more bytes than its Content-Length'))
        return false
      }
      if (remaining > 0 && parsed.length! - remaining < MAX_HEAD) return true
      const text = Buffer.concat(errorBody as Buffer[]).toString('utf8')
      const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1]
      if (remaining === 0) finishBody()
      else socket.destroy()
      settled = true
      reject(new S3GetError(parsed.status, code, `${code ?? 'error'} (HTTP ${parsed.status})`, parsed.status >= 500))
      return true
    }

    connection.onGone = error => {
      if (head === undefined || remaining > 0) fail(error)
    }
    connection.onRead = (bytes: Buffer): boolean => {
      if (head === undefined) {
        headBytes.push(Buffer.from(bytes))
        headSize += bytes.byteLength
        pool.give(bytes)
        const all = headBytes.length === 1 ? (headBytes[0] as Buffer) : Buffer.concat(headBytes)
        const end = all.indexOf('\r\n\r\n')
        if (end === -1) {
          headBytes = [all]
          if (headSize > MAX_HEAD) fail(new Error('the store sent an oversized response head'))
          return true
        }
        let parsed: Head
        try {
          parsed = parseHead(all.toString('latin1', 0, end))
        } catch (error) {
          fail(error as Error)
          return false
        }
        headBytes = []
        return onHead(parsed, all.subarray(end + 4))
      }
      if (errorBody !== undefined) return onErrorBytes(bytes)
      if (body === undefined) {
        socket.destroy()
        return false
      }
      return onBodyBytes(bytes)
    }

    const request = `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n${range !== undefined ? `Range: ${range}\r\n` : ''}\r\n`
    socket.write(request)
  })
}

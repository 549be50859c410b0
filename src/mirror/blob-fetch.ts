/**
 * One upstream download of one blob, shared by every client that asks for it meanwhile
 * (single flight): the bytes are stored through the upload store (hashed as they are written,
 * verified against the digest and the announced size before the blob is committed) and handed to
 * each waiting client as they arrive.
 *
 * Memory stays flat, and a slow client never slows the others, nor the download for long:
 * - a client gets chunks in a queue of at most MAX_QUEUED_BYTES. One that falls that far behind
 *   while another client still has room is detached: it finishes what is queued, waits for the
 *   commit, and reads the rest from storage at its own pace (its connection idles meanwhile);
 * - when every live client's queue is full (a lone client, or all equally slow), the download
 *   waits for one of them to take a chunk rather than detach them all: the clients pace it, as a
 *   pull from the upstream itself would be. After STALL_MS without any taking a chunk they are
 *   detached and the download goes on, so a client that stops reading holds nothing up;
 * - the first REPLAY_BYTES are kept so clients that come a moment after the first one still join
 *   live; later ones read the committed blob from storage. Chunks are shared Buffers, so a fetch
 *   holds at most about REPLAY_BYTES + MAX_QUEUED_BYTES whatever the number of clients.
 *
 * The last chunk is handed out only after the digest matched: a client of a blob the upstream
 * corrupted always gets a short body (its connection is cut), never all the bytes of a wrong blob.
 */
import { Readable } from 'node:stream'
import type { Digest } from '../storage/digest.js'
import { DigestMismatchError, UploadSizeError } from '../storage/errors.js'
import type { RegistryStore } from '../storage/registry-store.js'
import { UpstreamUnavailableError } from './errors.js'

export const MAX_QUEUED_BYTES = 8 * 1024 * 1024
export const REPLAY_BYTES = 4 * 1024 * 1024
/** How long the download waits for a client to take a chunk when every live client's queue is full. */
export const STALL_MS = 2000

export interface FetchSource {
  /** The upstream's body. */
  readonly body: AsyncIterable<Uint8Array> & { destroy(error?: Error): void }
  /** Content-Length as the upstream announced it, if it did. */
  readonly size: number | undefined
}

class Subscriber {
  readonly queue: Buffer[] = []
  queuedBytes = 0
  /** Bytes given to this subscriber (queued or taken) from the start of the blob. */
  offset = 0
  /** False once detached (or joined late): the rest comes from storage after the commit. */
  live = true
  /** Told when a chunk is taken (or the client leaves): the download may be waiting for room. */
  onTaken: (() => void) | undefined
  #wake: (() => void) | undefined

  push(chunk: Buffer): void {
    this.queue.push(chunk)
    this.queuedBytes += chunk.byteLength
    this.offset += chunk.byteLength
    this.wake()
  }

  take(): Buffer | undefined {
    const chunk = this.queue.shift()
    if (chunk !== undefined) {
      this.queuedBytes -= chunk.byteLength
      this.onTaken?.()
    }
    return chunk
  }

  next(): Promise<void> {
    return new Promise(resolve => (this.#wake = resolve))
  }

  wake(): void {
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
  }
}

export class BlobFetch {
  /** Resolves once the blob is committed (verified) in `name`; rejects when the download failed. */
  readonly done: Promise<void>
  /** The size the upstream announced (Content-Length), if it did. */
  readonly size: number | undefined
  readonly #subscribers = new Set<Subscriber>()
  #replay: Buffer[] | undefined = []
  #replayBytes = 0
  #total = 0
  #state: 'streaming' | 'committed' | 'failed' = 'streaming'
  #failure: Error | undefined
  #deferred = 0
  /** Resolves the download's wait for room (see #waitForRoom). */
  #room: (() => void) | undefined
  readonly #taken = (): void => {
    const room = this.#room
    this.#room = undefined
    room?.()
  }

  constructor(
    private readonly store: RegistryStore,
    private readonly name: string,
    private readonly digest: Digest,
    private readonly upstream: string,
    private readonly maxBytes: number,
    source: FetchSource,
  ) {
    this.size = source.size
    this.done = this.#run(source)
    this.done.catch(() => {}) // failures reach clients through their streams
  }

  /** Clients served from storage after the commit: detached for being too slow, or joined too late for the replay. */
  get deferredCount(): number {
    return this.#deferred
  }

  /** The blob's bytes from the start, as a stream for one client. Destroying it leaves the fetch running for the others. */
  subscribe(): Readable {
    const subscriber = new Subscriber()
    subscriber.onTaken = this.#taken
    if (this.#state === 'streaming' && this.#replay !== undefined) for (const chunk of this.#replay) subscriber.push(chunk)
    else {
      subscriber.live = false
      this.#deferred++
    }
    this.#subscribers.add(subscriber)
    return Readable.from(this.#stream(subscriber), { objectMode: true, highWaterMark: 1 })
  }

  async *#stream(subscriber: Subscriber): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        const chunk = subscriber.take()
        if (chunk !== undefined) {
          yield chunk
          continue
        }
        if (this.#state === 'failed') throw this.#failure ?? new Error('upstream download failed')
        if (this.#state === 'committed') {
          const rest = this.#total - subscriber.offset
          if (!subscriber.live && rest > 0) yield* await this.store.blobs.open(this.name, this.digest, subscriber.offset, rest)
          return
        }
        await subscriber.next()
      }
    } finally {
      this.#subscribers.delete(subscriber)
      this.#taken()
    }
  }

  #publish(chunk: Buffer): void {
    if (this.#replay !== undefined) {
      this.#replayBytes += chunk.byteLength
      if (this.#replayBytes > REPLAY_BYTES) this.#replay = undefined
      else this.#replay.push(chunk)
    }
    for (const subscriber of this.#subscribers) {
      if (!subscriber.live) continue
      if (subscriber.queuedBytes + chunk.byteLength > MAX_QUEUED_BYTES) {
        subscriber.live = false // too slow: the rest comes from storage after the commit
        this.#deferred++
        continue
      }
      subscriber.push(chunk)
    }
  }

  /**
   * Waits while every live client's queue is full (none could take `bytes` more), for one to take
   * a chunk or leave; after STALL_MS of that, returns anyway and #publish detaches the full ones.
   */
  async #waitForRoom(bytes: number): Promise<void> {
    for (;;) {
      let live = false
      for (const subscriber of this.#subscribers) {
        if (!subscriber.live) continue
        if (subscriber.queuedBytes + bytes <= MAX_QUEUED_BYTES) return
        live = true
      }
      if (!live) return
      const roomMade = await new Promise<boolean>(resolve => {
        const timer = setTimeout(() => {
          this.#room = undefined
          resolve(false)
        }, STALL_MS)
        this.#room = () => {
          clearTimeout(timer)
          resolve(true)
        }
      })
      if (!roomMade) return
    }
  }

  async #run(source: FetchSource): Promise<void> {
    const uploads = this.store.uploads
    let held: Buffer | undefined
    const chunks = async function* (this: BlobFetch): AsyncGenerator<Uint8Array> {
      for await (const data of source.body) {
        const chunk = Buffer.isBuffer(data) ? data : Buffer.from(data)
        this.#total += chunk.byteLength
        if (this.#total > this.maxBytes) throw new UpstreamUnavailableError(this.upstream, `blob larger than the ${this.maxBytes} bytes accepted`)
        if (held !== undefined) {
          await this.#waitForRoom(held.byteLength)
          this.#publish(held)
        }
        held = chunk
        yield chunk
      }
    }.call(this)
    let id: string | undefined
    try {
      id = await uploads.start(this.name)
      await uploads.complete(this.name, id, this.digest, chunks, source.size === undefined ? {} : { length: source.size })
      id = undefined
      if (held !== undefined) this.#publish(held)
      this.#state = 'committed'
    } catch (error) {
      source.body.destroy()
      if (id !== undefined) await uploads.cancel(this.name, id).catch(() => {})
      this.#failure = asUpstreamError(error, this.upstream, this.digest)
      this.#state = 'failed'
      throw this.#failure
    } finally {
      this.#replay = undefined
      for (const subscriber of this.#subscribers) subscriber.wake()
    }
  }
}

function asUpstreamError(error: unknown, upstream: string, digest: Digest): Error {
  if (error instanceof UpstreamUnavailableError) return error
  if (error instanceof DigestMismatchError)
    return new UpstreamUnavailableError(upstream, `it sent blob bytes that hash to ${error.actual}, not ${digest.value}`, { cause: error })
  if (error instanceof UploadSizeError)
    return new UpstreamUnavailableError(upstream, `it sent a blob of another size than announced: ${error.message}`, { cause: error })
  const code = (error as NodeJS.ErrnoException).code
  if (code === 'ECONNRESET' || code === 'ETIMEDOUT' || code === 'ERR_STREAM_PREMATURE_CLOSE' || (error as Error).message === 'aborted') {
    return new UpstreamUnavailableError(upstream, `the blob download broke off (${code ?? 'aborted'})`, { cause: error })
  }
  return error instanceof Error ? error : new Error(String(error))
}

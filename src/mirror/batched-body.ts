/**
 * An upstream body read in batches. Over TLS a body arrives one 16 KiB record at a time, and every
 * chunk costs the mirror the same fixed work (hashing, queueing for each client, a socket write
 * per client): batching makes that work per batch.
 *
 * A batch is passed on once it holds `minBytes`, or `maxWaitMs` after its first byte arrived,
 * whichever comes first, and stops growing at `maxBytes` (the last chunk read may pass it): a fast
 * upstream gives few large batches, a slow one small batches at most `maxWaitMs` late. Memory: one
 * batch beyond what the body itself buffers.
 */
import type { Readable } from 'node:stream'

export interface BatchOptions {
  readonly minBytes: number
  readonly maxBytes: number
  readonly maxWaitMs: number
}

export const BATCHES: BatchOptions = { minBytes: 256 * 1024, maxBytes: 1024 * 1024, maxWaitMs: 5 }

export interface BatchedBody extends AsyncIterable<Buffer> {
  /** Destroys the underlying body (its socket is not reused). */
  destroy(error?: Error): void
}

export function batchedBody(body: Readable, options: BatchOptions = BATCHES): BatchedBody {
  return Object.assign(batches(body, options), { destroy: (error?: Error) => void body.destroy(error) })
}

async function* batches(body: Readable, { minBytes, maxBytes, maxWaitMs }: BatchOptions): AsyncGenerator<Buffer> {
  const parts: Buffer[] = []
  try {
    for (;;) {
      let size = 0
      let deadline = 0
      for (;;) {
        let chunk: Buffer | null
        while (size < maxBytes && (chunk = body.read() as Buffer | null) !== null) {
          parts.push(chunk)
          size += chunk.byteLength
        }
        if (size >= minBytes || body.readableEnded) break
        if (size === 0) {
          await more(body)
          continue
        }
        if (deadline === 0) deadline = performance.now() + maxWaitMs
        const left = deadline - performance.now()
        if (left <= 0 || !(await more(body, left))) break
      }
      if (size === 0) return
      const batch = parts.length === 1 ? parts[0]! : Buffer.concat(parts, size)
      parts.length = 0
      yield batch
    }
  } finally {
    // A reader that stops early (an error downstream) must not leave the socket open.
    if (!body.readableEnded) body.destroy()
  }
}

/**
 * Resolves true when `body` has bytes to read or has ended, false when `timeoutMs` passed first;
 * rejects when it failed or closed early.
 */
function more(body: Readable, timeoutMs?: number): Promise<boolean> {
  if (body.errored !== null) return Promise.reject(body.errored)
  if (body.destroyed) return Promise.reject(prematureClose())
  return new Promise((resolve, reject) => {
    const settle = (error: Error | undefined, arrived: boolean) => {
      clearTimeout(timer)
      body.off('readable', ready)
      body.off('end', ready)
      body.off('error', failed)
      body.off('close', closed)
      if (error === undefined) resolve(arrived)
      else reject(error)
    }
    const ready = () => settle(undefined, true)
    const failed = (error: Error) => settle(error, false)
    const closed = () => settle(body.readableEnded ? undefined : (body.errored ?? prematureClose()), true)
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => settle(undefined, false), timeoutMs)
    body.on('readable', ready)
    body.on('end', ready)
    body.on('error', failed)
    body.on('close', closed)
  })
}

function prematureClose(): Error {
  return Object.assign(new Error('the body was closed before its end'), { code: 'ERR_STREAM_PREMATURE_CLOSE' })
}

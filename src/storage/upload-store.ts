/**
 * Blob uploads (distribution's `blobWriter`), kept on disk under `_uploads/<uuid>/` exactly as
 * registry:2 keeps them (`data` appended, `startedat`), so an upload survives a restart and
 * registry:2's upload purging understands our folders.
 *
 * The running SHA-256 of each upload lives in memory, keyed by repository and id, with the
 * offset it covers. When it is missing (after a restart, or because another instance behind the
 * same balancer took the previous chunk) or does not match the stored bytes (a failed chunk was
 * cut back, another process appended), chunks are stored without hashing and the digest is
 * computed once at completion by streaming `data` through a fresh hash. So an upload whose
 * chunks alternate between instances costs one extra read of its bytes, not one per chunk.
 * Node cannot import Go's `hashstates` files, so they are ignored.
 *
 * Not a hasher whose state can be saved in the store (hash-wasm's SHA-256 save/load): it hashes
 * several times slower than Node's and would bound every push, while re-reading at the end costs
 * one read of the bytes, and nothing when one instance took the whole upload (docker, skopeo and
 * podman send a blob in one PATCH; only the final PUT may land elsewhere).
 *
 * Chunks of one upload are serialized by an in-process lock; a chunk that fails midway (client
 * gone, wrong length) is cut back to where it started, so the upload stays resumable.
 */
import { randomUUID, type Hash } from 'node:crypto'
import { ignoreMissing, PathNotFoundError, statFileOrUndefined, type StorageDriver } from './driver/storage-driver.js'
import { type BlobStore, type BlobInfo } from './blob-store.js'
import { EMPTY_SHA256, digestFromHash, newHash, type Digest } from './digest.js'
import { DigestMismatchError, UploadRangeError, UploadSizeError, UploadUnknownError } from './errors.js'
import { isUploadId, REPOSITORIES_ROOT, uploadDataPath, uploadPath, uploadStartedAtPath } from './paths.js'
import { isRepositoryName } from './reference.js'

export interface ChunkOptions {
  /** Where the client says the chunk starts (Content-Range); must equal the current size. */
  start?: number
  /** Exact number of bytes the chunk must have (Content-Length / Content-Range). */
  length?: number
}

/** A request body, a stream, or plain chunks (tests, tools). */
export type ByteSource = AsyncIterable<Uint8Array> | Iterable<Uint8Array>

interface HashState {
  hash: Hash
  offset: number
  /**
   * The data's `etag` when this process wrote it (S3). Another instance rewriting the upload with
   * other bytes of the same length changes it, so a stale hash is never trusted; undefined on
   * drivers without etags (one process per filesystem).
   */
  etag: string | undefined
}

/** Bounds the memory held by abandoned uploads' hash states; an evicted one is rebuilt from disk. */
const MAX_HASH_STATES = 10_000

/** `time.RFC3339` as Go prints a UTC time: no fractional seconds. */
function rfc3339(now: Date): string {
  return now.toISOString().replace(/\.\d{3}Z$/, 'Z')
}

/**
 * When an upload began (ms since the epoch): its `startedat`, or, where that is missing or
 * unreadable (a start that failed after creating the folder), the latest modification time of the
 * folder and the files in it, so such a folder ages like an upload. Undefined when the folder is gone.
 */
export async function uploadStartedAt(driver: StorageDriver, name: string, id: string): Promise<number | undefined> {
  try {
    const startedAt = Date.parse((await driver.getContent(uploadStartedAtPath(name, id))).toString('utf8').trim())
    if (!Number.isNaN(startedAt)) return startedAt
  } catch (error) {
    if (!(error instanceof PathNotFoundError)) throw error
  }
  const modified = async (path: string): Promise<number | undefined> => {
    try {
      return (await driver.stat(path)).modTime.getTime()
    } catch (error) {
      if (error instanceof PathNotFoundError) return undefined
      throw error
    }
  }
  const folder = uploadPath(name, id)
  let latest = await modified(folder)
  if (latest === undefined) return undefined
  for (const child of await driver.list(folder).catch(() => [] as string[])) latest = Math.max(latest, (await modified(child)) ?? 0)
  return latest
}

export class UploadStore {
  readonly #hashes = new Map<string, HashState>()
  readonly #locks = new Map<string, Promise<unknown>>()

  constructor(
    private readonly driver: StorageDriver,
    private readonly blobs: BlobStore,
  ) {}

  /** Starts an upload in `name` and returns its id. */
  async start(name: string): Promise<string> {
    const id = randomUUID()
    await this.driver.putContent(uploadStartedAtPath(name, id), Buffer.from(rfc3339(new Date())))
    this.#remember(`${name}\0${id}`, { hash: newHash('sha256'), offset: 0, etag: undefined })
    return id
  }

  /** Bytes received so far. Throws UploadUnknownError. */
  async size(name: string, id: string): Promise<number> {
    const [, info] = await Promise.all([this.#assertExists(name, id), this.#dataInfo(name, id)])
    return info.size
  }

  /**
   * Appends one chunk streamed from `body`. Resolves with the upload's new size.
   * Throws UploadUnknownError, UploadRangeError (out of order), UploadSizeError (length mismatch
   * or body cut short); on error nothing of the chunk remains.
   */
  async append(name: string, id: string, body: ByteSource, options: ChunkOptions = {}): Promise<number> {
    return this.#locked(name, id, async () => {
      const { size } = await this.#write(name, id, body, options, false)
      return size
    })
  }

  /**
   * Finishes the upload: appends the optional last chunk, checks the content against `digest`,
   * and moves the bytes into place as that blob, linked into `name`. On a digest mismatch the
   * upload is discarded (as distribution does) and DigestMismatchError is thrown.
   */
  async complete(name: string, id: string, digest: Digest, body?: ByteSource, options: ChunkOptions = {}): Promise<BlobInfo> {
    return this.#locked(name, id, async () => {
      const key = `${name}\0${id}`
      const { size, hash } = await this.#write(name, id, body ?? [], options, true)
      let actual: Digest
      if (digest.algorithm === 'sha256' && hash !== undefined) {
        actual = digestFromHash(hash.copy(), 'sha256')
      } else {
        actual = await this.#hashFile(name, id, size, digest.algorithm)
      }
      if (actual.value !== digest.value) {
        await this.#discard(name, id)
        throw new DigestMismatchError(digest.value, actual.value)
      }
      const dataPath = uploadDataPath(name, id)
      if (size === 0 && digest.value === EMPTY_SHA256) {
        // The data file may not exist for an empty upload; make sure there are bytes to adopt.
        await this.driver.putContent(dataPath, new Uint8Array(0)).catch(() => {})
      }
      await this.blobs.adopt(dataPath, digest)
      // The upload's folder holds nothing the link needs once its data is the blob: both at once.
      await Promise.all([this.blobs.link(name, digest), this.driver.delete(uploadPath(name, id)).catch(ignoreMissing)])
      this.#hashes.delete(key)
      return { digest: digest.value, size }
    })
  }

  /** Cancels an upload and deletes its bytes. Throws UploadUnknownError. */
  async cancel(name: string, id: string): Promise<void> {
    return this.#locked(name, id, async () => {
      await this.#assertExists(name, id)
      await this.#discard(name, id)
    })
  }

  /**
   * Deletes uploads started before `olderThan` (`uploadStartedAt`: by `startedat`, as registry:2's
   * upload purging does, else by the folder's last modification). Walks every
   * repository's `_uploads`: a maintenance task for a timer, never a request path.
   * Resolves with the number of uploads deleted.
   */
  async purge(olderThan: Date): Promise<number> {
    const found: { name: string; id: string }[] = []
    const prefix = `${REPOSITORIES_ROOT}/`
    try {
      await this.driver.walk(REPOSITORIES_ROOT, async info => {
        if (!info.isDir) return
        const base = info.path.slice(info.path.lastIndexOf('/') + 1)
        if (!base.startsWith('_')) return
        if (base === '_uploads') {
          const name = info.path.slice(prefix.length, info.path.lastIndexOf('/'))
          for (const child of await this.driver.list(info.path).catch(() => [] as string[])) {
            const id = child.slice(child.lastIndexOf('/') + 1)
            if (isRepositoryName(name) && isUploadId(id)) found.push({ name, id })
          }
        }
        return 'skip'
      })
    } catch (error) {
      if (error instanceof PathNotFoundError) return 0
      throw error
    }
    let purged = 0
    for (const { name, id } of found) {
      const startedAt = await uploadStartedAt(this.driver, name, id)
      if (startedAt === undefined || startedAt >= olderThan.getTime()) continue
      await this.#locked(name, id, () => this.#discard(name, id))
      purged++
    }
    // Writes that a killed process left half done (S3 multipart uploads) are not uploads, but
    // as old as these they are abandoned too.
    await this.driver.abortIncompleteWrites?.(olderThan)
    return purged
  }

  async #discard(name: string, id: string): Promise<void> {
    this.#hashes.delete(`${name}\0${id}`)
    try {
      await this.driver.delete(uploadPath(name, id))
    } catch (error) {
      if (!(error instanceof PathNotFoundError)) throw error
    }
  }

  /** Checks that the upload exists (UploadUnknownError) while it reads the data's size: one round trip for both. */
  async #write(name: string, id: string, body: ByteSource, options: ChunkOptions, finish: boolean): Promise<{ size: number; hash: Hash | undefined }> {
    const key = `${name}\0${id}`
    const [, { size: start, etag }] = await Promise.all([this.#assertExists(name, id), this.#dataInfo(name, id)])
    if (options.start !== undefined && options.start !== start) {
      throw new UploadRangeError(name, id, start, `chunk starts at ${options.start} but the upload has ${start} bytes`)
    }
    const state = this.#hashes.get(key)
    // Without a state for exactly these bytes, store the chunk unhashed; complete() re-reads once.
    // Work on a copy so a failed chunk leaves the remembered state as it was.
    const current = state !== undefined && state.offset === start && (start === 0 || state.etag === etag)
    const hash = current ? state.hash.copy() : undefined
    const writer = await this.driver.writer(uploadDataPath(name, id), { append: true })
    let written = 0
    try {
      for await (const chunk of body) {
        written += chunk.byteLength
        if (options.length !== undefined && written > options.length) {
          throw new UploadSizeError(`chunk is longer than the stated ${options.length} bytes`)
        }
        hash?.update(chunk)
        await writer.write(chunk)
      }
      if (options.length !== undefined && written !== options.length) {
        throw new UploadSizeError(`chunk has ${written} bytes, ${options.length} stated`)
      }
      if (finish) await writer.commit()
      else await writer.close()
    } catch (error) {
      await writer.cancel().catch(() => {})
      if (error instanceof UploadSizeError) throw error
      if (isClientAbort(error)) throw new UploadSizeError('the request body ended before it was complete', { cause: error })
      throw error
    }
    const size = start + written
    if (hash !== undefined) this.#remember(key, { hash, offset: size, etag: writer.etag })
    else this.#hashes.delete(key)
    return { size, hash }
  }

  async #hashFile(name: string, id: string, size: number, algorithm: Digest['algorithm']): Promise<Digest> {
    const hash = newHash(algorithm)
    if (size > 0) {
      for await (const chunk of await this.driver.reader(uploadDataPath(name, id), 0, size)) hash.update(chunk as Uint8Array)
    }
    return digestFromHash(hash, algorithm)
  }

  async #assertExists(name: string, id: string): Promise<void> {
    if (!isUploadId(id)) throw new UploadUnknownError(id)
    try {
      await this.driver.stat(uploadPath(name, id))
    } catch (error) {
      if (error instanceof PathNotFoundError) throw new UploadUnknownError(id)
      throw error
    }
  }

  async #dataInfo(name: string, id: string): Promise<{ size: number; etag: string | undefined }> {
    const info = await statFileOrUndefined(this.driver, uploadDataPath(name, id))
    return { size: info?.size ?? 0, etag: info?.etag }
  }

  #remember(key: string, state: HashState): void {
    this.#hashes.delete(key)
    this.#hashes.set(key, state)
    if (this.#hashes.size > MAX_HASH_STATES) {
      const oldest = this.#hashes.keys().next().value
      if (oldest !== undefined) this.#hashes.delete(oldest)
    }
  }

  async #locked<T>(name: string, id: string, task: () => Promise<T>): Promise<T> {
    const key = `${name}\0${id}`
    const previous = this.#locks.get(key) ?? Promise.resolve()
    const run = previous.then(task, task)
    const settled = run.catch(() => {})
    this.#locks.set(key, settled)
    try {
      return await run
    } finally {
      if (this.#locks.get(key) === settled) this.#locks.delete(key)
    }
  }
}

function isClientAbort(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false
  const code = (error as { code?: unknown }).code
  const message = (error as { message?: unknown }).message
  return code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || message === 'aborted'
}

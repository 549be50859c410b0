/**
 * Blobs: content-addressed bytes under `blobs/`, and the per-repository `_layers` links that say
 * which repository may read which blob (distribution's `linkedBlobStore`). A blob is readable in a
 * repository when its link exists and its data exists; a manifest's bytes are also readable as a
 * blob through the manifest revision link, as in distribution.
 */
import { PathNotFoundError, statFile, statFileOrUndefined, type BlobReader, type StorageDriver } from './driver/storage-driver.js'
import { parseDigest, type Digest } from './digest.js'
import { BlobUnknownError } from './errors.js'
import { blobDataPath, layerLinkPath, manifestRevisionLinkPath } from './paths.js'

export interface BlobInfo {
  readonly digest: string
  readonly size: number
}

function toDigest(digest: Digest | string): Digest {
  return typeof digest === 'string' ? parseDigest(digest) : digest
}

/** Whether a file is at `path` (links and blob data are files). */
async function exists(driver: StorageDriver, path: string): Promise<boolean> {
  return (await statFileOrUndefined(driver, path)) !== undefined
}

export class BlobStore {
  constructor(private readonly driver: StorageDriver) {}

  /** The stored blob regardless of repository, or undefined. */
  async statGlobal(digest: Digest | string): Promise<BlobInfo | undefined> {
    const d = toDigest(digest)
    const info = await statFileOrUndefined(this.driver, blobDataPath(d))
    return info === undefined ? undefined : { digest: d.value, size: info.size }
  }

  /**
   * Refreshes the stored blob's modification time and returns it, or undefined when it is not
   * stored. Every writer that re-uses a stored blob calls this *instead of* a plain stat: garbage
   * collection never deletes a blob touched after its run's cut-off (storage/gc.ts), and a blob it
   * has already taken away fails the touch, so the writer stores the bytes again.
   */
  async touch(digest: Digest | string): Promise<BlobInfo | undefined> {
    const d = toDigest(digest)
    const path = blobDataPath(d)
    try {
      await this.driver.touch(path)
      const info = await statFile(this.driver, path)
      return { digest: d.value, size: info.size }
    } catch (error) {
      if (error instanceof PathNotFoundError) return undefined
      throw error
    }
  }

  /** Whether `name` links the blob (as a layer/config, or as a manifest revision). */
  async isLinked(name: string, digest: Digest | string): Promise<boolean> {
    const d = toDigest(digest)
    if (await exists(this.driver, layerLinkPath(name, d))) return true
    return exists(this.driver, manifestRevisionLinkPath(name, d))
  }

  /** Size of a blob readable in `name`. Throws BlobUnknownError. */
  async stat(name: string, digest: Digest | string): Promise<BlobInfo> {
    const d = toDigest(digest)
    // Both links and the data at once: one round trip, whether or not the blob is there.
    const [layer, revision, info] = await Promise.all([
      exists(this.driver, layerLinkPath(name, d)),
      exists(this.driver, manifestRevisionLinkPath(name, d)),
      this.statGlobal(d),
    ])
    if (!(layer || revision) || info === undefined) throw new BlobUnknownError(d.value)
    return info
  }

  /** Streams a blob readable in `name` (call `stat` first for its size). Throws BlobUnknownError. */
  async open(name: string, digest: Digest | string, offset = 0, length?: number): Promise<BlobReader> {
    const d = toDigest(digest)
    try {
      return await this.driver.reader(blobDataPath(d), offset, length)
    } catch (error) {
      if (error instanceof PathNotFoundError) throw new BlobUnknownError(d.value)
      throw error
    }
  }

  /**
   * Where a client may fetch a blob's bytes directly (a presigned S3 URL when the driver is set up
   * for redirects), or undefined to stream it through the registry. Call `stat` first.
   */
  async redirectUrl(digest: Digest | string): Promise<string | undefined> {
    return this.driver.redirectUrl?.(blobDataPath(toDigest(digest)))
  }

  /** Lets `name` read a stored blob (writes `_layers/<alg>/<hex>/link`). */
  async link(name: string, digest: Digest | string): Promise<void> {
    const d = toDigest(digest)
    await this.driver.putContent(layerLinkPath(name, d), Buffer.from(d.value))
  }

  /**
   * Removes the blob from `name` (its `_layers` link), as distribution's blob DELETE does; the
   * bytes stay until garbage collection, since other repositories may link them.
   * Throws BlobUnknownError when `name` does not link it.
   */
  async unlink(name: string, digest: Digest | string): Promise<void> {
    const d = toDigest(digest)
    const link = layerLinkPath(name, d)
    try {
      await this.driver.delete(link.slice(0, -'/link'.length))
    } catch (error) {
      if (error instanceof PathNotFoundError) throw new BlobUnknownError(d.value)
      throw error
    }
  }

  /**
   * Cross-repository mount: links a stored blob into `name` without moving bytes. With `from`,
   * the source repository must link it; without, any stored blob is mounted (the spec allows a
   * registry to ignore `from`). Resolves undefined when it cannot mount (the caller then starts
   * a normal upload).
   */
  async mount(name: string, digest: Digest | string, from?: string): Promise<BlobInfo | undefined> {
    const d = toDigest(digest)
    if (from !== undefined && from !== name && !(await this.isLinked(from, d))) return undefined
    const info = await this.touch(d) // not statGlobal: see touch()
    if (info === undefined) return undefined
    await this.link(name, d)
    return info
  }

  /** Stores small content (a manifest) under its digest unless already stored. Atomic. */
  async putContent(digest: Digest | string, content: Uint8Array): Promise<void> {
    const d = toDigest(digest)
    if ((await this.touch(d)) !== undefined) return // not statGlobal: see touch()
    await this.driver.putContent(blobDataPath(d), content)
  }

  async getContent(digest: Digest | string): Promise<Buffer> {
    const d = toDigest(digest)
    try {
      return await this.driver.getContent(blobDataPath(d))
    } catch (error) {
      if (error instanceof PathNotFoundError) throw new BlobUnknownError(d.value)
      throw error
    }
  }

  /**
   * Makes verified bytes at `sourcePath` the blob `digest`: a rename when new; when the blob is
   * already stored (content addressed, so identical) the source is left for the caller to delete.
   * Two uploads of the same blob racing here both succeed: rename replaces atomically.
   * The source is touched before the move (unless the move itself sets a new time), so a new blob
   * never shows an old modification time (an upload's last byte may be older than garbage
   * collection's grace period).
   */
  async adopt(sourcePath: string, digest: Digest | string): Promise<void> {
    const d = toDigest(digest)
    if ((await this.touch(d)) !== undefined) return // not statGlobal: see touch()
    if (!this.driver.capabilities.moveRefreshesModTime) await this.driver.touch(sourcePath)
    await this.driver.move(sourcePath, blobDataPath(d))
  }
}

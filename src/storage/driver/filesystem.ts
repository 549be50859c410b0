/**
 * StorageDriver on a local filesystem. `root` is `<datadir>/data`; the driver path
 * `/docker/registry/v2/...` maps to `<root>/docker/registry/v2/...`, as registry:2's filesystem
 * driver with `rootdirectory: /var/lib/registry` does.
 *
 * Atomicity: `putContent` and non-append writers write a hidden temporary file in the target's
 * folder (`.<name>.<uuid>.tmp`), fsync it, rename it over the target and fsync the folder, so a
 * crash (even `kill -9` or power loss) leaves the old content or the new one, never half of one.
 * Temporary names start with `.`, which no valid path segment of the registry layout does, so
 * `list` and `walk` never show them. Append writers (uploads) write in place: the file *is* the
 * upload's state and must survive a restart. With `private`, files are 0600 and folders 0700.
 */
import { randomUUID } from 'node:crypto'
import { constants, readFile as readFileCallback, stat as statCallback, type Stats } from 'node:fs'
import { link, lstat, mkdir, open, readdir, rename, rm, rmdir, stat, unlink, utimes, type FileHandle } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { Readable } from 'node:stream'
import {
  assertValidPath,
  InvalidOffsetError,
  PathNotFoundError,
  StorageDriverError,
  type FileInfo,
  type FileWriter,
  type LockOptions,
  type StorageDriver,
  type StoreLock,
} from './storage-driver.js'
import { takeStoreLock } from './store-lock.js'

// Links and manifests are read on every manifest request: the callback forms of readFile/stat
// cost less CPU per call than their fs/promises forms.
function readSmallFile(file: string): Promise<Buffer> {
  return new Promise((resolve, reject) => readFileCallback(file, (error, data) => (error ? reject(error) : resolve(data))))
}

function statFile(file: string): Promise<Stats> {
  return new Promise((resolve, reject) => statCallback(file, (error, stats) => (error ? reject(error) : resolve(stats))))
}

/**
 * Writes are gathered up to this size before one `writev`, so a socket chunk is not a syscall.
 * Every upload in flight holds up to two of these.
 */
const WRITE_BUFFER_BYTES = 256 * 1024

/**
 * A large upload starts an fdatasync in the background after every this many bytes: the disk
 * flushes while more bytes arrive instead of all at once in commit's fsync, and the page cache
 * never holds more than this much of one upload unflushed.
 */
const SYNC_EVERY_BYTES = 64 * 1024 * 1024
/**
 * One read(2) per chunk of a blob read, at most. A download holds two (one being sent, one read
 * ahead so the next read overlaps the TLS write).
 */
export const READ_CHUNK_BYTES = 256 * 1024
/**
 * The smallest chunk. A download starts with it and grows to READ_CHUNK_BYTES as the client takes
 * bytes (see `FileRangeReader.chunkBytes`): a client that stops reading early holds two small
 * chunks, not two large ones.
 */
export const MIN_READ_CHUNK_BYTES = 16 * 1024
/**
 * Read buffers handed back by `FileRangeReader.recycle`, kept for the next reads: one pool per
 * chunk size (powers of two), at most 16 MiB of 256 KiB buffers and 2 MiB of each smaller size.
 */
const readPools = new Map<number, Buffer[]>()

function poolLimit(size: number): number {
  return size === READ_CHUNK_BYTES ? 64 : (2 * 1024 * 1024) / size
}

/** The largest power of two between MIN_READ_CHUNK_BYTES and READ_CHUNK_BYTES that is <= `bytes`. */
function chunkSizeFor(bytes: number): number {
  let size = MIN_READ_CHUNK_BYTES
  while (size * 2 <= Math.min(bytes, READ_CHUNK_BYTES)) size *= 2
  return size
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error ? String((error as { code: unknown }).code) : undefined
}

function isMissing(error: unknown): boolean {
  const code = errorCode(error)
  return code === 'ENOENT' || code === 'ENOTDIR'
}

function isTemporaryName(name: string): boolean {
  return name.startsWith('.')
}

async function fsyncDirectory(directory: string): Promise<void> {
  let handle: FileHandle | undefined
  try {
    handle = await open(directory, constants.O_RDONLY)
    await handle.sync()
  } catch (error) {
    // Some filesystems (and some container overlays) refuse fsync on a directory; the rename is
    // still atomic there, only its durability across power loss is the filesystem's business.
    if (errorCode(error) !== 'EINVAL' && errorCode(error) !== 'EISDIR') throw error
  } finally {
    await handle?.close()
  }
}

function toInfo(path: string, stats: Stats): FileInfo {
  return { path, size: stats.isDirectory() ? 0 : stats.size, modTime: stats.mtime, isDir: stats.isDirectory() }
}

class FilesystemFileWriter implements FileWriter {
  #size: number
  #pending: Buffer[] = []
  #pendingBytes = 0
  #done = false
  /** The writev in progress: the next buffer fills while it runs, so receiving, hashing and the disk overlap. */
  #inflight: Promise<void> | undefined
  /** A background fdatasync started every SYNC_EVERY_BYTES, so commit's fsync finds little left to flush. */
  #syncing: Promise<void> | undefined
  #unsynced = 0

  constructor(
    private readonly handle: FileHandle,
    /** Where bytes go now: the target itself (append) or a temporary file (replace). */
    private readonly writePath: string,
    /** Set for replace writers: renamed over on commit. */
    private readonly targetPath: string | undefined,
    private readonly initialSize: number,
    private readonly created: boolean,
  ) {
    this.#size = initialSize
  }

  get size(): number {
    return this.#size
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.#done) throw new StorageDriverError('WRITER_CLOSED', 'write after commit, cancel or close')
    if (chunk.byteLength === 0) return
    this.#pending.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
    this.#pendingBytes += chunk.byteLength
    this.#size += chunk.byteLength
    if (this.#pendingBytes >= WRITE_BUFFER_BYTES) {
      // At most one write in flight and one buffer filling: memory stays at two buffers per writer,
      // and a failed write is thrown here (or by commit/close) before any later byte is written.
      await this.#settle()
      const flushing = this.#flush()
      this.#inflight = flushing
      flushing.catch(() => {}) // rethrown by #settle, never unhandled
      this.#unsynced += WRITE_BUFFER_BYTES
      if (this.#unsynced >= SYNC_EVERY_BYTES && this.#syncing === undefined) {
        this.#unsynced = 0
        const syncing = flushing.then(() => this.handle.datasync())
        this.#syncing = syncing
        syncing.then(
          () => {
            if (this.#syncing === syncing) this.#syncing = undefined
          },
          () => {}, // kept in #syncing: commit rethrows it
        )
      }
    }
  }

  /** Waits for the write in flight; rethrows its error. */
  async #settle(): Promise<void> {
    const inflight = this.#inflight
    if (inflight === undefined) return
    try {
      await inflight
    } finally {
      if (this.#inflight === inflight) this.#inflight = undefined
    }
  }

  async #flush(): Promise<void> {
    if (this.#pendingBytes === 0) return
    const buffers = this.#pending
    this.#pending = []
    this.#pendingBytes = 0
    let remaining = buffers
    // writev may write less than asked; loop until every byte is down.
    while (remaining.length > 0) {
      const { bytesWritten } = await this.handle.writev(remaining)
      let skip = bytesWritten
      const next: Buffer[] = []
      for (const buffer of remaining) {
        if (skip >= buffer.byteLength) {
          skip -= buffer.byteLength
        } else {
          next.push(skip > 0 ? buffer.subarray(skip) : buffer)
          skip = 0
        }
      }
      remaining = next
    }
  }

  async commit(): Promise<void> {
    this.#assertOpen()
    this.#done = true
    try {
      await this.#settle()
      await this.#flush()
      await this.#syncing
      await this.handle.sync()
    } finally {
      await this.handle.close()
    }
    if (this.targetPath !== undefined) {
      await rename(this.writePath, this.targetPath)
      await fsyncDirectory(dirname(this.targetPath))
    }
  }

  async cancel(): Promise<void> {
    if (this.#done) return
    this.#done = true
    this.#pending = []
    this.#pendingBytes = 0
    try {
      await this.#settle().catch(() => {}) // a write still landing would undo the truncate
      await this.#syncing?.catch(() => {})
      if (this.targetPath === undefined && !this.created) await this.handle.truncate(this.initialSize)
    } finally {
      await this.handle.close()
    }
    if (this.targetPath !== undefined || this.created) await unlink(this.writePath).catch(() => {})
  }

  async close(): Promise<void> {
    if (this.#done) return
    if (this.targetPath !== undefined) return this.cancel()
    this.#done = true
    try {
      await this.#settle()
      await this.#flush()
      await this.#syncing?.catch(() => {}) // close promises no durability; only let it finish
    } finally {
      await this.handle.close()
    }
  }

  #assertOpen(): void {
    if (this.#done) throw new StorageDriverError('WRITER_CLOSED', 'writer already committed, cancelled or closed')
  }
}

/**
 * Streams bytes [start, end) of an open file in chunks of `chunkBytes`, closing it at the end or
 * on destroy. Chunks are read into buffers from shared pools; a consumer that knows when it is
 * done with a chunk (the blob GET handler, once the socket has taken its bytes) hands it back with
 * `recycle`, and the next read reuses it, instead of a fresh allocation per chunk that lives until
 * V8 collects external memory. A consumer that never recycles (hashing an upload, a proxy) lets
 * its chunks be collected.
 */
export class FileRangeReader extends Readable {
  readonly #handle: FileHandle
  #position: number
  readonly #end: number
  /**
   * Pool buffers whose bytes were pushed and not yet handed back. Weak: a consumer that never
   * recycles (hashing a file, a mirror client reading the rest of a blob) must not make the
   * reader hold every chunk it read until it is done.
   */
  readonly #lent = new WeakMap<ArrayBufferLike, Buffer>()
  #chunkBytes = READ_CHUNK_BYTES

  constructor(handle: FileHandle, start: number, end: number) {
    // Read ahead by one chunk: the next read(2) runs while the consumer writes the current one.
    super({ highWaterMark: 1 })
    this.#handle = handle
    this.#position = start
    this.#end = end
  }

  /**
   * Size of the next reads: READ_CHUNK_BYTES unless set, rounded down to a power of two between
   * MIN_READ_CHUNK_BYTES and READ_CHUNK_BYTES. A consumer that sees how fast its client takes the
   * bytes (the blob GET handler) starts small and grows it.
   */
  get chunkBytes(): number {
    return this.#chunkBytes
  }

  set chunkBytes(bytes: number) {
    this.#chunkBytes = chunkSizeFor(bytes)
  }

  override _read(): void {
    const remaining = this.#end - this.#position
    if (remaining <= 0) {
      this.push(null)
      return
    }
    const size = this.#chunkBytes
    const buffer = readPools.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size)
    this.#handle.read(buffer, 0, Math.min(remaining, size), this.#position).then(
      ({ bytesRead }) => {
        if (this.destroyed || bytesRead === 0) {
          giveBack(buffer)
          // A file shorter than its size said: end here, as fs.ReadStream does.
          if (!this.destroyed) this.push(null)
          return
        }
        this.#position += bytesRead
        this.#lent.set(buffer.buffer, buffer)
        this.push(buffer.subarray(0, bytesRead))
      },
      (error: unknown) => {
        giveBack(buffer)
        this.destroy(error as Error)
      },
    )
  }

  /**
   * Hands back a chunk this reader produced, for the next reads to reuse. Call it only when
   * nothing refers to the chunk's bytes any more (its socket write completed); anything else is
   * ignored.
   */
  recycle(chunk: Uint8Array): void {
    const buffer = this.#lent.get(chunk.buffer)
    if (buffer === undefined) return
    this.#lent.delete(chunk.buffer)
    giveBack(buffer)
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // Chunks still lent may come back after this (their writes complete later): recycle takes them.
    this.#handle.close().then(
      () => callback(error),
      (closeError: unknown) => callback(error ?? (closeError as Error)),
    )
  }
}

function giveBack(buffer: Buffer): void {
  const size = buffer.byteLength
  if (size !== chunkSizeFor(size)) return
  let pool = readPools.get(size)
  if (pool === undefined) readPools.set(size, (pool = []))
  if (pool.length < poolLimit(size)) pool.push(buffer)
}

export class FilesystemDriver implements StorageDriver {
  readonly name = 'filesystem'
  readonly capabilities = { atomicRename: true, sharedAcrossHosts: false, moveRefreshesModTime: false }
  readonly #fileMode: number | undefined
  readonly #folderMode: number | undefined

  /** @param root the folder that holds `docker/registry/v2` (registry:2's `rootdirectory`). */
  constructor(
    readonly root: string,
    options: { private?: boolean } = {},
  ) {
    this.#fileMode = options.private ? 0o600 : undefined
    this.#folderMode = options.private ? 0o700 : undefined
  }

  #mkdir(folder: string): Promise<unknown> {
    return mkdir(folder, { recursive: true, ...(this.#folderMode !== undefined ? { mode: this.#folderMode } : {}) })
  }

  #resolve(path: string): string {
    assertValidPath(path)
    return path === '/' ? this.root : join(this.root, path)
  }

  #wrap(path: string, error: unknown): Error {
    if (error instanceof StorageDriverError) return error
    if (isMissing(error)) return new PathNotFoundError(path, { cause: error })
    return new StorageDriverError('IO_ERROR', `${this.name}: ${errorCode(error) ?? 'error'} on ${path}`, { cause: error })
  }

  async getContent(path: string): Promise<Buffer> {
    const file = this.#resolve(path)
    try {
      return await readSmallFile(file)
    } catch (error) {
      if (errorCode(error) === 'EISDIR') throw new PathNotFoundError(path, { cause: error })
      throw this.#wrap(path, error)
    }
  }

  async putContent(path: string, content: Uint8Array): Promise<void> {
    const writer = await this.writer(path)
    try {
      await writer.write(content)
      await writer.commit()
    } catch (error) {
      await writer.cancel().catch(() => {})
      throw this.#wrap(path, error)
    }
  }

  async reader(path: string, offset = 0, length?: number): Promise<Readable> {
    const file = this.#resolve(path)
    let handle: FileHandle
    try {
      handle = await open(file, 'r')
    } catch (error) {
      if (errorCode(error) === 'EISDIR') throw new PathNotFoundError(path, { cause: error })
      throw this.#wrap(path, error)
    }
    try {
      const stats = await handle.stat()
      if (stats.isDirectory()) throw new PathNotFoundError(path)
      if (!Number.isSafeInteger(offset) || offset < 0 || offset > stats.size) throw new InvalidOffsetError(path, offset)
      const end = length === undefined ? stats.size : Math.min(stats.size, offset + Math.max(0, length))
      if (end <= offset) {
        await handle.close()
        return Readable.from([])
      }
      return new FileRangeReader(handle, offset, end)
    } catch (error) {
      await handle.close().catch(() => {})
      throw this.#wrap(path, error)
    }
  }

  async writer(path: string, options: { append?: boolean } = {}): Promise<FileWriter> {
    const target = this.#resolve(path)
    try {
      await this.#mkdir(dirname(target))
      if (options.append) {
        let initialSize = 0
        let created = false
        try {
          initialSize = (await stat(target)).size
        } catch (error) {
          if (!isMissing(error)) throw error
          created = true
        }
        const handle = await open(target, 'a', this.#fileMode)
        return new FilesystemFileWriter(handle, target, undefined, initialSize, created)
      }
      const temporary = join(dirname(target), `.${basename(target)}.${randomUUID()}.tmp`)
      const handle = await open(temporary, 'wx', this.#fileMode)
      return new FilesystemFileWriter(handle, temporary, target, 0, true)
    } catch (error) {
      throw this.#wrap(path, error)
    }
  }

  /** A complete temporary file, then link(2), which fails with EEXIST when the target exists. */
  async putContentIfAbsent(path: string, content: Uint8Array): Promise<boolean> {
    const target = this.#resolve(path)
    const temporary = join(dirname(target), `.${basename(target)}.${randomUUID()}.tmp`)
    try {
      await this.#mkdir(dirname(target))
      const handle = await open(temporary, 'wx', this.#fileMode)
      try {
        await handle.writeFile(content)
        await handle.sync()
      } finally {
        await handle.close()
      }
      await link(temporary, target)
      await fsyncDirectory(dirname(target))
      return true
    } catch (error) {
      if (errorCode(error) === 'EEXIST') return false
      throw this.#wrap(path, error)
    } finally {
      await unlink(temporary).catch(() => {})
    }
  }

  lock(path: string, options?: LockOptions): Promise<StoreLock> {
    return takeStoreLock(this, path, options)
  }

  /** rmdir(2) fails on a folder that is not empty, so it never takes a file a writer just put there. */
  async removeEmptyDirectory(path: string): Promise<void> {
    await rmdir(this.#resolve(path)).catch(() => {})
  }

  async stat(path: string): Promise<FileInfo> {
    try {
      return toInfo(path, await statFile(this.#resolve(path)))
    } catch (error) {
      throw this.#wrap(path, error)
    }
  }

  async touch(path: string): Promise<void> {
    const file = this.#resolve(path)
    try {
      const now = new Date()
      await utimes(file, now, now)
    } catch (error) {
      throw this.#wrap(path, error)
    }
  }

  async list(path: string): Promise<string[]> {
    const directory = this.#resolve(path)
    try {
      const entries = await readdir(directory)
      const prefix = path === '/' ? '' : path
      return entries
        .filter(name => !isTemporaryName(name))
        .sort()
        .map(name => `${prefix}/${name}`)
    } catch (error) {
      throw this.#wrap(path, error)
    }
  }

  async move(sourcePath: string, destPath: string): Promise<void> {
    const source = this.#resolve(sourcePath)
    const dest = this.#resolve(destPath)
    try {
      await lstat(source)
    } catch (error) {
      throw this.#wrap(sourcePath, error)
    }
    try {
      await this.#mkdir(dirname(dest))
      // rename(2) replaces the destination atomically: readers see the old bytes or the new ones.
      await rename(source, dest)
      await fsyncDirectory(dirname(dest))
    } catch (error) {
      throw this.#wrap(destPath, error)
    }
  }

  async delete(path: string): Promise<void> {
    const target = this.#resolve(path)
    try {
      await lstat(target)
      // A writer may add a file to the subtree while it is removed (ENOTEMPTY): Node retries then.
      await rm(target, { recursive: true, force: true, maxRetries: 5, retryDelay: 20 })
    } catch (error) {
      throw this.#wrap(path, error)
    }
  }

  async walk(path: string, visit: (info: FileInfo) => Promise<'skip' | void> | 'skip' | void): Promise<void> {
    const start = await this.stat(path)
    if (!start.isDir) throw new PathNotFoundError(path)
    const descend = async (driverPath: string): Promise<void> => {
      let entries: string[]
      try {
        entries = await this.list(driverPath)
      } catch (error) {
        if (error instanceof PathNotFoundError) return // removed while walking
        throw error
      }
      for (const child of entries) {
        let info: FileInfo
        try {
          info = toInfo(child, await lstat(this.#resolve(child)))
        } catch (error) {
          if (isMissing(error)) continue
          throw this.#wrap(child, error)
        }
        const decision = await visit(info)
        if (info.isDir && decision !== 'skip') await descend(child)
      }
    }
    await descend(path)
  }
}

/**
 * The byte store under the registry, modelled on distribution's `storagedriver.StorageDriver`.
 *
 * Paths are absolute, '/'-separated and relative to the driver's root (e.g.
 * `/docker/registry/v2/blobs/sha256/ab/<hex>/data`). Every driver validates paths with
 * {@link assertValidPath} before touching anything, so no caller can escape the root.
 * Drivers hold no registry semantics: `storage/paths.ts` is the only place that knows the layout.
 */
import type { Readable } from 'node:stream'

export interface FileInfo {
  readonly path: string
  readonly size: number
  readonly modTime: Date
  readonly isDir: boolean
  /**
   * Optional: an identity of the object's current content that changes whenever it is rewritten
   * with other bytes (the S3 ETag). Lets a process tell "still the bytes I wrote" from "another
   * instance rewrote it" where several processes share the store. Undefined on drivers without one.
   */
  readonly etag?: string
}

/** Bytes written through a FileWriter become visible at their path only after `commit()`. */
export interface FileWriter {
  /** Bytes in the file so far, including bytes from before an `append` open. */
  readonly size: number
  /** Optional: after `commit()`/`close()`, the FileInfo `etag` of what this writer left at the path. */
  readonly etag?: string | undefined
  write(chunk: Uint8Array): Promise<void>
  /** Flushes (fsync) and makes the content visible at the path. */
  commit(): Promise<void>
  /** Discards what this writer wrote (and the whole file if it was new). */
  cancel(): Promise<void>
  /** Releases resources without committing; an append-mode file keeps what was written (resumable uploads). */
  close(): Promise<void>
}

/** What a driver can do, declared; callers ask these, never the driver's name or class. */
export interface StorageCapabilities {
  /**
   * `move` is one atomic rename that a concurrent `touch` cannot slip into: garbage collection
   * renames an item aside and re-checks it (gc.ts). False: it uses delete intents (gc-guard.ts).
   */
  readonly atomicRename: boolean
  /**
   * Processes on several machines may share the store (a bucket): a lock holder's pid says
   * nothing here, and shared state (certificates, locks) belongs in the store itself.
   */
  readonly sharedAcrossHosts: boolean
  /**
   * `move` gives the destination a modification time of now (S3: a copy is a new object), so a
   * caller that needs a fresh time on the moved object need not touch it first.
   */
  readonly moveRefreshesModTime: boolean
}

/**
 * Optional features of a stream from `reader()`; a consumer uses them when present. The
 * filesystem driver's reader has both; others return a plain Readable.
 */
export interface BlobReader extends Readable {
  /**
   * Size of the next reads. Setting it rounds down to a power of two between 16 KiB and 256 KiB,
   * so a consumer that sees how fast its client takes bytes starts small and grows it.
   */
  chunkBytes?: number
  /** Hands back a chunk this reader produced once nothing refers to its bytes; reads reuse it. */
  recycle?(chunk: Uint8Array): void
}

export interface LockOptions {
  /** Wait up to this long while another holder has the lock (default 0: reject at once with LockBusyError). */
  readonly waitMs?: number
  /** Stops waiting: rejects with the signal's reason. */
  readonly signal?: AbortSignal
  /** How often a waiter looks again (default 1 s). */
  readonly pollMs?: number
  /** How often the holder rewrites the lock to show it is alive (default 5 s). */
  readonly heartbeatMs?: number
  /** A lock not rewritten for this long belongs to a crashed holder and is taken over (default 60 s). */
  readonly staleMs?: number
}

/** A held lock (see StorageDriver.lock). */
export interface StoreLock {
  /** The store's clock when the lock was taken (the lock object's modification time). */
  readonly storeTime: Date
  /** Aborted when the lock turns out to be someone else's (taken over as stale): the holder must stop. */
  readonly lost: AbortSignal
  /** Re-reads the lock; false (and `lost` aborted) when it is no longer ours. */
  stillHeld(): Promise<boolean>
  /** Deletes the lock if it is still ours; idempotent. */
  release(): Promise<void>
}

export interface StorageDriver {
  /** For messages only: what the driver is depends on `capabilities`. */
  readonly name: string
  readonly capabilities: StorageCapabilities
  /** Whole content of a small object. Rejects with PathNotFoundError. */
  getContent(path: string): Promise<Buffer>
  /** Atomically replaces the object (temp file + fsync + rename on filesystems). */
  putContent(path: string, content: Uint8Array): Promise<void>
  /**
   * Creates the object only if nothing is at `path`, atomically across every process sharing the
   * store; resolves false when something already is (S3 `If-None-Match: *`, link(2) on files).
   */
  putContentIfAbsent(path: string, content: Uint8Array): Promise<boolean>
  /**
   * Takes the lock object at `path`, across every process sharing the store (one implementation
   * for all drivers: driver/store-lock.ts). Rejects with LockBusyError when another holder has
   * it past `waitMs`. The holder rewrites it every `heartbeatMs`; a lock older than `staleMs`, or
   * on a store not shared across hosts one whose holder's process is gone, is taken over.
   */
  lock(path: string, options?: LockOptions): Promise<StoreLock>
  /**
   * Removes the folder at `path` if it is empty, and never anything else (a writer may just have
   * put a file in it). A no-op on stores without folders of their own (S3, in-memory).
   */
  removeEmptyDirectory(path: string): Promise<void>
  /**
   * Optional: discards writes begun before `olderThan` that never finished (S3 multipart uploads
   * left by a crashed or killed process: invisible, but billed). Resolves with how many. Upload
   * purging calls it; filesystems have nothing of the kind (temp files are the writers' own).
   */
  abortIncompleteWrites?(olderThan: Date): Promise<number>
  /**
   * Optional: a URL a client may GET the object's bytes from directly (a presigned S3 URL), or
   * undefined to serve them through the registry. Only drivers configured for it return one.
   */
  redirectUrl?(path: string): Promise<string | undefined>
  /**
   * A stream of the object from `offset`, at most `length` bytes (all to the end when omitted).
   * Rejects with PathNotFoundError, or InvalidOffsetError past the end.
   */
  reader(path: string, offset?: number, length?: number): Promise<BlobReader>
  /**
   * A writer. Without `append` the bytes become visible at `path` only on `commit()` (atomic
   * replace). With `append` it continues the file in place (created if missing): the file is
   * resumable upload state, so bytes written before `close()` stay there across restarts, and
   * `cancel()` cuts the file back to its size at open.
   */
  writer(path: string, options?: { append?: boolean }): Promise<FileWriter>
  /** Rejects with PathNotFoundError. */
  stat(path: string): Promise<FileInfo>
  /**
   * Optional: `stat` of a file only, where telling a missing file from a directory costs a
   * request of its own (S3: a HEAD, without `stat`'s listing after a 404). Rejects with
   * PathNotFoundError when no file is at `path`, a directory included. Use `statFile()` below.
   */
  statFile?(path: string): Promise<FileInfo>
  /**
   * Sets an existing object's modification time to now without touching its bytes. Rejects with
   * PathNotFoundError when the object is missing. Garbage collection relies on it: a writer that
   * re-uses a stored blob or link touches it first, and a failed touch means "not there" (see
   * storage/gc.ts).
   */
  touch(path: string): Promise<void>
  /** Full paths of the direct children of a directory. Rejects with PathNotFoundError. */
  list(path: string): Promise<string[]>
  /** Moves an object, replacing any at the destination. Rejects with PathNotFoundError for a missing source. */
  move(sourcePath: string, destPath: string): Promise<void>
  /** Deletes an object or a whole subtree. Rejects with PathNotFoundError. */
  delete(path: string): Promise<void>
  /** Visits every file and directory under `path` (depth first). Return 'skip' from a directory to not descend. */
  walk(path: string, visit: (info: FileInfo) => Promise<'skip' | void> | 'skip' | void): Promise<void>
}

export class StorageDriverError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
  }
}

export class PathNotFoundError extends StorageDriverError {
  constructor(
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super('PATH_NOT_FOUND', `path not found: ${path}`, options)
  }
}

/** The file at `path` (`StorageDriver.statFile`, or `stat` where a driver lacks it); a directory is PathNotFoundError. */
export async function statFile(driver: StorageDriver, path: string): Promise<FileInfo> {
  if (driver.statFile !== undefined) return driver.statFile(path)
  const info = await driver.stat(path)
  if (info.isDir) throw new PathNotFoundError(path)
  return info
}

/** `statFile`, or undefined when no file is at `path` (a directory included). */
export async function statFileOrUndefined(driver: StorageDriver, path: string): Promise<FileInfo | undefined> {
  try {
    return await statFile(driver, path)
  } catch (error) {
    if (error instanceof PathNotFoundError) return undefined
    throw error
  }
}

/** For `.catch` on a delete or move: a path already gone is what the caller wanted; anything else is rethrown. */
export function ignoreMissing(error: unknown): void {
  if (!(error instanceof PathNotFoundError)) throw error
}

/** Another holder has the lock; `holder` describes it when its record is readable. */
export class LockBusyError extends StorageDriverError {
  constructor(
    readonly path: string,
    readonly holder: string | undefined,
  ) {
    super('LOCK_BUSY', `${path} is locked${holder === undefined ? '' : ` by ${holder}`}`)
  }
}

export class InvalidPathError extends StorageDriverError {
  constructor(readonly path: string) {
    super('INVALID_PATH', `invalid path: ${JSON.stringify(path)}`)
  }
}

export class InvalidOffsetError extends StorageDriverError {
  constructor(
    readonly path: string,
    readonly offset: number,
  ) {
    super('INVALID_OFFSET', `invalid offset ${offset} for ${path}`)
  }
}

const segment = /^[A-Za-z0-9@._-]+$/

/** One rule for every driver: absolute, no empty, '.' or '..' segments, only safe characters. */
export function assertValidPath(path: string): void {
  if (!path.startsWith('/') || path.length > 4096) throw new InvalidPathError(path)
  if (path === '/') return
  for (const part of path.slice(1).split('/')) {
    if (part === '' || part === '.' || part === '..' || !segment.test(part)) throw new InvalidPathError(path)
  }
}

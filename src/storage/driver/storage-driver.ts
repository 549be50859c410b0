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

export interface StorageDriver {
  readonly name: string
  /** Whole content of a small object. Rejects with PathNotFoundError. */
  getContent(path: string): Promise<Buffer>
  /** Atomically replaces the object (temp file + fsync + rename on filesystems). */
  putContent(path: string, content: Uint8Array): Promise<void>
  /**
   * Optional: creates the object only if nothing is at `path`, atomically across every process
   * sharing the store; resolves false when something already is. The lock primitive for several
   * instances on one store (the S3 driver sends `If-None-Match: *`). Drivers that cannot do it
   * leave it out rather than emulate it with a racy stat-then-put.
   */
  putContentIfAbsent?(path: string, content: Uint8Array): Promise<boolean>
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
  reader(path: string, offset?: number, length?: number): Promise<Readable>
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
  constructor(readonly path: string, options?: { cause?: unknown }) {
    super('PATH_NOT_FOUND', `path not found: ${path}`, options)
  }
}

/** For `.catch` on a delete or move: a path already gone is what the caller wanted; anything else is rethrown. */
export function ignoreMissing(error: unknown): void {
  if (!(error instanceof PathNotFoundError)) throw error
}

export class InvalidPathError extends StorageDriverError {
  constructor(readonly path: string) {
    super('INVALID_PATH', `invalid path: ${JSON.stringify(path)}`)
  }
}

export class InvalidOffsetError extends StorageDriverError {
  constructor(readonly path: string, readonly offset: number) {
    super('INVALID_OFFSET', `invalid offset ${offset} for ${path}`)
  }
}

const segment = /^[A-Za-z0-9._-]+$/

/** One rule for every driver: absolute, no empty, '.' or '..' segments, only safe characters. */
export function assertValidPath(path: string): void {
  if (!path.startsWith('/') || path.length > 4096) throw new InvalidPathError(path)
  if (path === '/') return
  for (const part of path.slice(1).split('/')) {
    if (part === '' || part === '.' || part === '..' || !segment.test(part)) throw new InvalidPathError(path)
  }
}

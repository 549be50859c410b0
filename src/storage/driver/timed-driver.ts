/**
 * A StorageDriver that times every call of the driver it wraps, as distribution's `base.Base` does
 * for its `registry_storage_action_seconds{driver, action}` histogram. It is what it wraps: the same
 * `name`, `capabilities` and optional methods (present only when the inner driver has them, so
 * callers that ask `driver.redirectUrl?.(…)` see no difference). The composition root wraps the
 * driver only when metrics are on.
 *
 * What a time covers: the call until its promise settles, failures included (distribution does the
 * same). For `reader` and `writer` that is the open only, not the bytes streamed afterwards; for
 * `walk` it includes the visitor's own work, since the driver awaits it; for `lock` the wait for a
 * busy lock.
 */
import { performance } from 'node:perf_hooks'
import type { BlobReader, FileInfo, FileWriter, LockOptions, StorageDriver, StoreLock } from './storage-driver.js'

/** Action label values: distribution's names where it has the call, the same style for ours. */
export const STORAGE_ACTIONS = [
  'GetContent',
  'PutContent',
  'PutContentIfAbsent',
  'Stat',
  'List',
  'Move',
  'Delete',
  'Walk',
  'Touch',
  'Reader',
  'Writer',
  'Lock',
  'URLFor',
] as const
export type StorageAction = (typeof STORAGE_ACTIONS)[number]

/** Where one action's durations go (a histogram child bound to its labels). */
export interface StorageTimer {
  observe(seconds: number): void
}

export type StorageTimers = Readonly<Record<StorageAction, StorageTimer>>

export class TimedDriver implements StorageDriver {
  readonly name: string
  readonly capabilities: StorageDriver['capabilities']
  readonly inner: StorageDriver
  readonly abortIncompleteWrites?: (olderThan: Date) => Promise<number>
  readonly redirectUrl?: (path: string) => Promise<string | undefined>
  readonly statFile?: (path: string) => Promise<FileInfo>
  readonly #timers: StorageTimers

  constructor(inner: StorageDriver, timers: StorageTimers) {
    this.inner = inner
    this.name = inner.name
    this.capabilities = inner.capabilities
    this.#timers = timers
    if (inner.abortIncompleteWrites) this.abortIncompleteWrites = inner.abortIncompleteWrites.bind(inner)
    if (inner.redirectUrl) {
      const redirectUrl = inner.redirectUrl.bind(inner)
      this.redirectUrl = path => this.#time('URLFor', () => redirectUrl(path))
    }
    if (inner.statFile) {
      const statFile = inner.statFile.bind(inner)
      this.statFile = path => this.#time('Stat', () => statFile(path))
    }
  }

  getContent(path: string): Promise<Buffer> {
    return this.#time('GetContent', () => this.inner.getContent(path))
  }

  putContent(path: string, content: Uint8Array): Promise<void> {
    return this.#time('PutContent', () => this.inner.putContent(path, content))
  }

  putContentIfAbsent(path: string, content: Uint8Array): Promise<boolean> {
    return this.#time('PutContentIfAbsent', () => this.inner.putContentIfAbsent(path, content))
  }

  lock(path: string, options?: LockOptions): Promise<StoreLock> {
    return this.#time('Lock', () => this.inner.lock(path, options))
  }

  removeEmptyDirectory(path: string): Promise<void> {
    return this.inner.removeEmptyDirectory(path)
  }

  reader(path: string, offset?: number, length?: number): Promise<BlobReader> {
    return this.#time('Reader', () => this.inner.reader(path, offset, length))
  }

  writer(path: string, options?: { append?: boolean }): Promise<FileWriter> {
    return this.#time('Writer', () => this.inner.writer(path, options))
  }

  stat(path: string): Promise<FileInfo> {
    return this.#time('Stat', () => this.inner.stat(path))
  }

  touch(path: string): Promise<void> {
    return this.#time('Touch', () => this.inner.touch(path))
  }

  list(path: string): Promise<string[]> {
    return this.#time('List', () => this.inner.list(path))
  }

  move(sourcePath: string, destPath: string): Promise<void> {
    return this.#time('Move', () => this.inner.move(sourcePath, destPath))
  }

  delete(path: string): Promise<void> {
    return this.#time('Delete', () => this.inner.delete(path))
  }

  walk(path: string, visit: (info: FileInfo) => Promise<'skip' | void> | 'skip' | void): Promise<void> {
    return this.#time('Walk', () => this.inner.walk(path, visit))
  }

  async #time<T>(action: StorageAction, call: () => Promise<T>): Promise<T> {
    const started = performance.now()
    try {
      return await call()
    } finally {
      this.#timers[action].observe((performance.now() - started) / 1000)
    }
  }
}

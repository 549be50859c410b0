/**
 * Garbage collection on stores without an atomic rename (S3): the *delete intent* protocol, both
 * halves. gc.ts holds the collector's half; this file holds the writers' half (a driver wrapper
 * that registry-store.ts puts around such drivers) and what both share.
 *
 * Why: on the filesystem the collector renames an unmarked item aside and re-checks its time
 * (gc.ts), so a writer's touch can never slip in between "still old?" and "delete". S3 has no
 * rename (copy + delete) and no conditional delete a touch could trip: a touch is a copy onto
 * itself, which keeps the ETag, so `If-Match` could not see it anyway, and Ceph RGW 16 ignores
 * `If-Match` on DeleteObject (probed: a wrong ETag still deletes). A plain "stat, then delete"
 * would lose a blob that a push re-used in between.
 *
 * THE RULE (drivers without `capabilities.atomicRename`, e.g. S3):
 *   Collector, per unmarked item P, while holding the GC lock (gc-lock.ts):
 *     g1  write the intent object I(P) = /berth/gc/intents/<P>
 *     g2  stat P: gone → done; modified at or after the cut-off → keep it
 *     g3  delete P, but only if less than ITEM_DEADLINE_MS passed since before g1 and the lock is
 *         still ours
 *     g4  delete I(P)
 *   Writer, for every touch of a blob's `data` or a link, and every write of a `_layers` or
 *   revision `link` (what the collector deletes and writers re-use or re-create; see
 *   `isGuardedTouch`, `isGuardedWrite`; a blob's `data` is written only after a touch found it
 *   missing, and one run deletes it at most once, so that write needs no guard):
 *     w1  touch P (missing → "not stored", as before) or write P
 *     w2  read I(P): present and not stale → wait a little and start again at w1
 *     w3  stat P: missing → a touch reports "not stored"; a write is done again
 *   Why it is safe: suppose the collector deletes P (g3) while a writer believes P is there
 *   (its w3 saw P). Then w3 < g3. If w2 came before g1, then w1 < g1 < g2, so g2 saw P's time
 *   from w1 or later, which is after the cut-off (the run's start minus the grace period) as long
 *   as the writer's work from its touch to its commit (a manifest PUT: touch the layers, write the
 *   revision link) takes less than the grace period, the same assumption the filesystem rule
 *   makes, and why `--grace 0` is only for stores nobody pushes to: the collector kept P.
 *   If w2 came between g1 and g4, it saw the intent and waited (unless stale: then more than
 *   INTENT_STALE_MS of store time lay between g1 and w1 < g3, and the collector never deletes
 *   later than ITEM_DEADLINE_MS after g1). If w2 came after g4, then g3 < g4 < w2 < w3 and w3
 *   found P missing. Every case contradicts, so nothing a writer relies on is deleted.
 *   (A touch whose server-side copy is in flight across g3 can write P again: then P is there,
 *   as the writer believes, and only the run's report counts its bytes as freed.)
 *   Times compared are the store's own (LastModified), never two machines' clocks; the run's
 *   start is the lock object's LastModified (gc-lock.ts), S3's one-second resolution rounds both
 *   down alike.
 * Remaining window, stated honestly: a DELETE request that the network delays by more than
 *   INTENT_STALE_MS − ITEM_DEADLINE_MS (20 s) after the collector sent it could still land after a
 *   writer judged the intent stale. And every instance on the bucket must run a Berth with this
 *   guard: registry:2, or an older Berth, writing to the same bucket while GC runs is not covered.
 * Cost for writers: one GET of the intent (a 404 when no GC runs) and one HEAD per guarded call.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { PathNotFoundError, type FileInfo, type FileWriter, type LockOptions, type StorageDriver, type StoreLock } from './driver/storage-driver.js'
import { BLOBS_ROOT, REPOSITORIES_ROOT } from './paths.js'

/** Where the collector keeps its lock and intents: beside `docker/registry/v2`, which registry:2 never reads. */
export const GC_STATE_ROOT = '/berth/gc'
export const GC_INTENTS_ROOT = `${GC_STATE_ROOT}/intents`
/** The collector never deletes an item later than this after writing its intent. */
export const ITEM_DEADLINE_MS = 10_000
/** Writers ignore an intent this much older (store time) than their own write: a crashed collector's. */
export const INTENT_STALE_MS = 30_000

/** Whether garbage collection on this driver uses delete intents (true) or atomic renames (false). */
export function usesDeleteIntents(driver: StorageDriver): boolean {
  return !driver.capabilities.atomicRename
}

export function intentPath(path: string): string {
  return `${GC_INTENTS_ROOT}${path}`
}

const guardedWrite = new RegExp(`^${REPOSITORIES_ROOT}/.+/(_layers|_manifests/revisions)/[^/]+/[^/]+/link$`)
const blobData = new RegExp(`^${BLOBS_ROOT}/[^/]+/[^/]+/[^/]+/data$`)

/** The writes the collector may delete and writers create again: layer links and revision links. */
export function isGuardedWrite(path: string): boolean {
  return guardedWrite.test(path)
}

/** The touches that re-use something the collector may delete: blob data and links (not upload state). */
export function isGuardedTouch(path: string): boolean {
  return blobData.test(path) || guardedWrite.test(path)
}

/** Wraps drivers that need the writers' half of the rule; others are returned as they are. */
export function guardForGc(driver: StorageDriver): StorageDriver {
  if (!usesDeleteIntents(driver) || driver instanceof GcGuardedDriver) return driver
  return new GcGuardedDriver(driver)
}

/** The writers' half (see the file comment): every other call goes straight to the driver. */
export class GcGuardedDriver implements StorageDriver {
  readonly name: string
  readonly capabilities: StorageDriver['capabilities']
  readonly inner: StorageDriver
  readonly abortIncompleteWrites?: (olderThan: Date) => Promise<number>
  readonly redirectUrl?: (path: string) => Promise<string | undefined>
  readonly statFile?: (path: string) => Promise<FileInfo>

  constructor(inner: StorageDriver) {
    this.inner = inner
    this.name = inner.name
    this.capabilities = inner.capabilities
    if (inner.abortIncompleteWrites) this.abortIncompleteWrites = inner.abortIncompleteWrites.bind(inner)
    if (inner.redirectUrl) this.redirectUrl = inner.redirectUrl.bind(inner)
    if (inner.statFile) this.statFile = inner.statFile.bind(inner)
  }

  getContent(path: string): Promise<Buffer> {
    return this.inner.getContent(path)
  }

  async putContent(path: string, content: Uint8Array): Promise<void> {
    if (!isGuardedWrite(path)) return this.inner.putContent(path, content)
    await this.#settle(path, () => this.inner.putContent(path, content), 'write')
  }

  putContentIfAbsent(path: string, content: Uint8Array): Promise<boolean> {
    return this.inner.putContentIfAbsent(path, content)
  }

  lock(path: string, options?: LockOptions): Promise<StoreLock> {
    return this.inner.lock(path, options)
  }

  removeEmptyDirectory(path: string): Promise<void> {
    return this.inner.removeEmptyDirectory(path)
  }

  async touch(path: string): Promise<void> {
    if (!isGuardedTouch(path)) return this.inner.touch(path)
    await this.#settle(path, () => this.inner.touch(path), 'touch')
  }

  reader(path: string, offset?: number, length?: number) {
    return this.inner.reader(path, offset, length)
  }

  writer(path: string, options?: { append?: boolean }): Promise<FileWriter> {
    return this.inner.writer(path, options)
  }

  stat(path: string): Promise<FileInfo> {
    return this.inner.stat(path)
  }

  list(path: string): Promise<string[]> {
    return this.inner.list(path)
  }

  move(sourcePath: string, destPath: string): Promise<void> {
    return this.inner.move(sourcePath, destPath)
  }

  delete(path: string): Promise<void> {
    return this.inner.delete(path)
  }

  walk(path: string, visit: (info: FileInfo) => Promise<'skip' | void> | 'skip' | void): Promise<void> {
    return this.inner.walk(path, visit)
  }

  /** w1, w2, w3 of the rule, repeated while a live intent names `path`. */
  async #settle(path: string, act: () => Promise<void>, kind: 'touch' | 'write'): Promise<void> {
    let pause = 25
    for (let attempt = 0; ; attempt++) {
      await act() // w1 (a touch of a missing object rejects with PathNotFoundError: "not stored")
      const intent = await this.#intent(path) // w2
      const info = await this.inner.stat(path).catch((error: unknown) => {
        if (error instanceof PathNotFoundError) return undefined
        throw error
      }) // w3
      if (info === undefined) {
        if (kind === 'touch') throw new PathNotFoundError(path)
        if (attempt > 50) throw new PathNotFoundError(path) // cannot happen more than once per GC run
        continue // deleted by a collector after our write: write again
      }
      if (intent === undefined || info.modTime.getTime() - intent.getTime() > INTENT_STALE_MS) return
      await sleep(pause)
      pause = Math.min(pause * 2, 500)
    }
  }

  /** The store time of the intent for `path`, or undefined when there is none (one GET, a 404 normally). */
  async #intent(path: string): Promise<Date | undefined> {
    const intent = intentPath(path)
    try {
      await this.inner.getContent(intent)
    } catch (error) {
      if (error instanceof PathNotFoundError) return undefined
      throw error
    }
    try {
      return (await this.inner.stat(intent)).modTime
    } catch (error) {
      if (error instanceof PathNotFoundError) return undefined // removed meanwhile
      throw error
    }
  }
}

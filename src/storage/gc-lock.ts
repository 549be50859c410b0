/**
 * The garbage collection lock: at most one run per store, across processes and machines.
 *
 * - Filesystem: `<root>/.berth-gc.lock` created with O_EXCL, holding the pid; a lock whose
 *   process is gone is taken over (one machine shares a datadir, so a pid says it all).
 * - Every other driver (S3, shared by instances on several machines): the object
 *   `/berth/gc/lock`, created with `putContentIfAbsent` (S3 `If-None-Match: *`), so exactly one
 *   run creates it. The holder rewrites it every `heartbeatMs`; a lock not rewritten for `staleMs`
 *   (its holder crashed) is deleted by the next run after re-reading it (only if it is still the
 *   same record), and created again, conditionally. Ceph 16 has no conditional DELETE, so two
 *   runs taking over the same stale lock at the same instant could both delete and one create;
 *   the holder re-reads the lock at every heartbeat and before every delete it makes (gc.ts), and
 *   a run that finds the lock is no longer its own stops (`lost` aborts): the overlap is bounded
 *   by one heartbeat. Staleness compares the holder's `updated` with this machine's clock, so
 *   clocks must agree to well within `staleMs` (default 60 s).
 * - In one process, an in-memory set keeps two runs apart on either.
 *
 * `startedAt` is the store's own clock where it has one (the lock object's LastModified), which
 * the sweep compares with the LastModified of what writers touched (see gc-guard.ts).
 */
import { constants } from 'node:fs'
import { randomUUID } from 'node:crypto'
import { mkdir, open, readFile, unlink } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { FilesystemDriver } from './driver/filesystem.js'
import { ignoreMissing, PathNotFoundError, StorageDriverError, type StorageDriver } from './driver/storage-driver.js'
import { GC_STATE_ROOT } from './gc-guard.js'
import { parseLockRecord, type LockRecord } from './lock-record.js'

export const GC_LOCK_PATH = `${GC_STATE_ROOT}/lock`

/** Thrown when another garbage collection holds the store. */
export class GcBusyError extends Error {
  readonly code = 'GC_BUSY'
}

export interface GcLockOptions {
  readonly heartbeatMs?: number
  readonly staleMs?: number
  /** Wait up to this long for a run holding the store to finish (default 0: refuse at once). */
  readonly waitMs?: number
}

export interface GcLock {
  /** The store's time when the lock was taken (S3: the lock object's LastModified); undefined on the filesystem. */
  readonly storeTime: Date | undefined
  /** Aborted when the lock turns out to be someone else's (taken over): the run must stop. */
  readonly lost: AbortSignal
  /** Re-reads the lock; false when it is no longer ours. Always true on the filesystem. */
  stillHeld(): Promise<boolean>
  release(): Promise<void>
}

const inProcess = new Set<unknown>()

/** Takes the lock, waiting up to `waitMs` while another run holds it; then rejects with GcBusyError. */
export async function takeGcLock(driver: StorageDriver, options: GcLockOptions = {}): Promise<GcLock> {
  const deadline = Date.now() + (options.waitMs ?? 0)
  for (;;) {
    try {
      return await takeGcLockOnce(driver, options)
    } catch (error) {
      if (!(error instanceof GcBusyError) || Date.now() >= deadline) throw error
    }
    await sleep(Math.min(500, Math.max(0, deadline - Date.now())))
  }
}

async function takeGcLockOnce(driver: StorageDriver, options: GcLockOptions): Promise<GcLock> {
  const key = driver instanceof FilesystemDriver ? resolve(driver.root) : driver
  if (inProcess.has(key)) throw new GcBusyError('a garbage collection is already running on this store (in this process)')
  inProcess.add(key)
  try {
    const lock = driver instanceof FilesystemDriver ? await takeFileLock(driver.root) : driver.name === 'in-memory' ? memoryLock() : await takeStoreLock(driver, options)
    return {
      ...lock,
      release: async () => {
        inProcess.delete(key)
        await lock.release()
      },
    }
  } catch (error) {
    inProcess.delete(key)
    throw error
  }
}

function memoryLock(): GcLock {
  return { storeTime: undefined, lost: new AbortController().signal, stillHeld: async () => true, release: async () => {} }
}

async function takeFileLock(root: string): Promise<GcLock> {
  const file = join(root, '.berth-gc.lock')
  await mkdir(root, { recursive: true })
  await takeLockFile(file)
  return {
    storeTime: undefined,
    lost: new AbortController().signal,
    stillHeld: async () => true,
    release: async () => {
      await unlink(file).catch(() => {})
    },
  }
}

async function takeLockFile(file: string): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600)
      await handle.writeFile(`${process.pid}\n`)
      await handle.close()
      return
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
    const pid = Number.parseInt((await readFile(file, 'utf8').catch(() => '')).trim(), 10)
    if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
      throw new GcBusyError(`another garbage collection is running on this datadir (pid ${pid}; lock file ${file})`)
    }
    await unlink(file).catch(() => {}) // stale: its process is gone
  }
  throw new GcBusyError(`could not take the garbage collection lock ${file}`)
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

async function readRecord(driver: StorageDriver): Promise<{ record: LockRecord | undefined; raw: string } | undefined> {
  let raw: string
  try {
    raw = (await driver.getContent(GC_LOCK_PATH)).toString('utf8')
  } catch (error) {
    if (error instanceof PathNotFoundError) return undefined
    throw error
  }
  // A corrupt record (undefined) is judged by the object's time.
  return { record: parseLockRecord(raw), raw }
}

async function takeStoreLock(driver: StorageDriver, options: GcLockOptions): Promise<GcLock> {
  if (driver.putContentIfAbsent === undefined) {
    throw new StorageDriverError('UNSUPPORTED', `the ${driver.name} driver cannot create objects conditionally, which the garbage collection lock needs`)
  }
  const heartbeatMs = options.heartbeatMs ?? 5_000
  const staleMs = options.staleMs ?? 60_000
  const nonce = randomUUID()
  const created = Date.now()
  const record = (): LockRecord => ({ nonce, host: hostname(), pid: process.pid, created, updated: Date.now() })
  let taken = false
  for (let attempt = 0; attempt < 2 && !taken; attempt++) {
    if (await driver.putContentIfAbsent(GC_LOCK_PATH, Buffer.from(JSON.stringify(record())))) {
      taken = true
      break
    }
    const seen = await readRecord(driver)
    if (seen === undefined) continue // released meanwhile: try again
    const updated = seen.record?.updated ?? (await driver.stat(GC_LOCK_PATH).catch(() => undefined))?.modTime.getTime() ?? 0
    if (Date.now() - updated < staleMs) {
      const who = seen.record !== undefined ? ` (${seen.record.host}, pid ${seen.record.pid}, since ${new Date(seen.record.created).toISOString()})` : ''
      throw new GcBusyError(`another garbage collection is running on this store${who}; lock ${GC_LOCK_PATH}`)
    }
    // Stale: delete it only if it is still the same record, then create ours conditionally.
    const again = await readRecord(driver)
    if (again !== undefined && again.raw === seen.raw) await driver.delete(GC_LOCK_PATH).catch(ignoreMissing)
  }
  if (!taken) throw new GcBusyError(`could not take the garbage collection lock ${GC_LOCK_PATH}`)

  const lost = new AbortController()
  const stillHeld = async (): Promise<boolean> => {
    const current = await readRecord(driver)
    const ours = current?.record?.nonce === nonce
    if (!ours && !lost.signal.aborted) lost.abort(new GcBusyError('the garbage collection lock was taken over by another run; stopping'))
    return ours
  }
  const storeTime = (await driver.stat(GC_LOCK_PATH)).modTime
  // A takeover racing ours (see the file comment) shows up here at the latest.
  if (!(await stillHeld())) throw new GcBusyError(`another garbage collection took the lock ${GC_LOCK_PATH} at the same moment`)
  let released = false
  let beating: Promise<void> | undefined
  const heartbeat = setInterval(() => {
    if (beating !== undefined) return
    beating = (async () => {
      if (released || !(await stillHeld()) || released) return
      await driver.putContent(GC_LOCK_PATH, Buffer.from(JSON.stringify(record())))
    })()
      .catch(() => {})
      .finally(() => {
        beating = undefined
      })
  }, heartbeatMs)
  heartbeat.unref()
  return {
    storeTime,
    lost: lost.signal,
    stillHeld,
    release: async () => {
      if (released) return
      released = true
      clearInterval(heartbeat)
      await beating
      // Only our own lock: after a takeover it belongs to someone else.
      if ((await readRecord(driver).catch(() => undefined))?.record?.nonce === nonce) await driver.delete(GC_LOCK_PATH).catch(ignoreMissing)
    },
  }
}

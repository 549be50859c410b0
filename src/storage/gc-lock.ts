/**
 * The garbage collection lock: at most one run per store, across processes and machines. It is
 * the driver's lock (`StorageDriver.lock`, driver/store-lock.ts) on `/berth/gc/lock`, beside
 * `docker/registry/v2`. On stores without an atomic rename the collector re-reads it before every
 * delete (gc.ts), and a run whose lock was taken over stops (`lost`).
 *
 * `storeTime` is the store's own clock (the lock object's modification time), which the sweep
 * compares with the modification times of what writers touched (see gc-guard.ts).
 */
import { LockBusyError, type LockOptions, type StorageDriver, type StoreLock } from './driver/storage-driver.js'
import { GC_STATE_ROOT } from './gc-guard.js'

export const GC_LOCK_PATH = `${GC_STATE_ROOT}/lock`

/** Thrown when another garbage collection holds the store. */
export class GcBusyError extends Error {
  readonly code = 'GC_BUSY'
}

export type GcLockOptions = Pick<LockOptions, 'heartbeatMs' | 'staleMs' | 'waitMs'>

export type GcLock = StoreLock

/** Takes the lock, waiting up to `waitMs` while another run holds it; then rejects with GcBusyError. */
export async function takeGcLock(driver: StorageDriver, options: GcLockOptions = {}): Promise<GcLock> {
  let lock: StoreLock
  try {
    lock = await driver.lock(GC_LOCK_PATH, { pollMs: 500, ...options })
  } catch (error) {
    if (!(error instanceof LockBusyError)) throw error
    const who = error.holder === undefined ? '' : ` (${error.holder})`
    throw new GcBusyError(`another garbage collection is running on this store${who}; lock ${GC_LOCK_PATH}`, { cause: error })
  }
  const lost = new AbortController()
  lock.lost.addEventListener('abort', () => lost.abort(new GcBusyError('the garbage collection lock was taken over by another run; stopping')), { once: true })
  return {
    storeTime: lock.storeTime,
    lost: lost.signal,
    stillHeld: () => lock.stillHeld(),
    async release() {
      await lock.release()
      // A datadir keeps folders: leave none behind.
      await driver.removeEmptyDirectory(GC_STATE_ROOT)
      await driver.removeEmptyDirectory(GC_STATE_ROOT.slice(0, GC_STATE_ROOT.lastIndexOf('/')))
    },
  }
}

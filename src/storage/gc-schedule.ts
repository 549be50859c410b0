/**
 * Garbage collection on a timer inside `berth serve` (`--gc-interval`). Each run is the same as
 * `berth gc` without --delete-untagged: only blobs that no manifest references and that nobody
 * wrote or re-used within the grace period go (see gc.ts for why that is safe while serving).
 * Runs never overlap; a run that finds another one holding the store (a `berth gc` in a shell, or
 * on S3 another instance's timer: the lock is in the bucket, gc-lock.ts) is skipped until the next
 * tick. Stopping aborts a run between two items.
 */
import type { Logger } from '../log.js'
import type { StorageDriver } from './driver/storage-driver.js'
import { collectGarbage, GcBusyError, type GcOptions, type GcReport } from './gc.js'

export interface GcSchedule {
  /** Runs once now (unless a run is in progress); resolves with its report, or undefined when skipped. */
  runNow(): Promise<GcReport | undefined>
  /** Stops the timer and aborts a run in progress; resolves when it has stopped. */
  stop(): Promise<void>
}

export function startGcSchedule(options: {
  driver: StorageDriver
  intervalMs: number
  logger: Logger
  gc?: Omit<GcOptions, 'signal' | 'dryRun'>
}): GcSchedule {
  const { driver, intervalMs, logger } = options
  if (!Number.isFinite(intervalMs) || intervalMs <= 0) throw new RangeError('GC interval must be a positive number of milliseconds')
  const abort = new AbortController()
  let running: Promise<GcReport | undefined> | undefined

  const runNow = (): Promise<GcReport | undefined> => {
    if (running !== undefined || abort.signal.aborted) return Promise.resolve(undefined)
    running = (async () => {
      try {
        const report = await collectGarbage(driver, { ...options.gc, signal: abort.signal })
        logger.info('garbage collection done', {
          blobs: report.blobs.length,
          bytesFreed: report.bytesFreed,
          manifests: report.manifests.length,
          layerLinks: report.layerLinks.length,
          kept: report.blobsKept,
          recent: report.blobsRecent,
          ms: report.finishedAt.getTime() - report.startedAt.getTime(),
        })
        for (const warning of report.warnings.slice(0, 20)) logger.warn('garbage collection', { warning })
        return report
      } catch (error) {
        if (abort.signal.aborted) return undefined
        if (error instanceof GcBusyError) logger.info('garbage collection skipped', { reason: error.message })
        else logger.error('garbage collection failed', { error: error instanceof Error ? error.message : String(error) })
        return undefined
      } finally {
        running = undefined
      }
    })()
    return running
  }

  const timer = setInterval(() => void runNow(), intervalMs)
  timer.unref() // never keeps the process alive
  return {
    runNow,
    async stop() {
      clearInterval(timer)
      abort.abort(new Error('server shutting down'))
      await running
    },
  }
}

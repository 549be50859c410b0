/**
 * Garbage collection as a job of the server's scheduler (`--gc-interval`, src/scheduler.ts). Each run is the same as
 * `berth gc` without --delete-untagged: only blobs that no manifest references and that nobody
 * wrote or re-used within the grace period go (see gc.ts for why that is safe while serving).
 * Runs never overlap; a run that finds another one holding the store (a `berth gc` in a shell, or
 * on S3 another instance's job: the lock is in the bucket, gc-lock.ts) is skipped until the next
 * tick. Stopping the scheduler aborts a run between two items.
 */
import type { Logger } from '../log.js'
import type { Job } from '../scheduler.js'
import type { StorageDriver } from './driver/storage-driver.js'
import { collectGarbage, GcBusyError, type GcOptions, type GcReport } from './gc.js'

/** The GC job for the scheduler: one `collectGarbage` run per tick, its report logged. */
export function gcJob(options: { driver: StorageDriver; intervalMs: number; logger: Logger; gc?: Omit<GcOptions, 'signal' | 'dryRun'> }): Job {
  const { driver, logger } = options
  return {
    name: 'garbage collection',
    intervalMs: options.intervalMs,
    async run(signal) {
      let report: GcReport
      try {
        report = await collectGarbage(driver, { ...options.gc, signal })
      } catch (error) {
        if (error instanceof GcBusyError) return logger.info('garbage collection skipped', { reason: error.message })
        throw error
      }
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
    },
  }
}

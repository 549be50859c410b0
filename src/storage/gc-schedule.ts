/**
 * Garbage collection as a background job of `berth serve` (`--gc-interval`). Each run is the same
 * as `berth gc` without --delete-untagged: only blobs that no manifest references and that nobody
 * wrote or re-used within the grace period go (see gc.ts for why that is safe while serving).
 * A run that finds another one holding the store (a `berth gc` in a shell, or on S3 another
 * instance's run: the lock is in the bucket, gc-lock.ts) is skipped. Aborting `signal` stops a
 * run between two items.
 */
import type { Logger } from '../log.js'
import type { StorageDriver } from './driver/storage-driver.js'
import { collectGarbage, GcBusyError, type GcOptions, type GcReport } from './gc.js'
import { recordGcRun } from './gc-last-run.js'

/** One run, logged; resolves with its report, or undefined when skipped, aborted or failed (never rejects). */
export async function runGc(
  driver: StorageDriver,
  logger: Logger,
  signal: AbortSignal,
  gc: Omit<GcOptions, 'signal' | 'dryRun'> = {},
): Promise<GcReport | undefined> {
  try {
    const report = await collectGarbage(driver, { ...gc, signal })
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
    await recordGcRun(driver, report, gc.deleteUntagged ?? false)
    return report
  } catch (error) {
    if (signal.aborted) return undefined
    if (error instanceof GcBusyError) logger.info('garbage collection skipped', { reason: error.message })
    else logger.error('garbage collection failed', { error: error instanceof Error ? error.message : String(error) })
    return undefined
  }
}

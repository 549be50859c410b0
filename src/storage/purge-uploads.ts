/**
 * Purging uploads left unfinished (a client that died mid-push leaves `_uploads/<id>/data`
 * behind). Age is counted from `startedat`, as registry:2's upload purging does, so a datadir
 * written by registry:2 is purged the same way; an upload without a readable `startedat` (a start
 * that failed half way) ages from its folder's last modification.
 * The deletion itself is `UploadStore.purge`, which takes each upload's in-process lock, so a
 * chunk being appended by this process is never cut from under it.
 */
import type { Logger } from '../log.js'
import { statFileOrUndefined, type StorageDriver } from './driver/storage-driver.js'
import { listOrEmpty, listRepositories } from './maintenance-scan.js'
import { isUploadId, uploadDataPath, uploadsPath } from './paths.js'
import { uploadStartedAt, type UploadStore } from './upload-store.js'

export interface StaleUpload {
  readonly repository: string
  readonly id: string
  readonly startedAt: Date
  /** Bytes received so far. */
  readonly size: number
}

export interface PurgeUploadsReport {
  readonly dryRun: boolean
  readonly olderThan: Date
  /** Purged (or, in a dry run, would be purged). */
  readonly uploads: readonly StaleUpload[]
  readonly bytesFreed: number
}

/** Every upload started before `olderThan`. */
export async function findStaleUploads(driver: StorageDriver, olderThan: Date): Promise<StaleUpload[]> {
  const stale: StaleUpload[] = []
  for (const repository of await listRepositories(driver)) {
    for (const dir of await listOrEmpty(driver, uploadsPath(repository))) {
      const id = dir.slice(dir.lastIndexOf('/') + 1)
      if (!isUploadId(id)) continue
      const started = await uploadStartedAt(driver, repository, id)
      if (started === undefined || started >= olderThan.getTime()) continue
      const startedAt = new Date(started)
      const size = (await statFileOrUndefined(driver, uploadDataPath(repository, id)))?.size ?? 0
      stale.push({ repository, id, startedAt, size })
    }
  }
  return stale
}

/** Deletes uploads started before `olderThan` (lists them only with `dryRun`). */
export async function purgeUploads(driver: StorageDriver, uploads: UploadStore, options: { olderThan: Date; dryRun?: boolean }): Promise<PurgeUploadsReport> {
  const stale = await findStaleUploads(driver, options.olderThan)
  const dryRun = options.dryRun ?? false
  if (!dryRun && stale.length > 0) await uploads.purge(options.olderThan)
  return { dryRun, olderThan: options.olderThan, uploads: stale, bytesFreed: stale.reduce((sum, u) => sum + u.size, 0) }
}

/** The background job: deletes uploads older than `maxAgeMs`, logged; never rejects. */
export async function purgeAbandonedUploads(uploads: UploadStore, maxAgeMs: number, logger: Logger): Promise<number> {
  try {
    const count = await uploads.purge(new Date(Date.now() - maxAgeMs))
    if (count > 0) logger.info('purged abandoned uploads', { count })
    return count
  } catch (error) {
    logger.warn('upload purge failed', { error: error instanceof Error ? error.message : String(error) })
    return 0
  }
}

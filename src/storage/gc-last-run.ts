/**
 * The last garbage collection that deleted (not a dry run), as a small JSON object at
 * GC_LAST_RUN_PATH, written by whoever ran it: `berth serve`'s schedule or `berth gc` in a shell,
 * on any instance of a bucket. The storage page reads it. Last writer wins; a record that does
 * not parse reads as "no run known".
 */
import { PathNotFoundError, type StorageDriver } from './driver/storage-driver.js'
import type { GcReport } from './gc.js'
import { GC_LAST_RUN_PATH } from './paths.js'

export interface GcRunSummary {
  readonly startedAt: string
  readonly finishedAt: string
  readonly blobs: number
  readonly bytesFreed: number
  readonly manifests: number
  readonly layerLinks: number
  readonly deleteUntagged: boolean
}

export function summarizeGcRun(report: GcReport, deleteUntagged: boolean): GcRunSummary {
  return {
    startedAt: report.startedAt.toISOString(),
    finishedAt: report.finishedAt.toISOString(),
    blobs: report.blobs.length,
    bytesFreed: report.bytesFreed,
    manifests: report.manifests.length,
    layerLinks: report.layerLinks.length,
    deleteUntagged,
  }
}

/** Records a run that deleted; dry runs are not recorded. Never rejects: the record is a courtesy, the run already happened. */
export async function recordGcRun(driver: StorageDriver, report: GcReport, deleteUntagged: boolean): Promise<GcRunSummary | undefined> {
  if (report.dryRun) return undefined
  const summary = summarizeGcRun(report, deleteUntagged)
  await driver.putContent(GC_LAST_RUN_PATH, Buffer.from(JSON.stringify({ v: 1, ...summary }))).catch(() => undefined)
  return summary
}

export async function readLastGcRun(driver: StorageDriver): Promise<GcRunSummary | undefined> {
  let content: Buffer
  try {
    content = await driver.getContent(GC_LAST_RUN_PATH)
  } catch (error) {
    if (error instanceof PathNotFoundError) return undefined
    throw error
  }
  try {
    const { v, ...record } = JSON.parse(content.toString('utf8')) as GcRunSummary & { v: unknown }
    const numbers = [record.blobs, record.bytesFreed, record.manifests, record.layerLinks]
    if (v !== 1 || !numbers.every(Number.isSafeInteger) || [record.startedAt, record.finishedAt].some(time => Number.isNaN(Date.parse(time)))) return undefined
    return { ...record, deleteUntagged: record.deleteUntagged === true }
  } catch {
    return undefined
  }
}

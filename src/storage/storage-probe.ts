/**
 * The storage readiness check's one attempt: write a small object where registry:2 never looks
 * (`paths.ts` `healthProbePath`), then delete it, through the driver (so it checks the bucket on
 * S3 and the data folder on a filesystem). Each process uses its own object, so instances sharing
 * a bucket never delete each other's.
 */
import { healthProbePath } from './paths.js'
import type { StorageDriver } from './driver/storage-driver.js'

const CONTENT = Buffer.from('berth readiness probe\n')

/** Resolves when the store took the write and the delete; rejects with the driver's error. */
export async function probeStorage(driver: StorageDriver, instance: string): Promise<void> {
  const path = healthProbePath(instance)
  await driver.putContent(path, CONTENT)
  await driver.delete(path)
}

/**
 * Disk usage (`berth du`): what each repository holds, what it shares with others, and what the
 * datadir holds in total. A repository holds a blob when it links it (`_layers` link or manifest
 * revision link, as registry:2 lays them out) and the blob is stored. Sizes are the blobs' byte
 * sizes (the folders and link files around them are not counted).
 *
 * - unique: blobs only this repository links (what deleting it and collecting garbage frees);
 * - shared: blobs other repositories link too (stored once for all of them);
 * - unreferenced: stored blobs no repository links (what garbage collection frees at once);
 * - uploads: bytes of unfinished uploads.
 */
import type { StorageDriver } from './driver/storage-driver.js'
import { forEachBlob, listLinks, listOrEmpty, listRepositories, statOrUndefined } from './maintenance-scan.js'
import { isUploadId, manifestRevisionsPath, repositoryPath, uploadDataPath, uploadsPath } from './paths.js'

export interface RepositoryUsage {
  readonly name: string
  readonly blobs: number
  readonly manifests: number
  /** Bytes of every blob it links (unique + shared). */
  readonly bytes: number
  readonly uniqueBytes: number
  readonly sharedBytes: number
  readonly uploadBytes: number
}

export interface UsageReport {
  readonly repositories: readonly RepositoryUsage[]
  /** Stored blobs and their bytes (each counted once). */
  readonly blobs: number
  readonly bytes: number
  readonly sharedBytes: number
  readonly unreferencedBlobs: number
  readonly unreferencedBytes: number
  readonly uploadBytes: number
}

export async function diskUsage(driver: StorageDriver): Promise<UsageReport> {
  const sizes = new Map<string, number>()
  await forEachBlob(driver, async blob => {
    if (blob.size !== undefined) sizes.set(blob.digest, blob.size)
  })
  const holders = new Map<string, number>()
  const perRepository: { name: string; digests: Set<string>; manifests: number; uploadBytes: number }[] = []
  for (const name of await listRepositories(driver)) {
    const digests = new Set<string>()
    let manifests = 0
    for (const link of await listLinks(driver, `${repositoryPath(name)}/_layers`)) {
      if (link.modTime !== undefined && sizes.has(link.digest)) digests.add(link.digest)
    }
    for (const link of await listLinks(driver, manifestRevisionsPath(name))) {
      if (link.modTime !== undefined && sizes.has(link.digest)) {
        digests.add(link.digest)
        manifests++
      }
    }
    let uploadBytes = 0
    for (const dir of await listOrEmpty(driver, uploadsPath(name))) {
      const id = dir.slice(dir.lastIndexOf('/') + 1)
      if (isUploadId(id)) uploadBytes += (await statOrUndefined(driver, uploadDataPath(name, id)))?.size ?? 0
    }
    for (const digest of digests) holders.set(digest, (holders.get(digest) ?? 0) + 1)
    perRepository.push({ name, digests, manifests, uploadBytes })
  }
  const repositories = perRepository.map(({ name, digests, manifests, uploadBytes }) => {
    let uniqueBytes = 0
    let sharedBytes = 0
    for (const digest of digests) {
      const size = sizes.get(digest) ?? 0
      if ((holders.get(digest) ?? 0) > 1) sharedBytes += size
      else uniqueBytes += size
    }
    return { name, blobs: digests.size, manifests, bytes: uniqueBytes + sharedBytes, uniqueBytes, sharedBytes, uploadBytes }
  })
  let bytes = 0
  let sharedBytes = 0
  let unreferencedBlobs = 0
  let unreferencedBytes = 0
  for (const [digest, size] of sizes) {
    bytes += size
    const count = holders.get(digest) ?? 0
    if (count > 1) sharedBytes += size
    if (count === 0) {
      unreferencedBlobs++
      unreferencedBytes += size
    }
  }
  return {
    repositories,
    blobs: sizes.size,
    bytes,
    sharedBytes,
    unreferencedBlobs,
    unreferencedBytes,
    uploadBytes: repositories.reduce((sum, r) => sum + r.uploadBytes, 0),
  }
}

/** 1536 → "1.5 KiB": binary units, as `du -h`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`
}

/**
 * Disk usage (`berth du`): what each repository holds, what it shares with others, and what the
 * datadir holds in total. A repository holds a blob when it links it (`_layers` link or manifest
 * revision link, as registry:2 lays them out) and the blob is stored. Sizes are the blobs' byte
 * sizes (the folders and link files around them are not counted).
 *
 * - unique: blobs only this repository links (what deleting it and collecting garbage frees);
 * - shared: blobs other repositories link too (stored once for all of them);
 * - unreferenced: stored blobs no repository links (what garbage collection frees at once);
 * - uploads: bytes of unfinished uploads;
 * - cached / pushed: a repository with the mirror marker (`_mirror`) holds pull-through cache
 *   content, any other pushed content. Cached bytes are blobs only cached repositories link (what
 *   evicting every cached image and collecting garbage frees; what `--mirror-max-size` caps);
 *   pushed bytes are blobs some pushed repository links, those it shares with the cache included.
 */
import { statFileOrUndefined, type StorageDriver } from './driver/storage-driver.js'
import { forEachBlob, listLinks, listOrEmpty, listRepositories } from './maintenance-scan.js'
import { isUploadId, manifestRevisionsPath, mirrorMarkerPath, repositoryPath, uploadDataPath, uploadsPath } from './paths.js'

export interface RepositoryUsage {
  readonly name: string
  /** Filled by the pull-through mirror (it has the mirror marker). */
  readonly cached: boolean
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
  /** Blobs only cached repositories link, and their bytes. */
  readonly cachedBlobs: number
  readonly cachedBytes: number
  /** Blobs some pushed repository links, and their bytes (`sharedWithCacheBytes` of them cached repositories link too). */
  readonly pushedBlobs: number
  readonly pushedBytes: number
  readonly sharedWithCacheBytes: number
}

export async function diskUsage(driver: StorageDriver): Promise<UsageReport> {
  const sizes = new Map<string, number>()
  await forEachBlob(driver, async blob => {
    if (blob.size !== undefined) sizes.set(blob.digest, blob.size)
  })
  const holders = new Map<string, number>()
  const perRepository: { name: string; cached: boolean; digests: Set<string>; manifests: number; uploadBytes: number }[] = []
  const linkedByCache = new Set<string>()
  const linkedByPushed = new Set<string>()
  for (const name of await listRepositories(driver)) {
    const cached = (await statFileOrUndefined(driver, mirrorMarkerPath(name))) !== undefined
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
      if (isUploadId(id)) uploadBytes += (await statFileOrUndefined(driver, uploadDataPath(name, id)))?.size ?? 0
    }
    for (const digest of digests) holders.set(digest, (holders.get(digest) ?? 0) + 1)
    perRepository.push({ name, cached, digests, manifests, uploadBytes })
    for (const digest of digests) (cached ? linkedByCache : linkedByPushed).add(digest)
  }
  const repositories = perRepository.map(({ name, cached, digests, manifests, uploadBytes }) => {
    let uniqueBytes = 0
    let sharedBytes = 0
    for (const digest of digests) {
      const size = sizes.get(digest) ?? 0
      if ((holders.get(digest) ?? 0) > 1) sharedBytes += size
      else uniqueBytes += size
    }
    return { name, cached, blobs: digests.size, manifests, bytes: uniqueBytes + sharedBytes, uniqueBytes, sharedBytes, uploadBytes }
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
  let cachedBytes = 0
  let cachedBlobs = 0
  for (const digest of linkedByCache) {
    if (linkedByPushed.has(digest)) continue
    cachedBlobs++
    cachedBytes += sizes.get(digest) ?? 0
  }
  let pushedBytes = 0
  let sharedWithCacheBytes = 0
  for (const digest of linkedByPushed) {
    pushedBytes += sizes.get(digest) ?? 0
    if (linkedByCache.has(digest)) sharedWithCacheBytes += sizes.get(digest) ?? 0
  }
  return {
    repositories,
    cachedBlobs,
    cachedBytes,
    pushedBlobs: linkedByPushed.size,
    pushedBytes,
    sharedWithCacheBytes,
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

/**
 * The pull-through cache's size cap (`--mirror-max-size`): what the cache holds (`scanCache`),
 * which images go (`planEviction`, pure) and removing them (`evictImages`), least recently pulled
 * first. It runs in the background of `berth serve`, never on a request path; server.ts then runs
 * garbage collection, which frees the bytes.
 *
 * What counts:
 * - Cached repositories are those with the mirror marker (paths.ts `_mirror`); every other
 *   repository is pushed content and is never touched here.
 * - The cache's size is the bytes of the stored blobs (manifests included) that its images name
 *   and that no pushed repository links: a layer a pushed image shares stays when the cached image
 *   goes (garbage collection marks it from the pushed image's manifest), so it is not counted and
 *   evicting cannot free it. A blob several cached images name counts once.
 * - An image is a tag's manifest (or an untagged manifest no index lists) with the stored
 *   children it lists (an index's platform images) and its stored referrers. Its last use is the
 *   latest pull of any of them (the metadata index's pull records, every instance's) or the time it
 *   was fetched, whichever is later. Images used within `minAgeMs` stay: a client may be fetching
 *   their layers right now.
 *
 * Evicting an image deletes its manifests by digest (tags pointing at them go too), the same calls
 * as the API's DELETE. A pull that comes after is a miss and fetches the image again; a pull racing
 * the eviction still gets its layers (linked and stored until garbage collection, and the mirror
 * fetches again what is gone). Several instances on one bucket may trim at once: deleting what
 * another instance deleted first is a no-op.
 */
import type { Actor, EventSink } from '../events/events.js'
import type { Logger } from '../log.js'
import { parseDigest } from '../storage/digest.js'
import { statFileOrUndefined, type StorageDriver } from '../storage/driver/storage-driver.js'
import { ManifestUnknownError } from '../storage/errors.js'
import { listLinks, listRepositories, manifestReferences } from '../storage/maintenance-scan.js'
import { blobDataPath, manifestRevisionsPath, mirrorMarkerPath, repositoryPath } from '../storage/paths.js'
import type { RegistryStore } from '../storage/registry-store.js'

export interface CachedImage {
  readonly repository: string
  /** The image's top manifest (what a tag names). */
  readonly digest: string
  readonly tags: readonly string[]
  /** The top manifest, then the stored children and referrers that go with it. */
  readonly manifests: readonly string[]
  /** Every blob the manifests name, and the manifests' own bytes, each once. */
  readonly blobs: readonly string[]
  /** Milliseconds since the epoch: the latest pull of any of its manifests, or when it was fetched if later. */
  readonly lastUsed: number
}

export interface CacheScan {
  readonly images: readonly CachedImage[]
  /** Stored size of every blob a cached image names (missing blobs are absent). */
  readonly sizes: ReadonlyMap<string, number>
  /** Blobs some pushed repository links (layer or manifest link): never counted, never freed by eviction. */
  readonly pushed: ReadonlySet<string>
}

export interface EvictionPlan {
  /** The cache's size now (see the header for what counts). */
  readonly bytes: number
  /** Its size once the planned images are gone. */
  readonly bytesAfter: number
  readonly evict: readonly CachedImage[]
  /** Whether images used within the minimum age kept the cache above the cap. */
  readonly overCap: boolean
}

/** When a repository's manifest was last pulled (every instance's records), or undefined. */
export type LastPulled = (repository: string) => Promise<(digest: string) => number | undefined>

/** Reads what the cache holds. Reads only. */
export async function scanCache(driver: StorageDriver, store: RegistryStore, lastPulled: LastPulled): Promise<CacheScan> {
  const images: CachedImage[] = []
  const pushed = new Set<string>()
  const sizes = new Map<string, number>()
  for (const name of await listRepositories(driver)) {
    if ((await statFileOrUndefined(driver, mirrorMarkerPath(name))) === undefined) {
      for (const folder of [`${repositoryPath(name)}/_layers`, manifestRevisionsPath(name)]) {
        for (const link of await listLinks(driver, folder)) if (link.modTime !== undefined) pushed.add(link.digest)
      }
      continue
    }
    images.push(...(await scanRepository(store, name, await listLinks(driver, manifestRevisionsPath(name)), await lastPulled(name))))
  }
  for (const image of images) {
    for (const digest of image.blobs) {
      if (sizes.has(digest)) continue
      const stat = await statFileOrUndefined(driver, blobDataPath(digest))
      if (stat !== undefined) sizes.set(digest, stat.size)
    }
  }
  return { images, sizes, pushed }
}

async function scanRepository(
  store: RegistryStore,
  name: string,
  revisions: readonly { digest: string; modTime: Date | undefined }[],
  pulled: (digest: string) => number | undefined,
): Promise<CachedImage[]> {
  const fetchedAt = new Map<string, number>()
  const references = new Map<string, { blobs: string[]; parts: string[] }>()
  for (const revision of revisions) {
    if (revision.modTime === undefined) continue
    fetchedAt.set(revision.digest, revision.modTime.getTime())
  }
  const subjects = new Map<string, string>()
  for (const digest of fetchedAt.keys()) {
    let content: Buffer
    try {
      content = await store.blobs.getContent(parseDigest(digest))
    } catch {
      continue // bytes gone: nothing to count, and garbage collection removes the link
    }
    const refs = manifestReferences(content)
    references.set(digest, { blobs: refs?.blobs ?? [], parts: (refs?.children ?? []).filter(child => fetchedAt.has(child)) })
    if (refs?.subject !== undefined && fetchedAt.has(refs.subject)) subjects.set(digest, refs.subject)
  }
  // A referrer goes with its subject's image; children with their index.
  const partOf = new Set<string>()
  for (const [referrer, subject] of subjects) {
    references.get(subject)?.parts.push(referrer)
    partOf.add(referrer)
  }
  for (const refs of references.values()) for (const part of refs.parts) partOf.add(part)
  const tagsOf = new Map<string, string[]>()
  for (const tag of await store.tags.list(name).catch(() => [] as string[])) {
    try {
      const digest = (await store.tags.resolve(name, tag)).value
      if (!fetchedAt.has(digest)) continue
      tagsOf.set(digest, [...(tagsOf.get(digest) ?? []), tag])
    } catch (error) {
      if (!(error instanceof ManifestUnknownError)) throw error
    }
  }
  const roots = [...fetchedAt.keys()].filter(digest => tagsOf.has(digest) || !partOf.has(digest)).sort()
  return roots.map(root => {
    const manifests: string[] = []
    const blobs = new Set<string>()
    const work = [root]
    for (let digest = work.shift(); digest !== undefined; digest = work.shift()) {
      if (manifests.includes(digest)) continue
      manifests.push(digest)
      blobs.add(digest)
      const refs = references.get(digest)
      for (const blob of refs?.blobs ?? []) blobs.add(blob)
      work.push(...(refs?.parts ?? []))
    }
    const lastUsed = Math.max(...manifests.map(digest => Math.max(pulled(digest) ?? 0, fetchedAt.get(digest) ?? 0)))
    return { repository: name, digest: root, tags: (tagsOf.get(root) ?? []).sort(), manifests, blobs: [...blobs], lastUsed }
  })
}

/**
 * The images to evict so the cache fits in `maxBytes`: least recently used first (ties by name and
 * digest), skipping those used after `now - minAgeMs`. Each eviction frees the blobs no remaining
 * cached image names and no pushed repository links.
 */
export function planEviction(scan: CacheScan, maxBytes: number, now: number, minAgeMs: number): EvictionPlan {
  const holders = new Map<string, number>()
  for (const image of scan.images) for (const blob of image.blobs) holders.set(blob, (holders.get(blob) ?? 0) + 1)
  const counted = (blob: string) => !scan.pushed.has(blob) && scan.sizes.has(blob)
  let bytes = 0
  for (const blob of holders.keys()) if (counted(blob)) bytes += scan.sizes.get(blob)!
  const order = [...scan.images].sort((a, b) => a.lastUsed - b.lastUsed || compareText(a.repository, b.repository) || compareText(a.digest, b.digest))
  let left = bytes
  const evict: CachedImage[] = []
  for (const image of order) {
    if (left <= maxBytes) break
    if (image.lastUsed > now - minAgeMs) continue
    evict.push(image)
    for (const blob of image.blobs) {
      const count = holders.get(blob)! - 1
      holders.set(blob, count)
      if (count === 0 && counted(blob)) left -= scan.sizes.get(blob)!
    }
  }
  return { bytes, bytesAfter: left, evict, overCap: left > maxBytes }
}

export interface EvictionResult {
  readonly images: number
  readonly manifests: number
  readonly tags: number
  /** Bytes the evicted images held that garbage collection can free (as planned). */
  readonly bytes: number
  readonly stopped: boolean
}

export const EVICTION_ACTOR: Actor = { user: 'mirror-eviction' }

/**
 * Deletes the planned images: each top manifest, then its parts that no image left in the cache
 * still needs. A manifest already gone (another instance, a GC) is skipped.
 */
export async function evictImages(
  store: RegistryStore,
  scan: CacheScan,
  plan: EvictionPlan,
  options: { events?: EventSink | undefined; shouldStop?: (() => boolean) | undefined } = {},
): Promise<EvictionResult> {
  const evicted = new Set(plan.evict)
  const needed = new Set<string>()
  for (const image of scan.images) if (!evicted.has(image)) for (const digest of image.manifests) needed.add(`${image.repository} ${digest}`)
  let images = 0
  let manifests = 0
  let tags = 0
  for (const image of plan.evict) {
    if (options.shouldStop?.()) return { images, manifests, tags, bytes: plan.bytes - plan.bytesAfter, stopped: true }
    for (const digest of image.manifests) {
      if (digest !== image.digest && needed.has(`${image.repository} ${digest}`)) continue
      try {
        const removed = await store.manifests.delete(image.repository, digest)
        manifests++
        tags += removed.tags.length
        for (const tag of removed.tags) options.events?.emit({ action: 'delete', repository: image.repository, target: 'tag', reference: tag }, EVICTION_ACTOR)
        options.events?.emit({ action: 'delete', repository: image.repository, target: 'manifest', reference: digest }, EVICTION_ACTOR)
      } catch (error) {
        if (!(error instanceof ManifestUnknownError)) throw error
      }
    }
    images++
  }
  return { images, manifests, tags, bytes: plan.bytes - plan.bytesAfter, stopped: false }
}

export interface EvictionRun {
  readonly driver: StorageDriver
  readonly store: RegistryStore
  readonly lastPulled: LastPulled
  readonly maxBytes: number
  readonly minAgeMs: number
  readonly logger: Logger
  readonly events?: EventSink | undefined
  readonly shouldStop?: (() => boolean) | undefined
  readonly now?: () => number
}

/** One trim, logged; resolves with the plan and what was removed, or undefined when it failed (never rejects). */
export async function runEviction(run: EvictionRun): Promise<{ plan: EvictionPlan; result: EvictionResult } | undefined> {
  const started = Date.now()
  try {
    const scan = await scanCache(run.driver, run.store, run.lastPulled)
    const plan = planEviction(scan, run.maxBytes, (run.now ?? Date.now)(), run.minAgeMs)
    const result = await evictImages(run.store, scan, plan, { events: run.events, shouldStop: run.shouldStop })
    if (result.images > 0 || plan.overCap) {
      run.logger.info('mirror cache trimmed', {
        cachedBytes: plan.bytes,
        maxBytes: run.maxBytes,
        images: result.images,
        manifests: result.manifests,
        bytes: result.bytes,
        overCap: plan.overCap,
        ms: Date.now() - started,
      })
    }
    if (plan.overCap) run.logger.warn('mirror cache above --mirror-max-size: what is left was pulled within the last minute', { bytes: plan.bytesAfter })
    return { plan, result }
  } catch (error) {
    run.logger.error('mirror cache trim failed', { error: error instanceof Error ? error.message : String(error) })
    return undefined
  }
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

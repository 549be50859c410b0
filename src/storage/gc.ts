/**
 * Online garbage collection: mark everything reachable, sweep the rest, while the registry keeps
 * serving (in `berth serve` or from a separate `berth gc` on the same datadir).
 *
 * Mark (per repository): the roots are every revision (by default), or with `deleteUntagged`
 * only what a tag points to plus revisions written or touched after the cut-off. From each root:
 * the manifest's own bytes, its config and layers, its index children (recursively), and, with
 * `keepReferrers` (the default), every manifest whose `subject` is a kept manifest.
 * Sweep: untagged revisions (only with `deleteUntagged`, never one a kept index names), blob
 * `data` nobody marked, and `_layers` links whose blob is gone (registry:2's GC leaves those, and
 * they made its "layer already exists" bug: a HEAD on such a link answers 404 here because the
 * blob store checks the bytes too, so a client always pushes a swept blob again).
 *
 * THE SAFETY RULE against concurrent pushes (enforced in `#quarantine` below):
 *   cut-off = start of the run − grace period (default 1 hour).
 *   Something unmarked is deleted only if its modification time is older than the cut-off both
 *   when it is listed AND after it has been renamed out of the way (`data` → `.gc-data`,
 *   `link` → `.gc-link`); if it turned fresh in between, it is renamed back.
 *   Writers keep the other half (storage/blob-store.ts, manifest-store.ts): whoever re-uses a
 *   stored blob or child revision (upload commit finding the blob stored, cross-repository mount,
 *   manifest PUT storing its bytes or naming layers, config and children) first *touches* it
 *   (sets its mtime to now) and treats a failed touch as "not stored"; new blobs and links are
 *   written fresh. So either the writer's touch came before our rename, and the re-check sees a
 *   fresh time and restores it, or it came after, found nothing, and the writer stores the bytes
 *   again (upload) or refuses the manifest with MANIFEST_BLOB_UNKNOWN (the client re-pushes).
 *   A blob or link written or touched during the run is therefore never removed, and a manifest
 *   can never be accepted while a blob it names is being removed. The grace period also keeps
 *   layers a client pushed a while before its manifest (docker pushes all layers first).
 * Renaming (not deleting) is what makes the re-check sound: the touch and our check cannot
 * interleave unseen, as a stat-then-delete could. A run killed between rename and delete leaves a
 * `.gc-*` file; the next run puts it back before it looks at anything.
 *
 * The rule needs `move` to be atomic (`capabilities.atomicRename`), as rename(2) is on the
 * filesystem driver (and a Map update in the in-memory one). S3's move is a copy then a delete, so
 * a touch between the two would be lost: on such drivers the sweep follows the *delete intent* rule instead, written out
 * and argued in gc-guard.ts: the run writes an intent object before its last look at an item, and
 * writers (wrapped by registry-store.ts) look for it after their touch or link write.
 *
 * Two runs on one store are excluded by gc-lock.ts: the driver's lock, an object created only if
 * absent plus a heartbeat (shared by every process on the store).
 */
import { performance } from 'node:perf_hooks'
import { ignoreMissing, PathNotFoundError, statFileOrUndefined, type StorageDriver } from './driver/storage-driver.js'
import { blobDataPath, layerLinkPath, manifestRevisionsPath, referrersPath, repositoryPath, tagsPath } from './paths.js'
import { forEachBlob, listLinks, listOrEmpty, listRepositories, manifestReferences, type LinkEntry, type ManifestReferences } from './maintenance-scan.js'
import { isDigest } from './digest.js'
import { GC_INTENTS_ROOT, intentPath, ITEM_DEADLINE_MS, usesDeleteIntents } from './gc-guard.js'
import { takeGcLock, type GcLock, type GcLockOptions } from './gc-lock.js'

export { GcBusyError } from './gc-lock.js'

export const DEFAULT_GC_GRACE_MS = 60 * 60 * 1000

export interface GcOptions {
  /** List what would go; change nothing. */
  readonly dryRun?: boolean
  /** Also delete manifests no tag reaches (never a child of a kept index, nor a kept manifest's referrer). */
  readonly deleteUntagged?: boolean
  /** Keep manifests whose `subject` is kept (signatures, SBOMs). Default true. */
  readonly keepReferrers?: boolean
  /** Anything written or touched this recently is kept (see the safety rule). Default 1 hour. */
  readonly gracePeriodMs?: number
  /** The run's start, for tests. */
  readonly now?: Date
  readonly onProgress?: (progress: GcProgress) => void
  /**
   * Stops the run between two items (never between renaming something away and deciding its
   * fate); the run then rejects with the signal's reason. For a server shutting down.
   */
  readonly signal?: AbortSignal
  /** Test hook: runs before each sweep phase (after marking; after listing the blobs). */
  readonly beforeSweep?: (phase: 'untagged' | 'blobs') => Promise<void>
  /** The store lock's timing (S3); tests shorten it. */
  readonly lock?: GcLockOptions
}

export interface GcProgress {
  readonly phase: 'mark' | 'untagged' | 'blobs' | 'links'
  readonly done: number
  readonly total: number
}

export interface GcBlob {
  readonly digest: string
  readonly size: number
}

export interface GcLink {
  readonly repository: string
  readonly digest: string
}

export interface GcReport {
  readonly dryRun: boolean
  readonly startedAt: Date
  readonly cutoff: Date
  readonly finishedAt: Date
  readonly repositories: number
  /** Blobs present and marked (kept because referenced). */
  readonly blobsKept: number
  /** Blobs present, unmarked, but newer than the cut-off (kept by the grace period). */
  readonly blobsRecent: number
  /** Deleted (or, in a dry run, would be deleted). */
  readonly blobs: readonly GcBlob[]
  readonly bytesFreed: number
  readonly manifests: readonly GcLink[]
  readonly layerLinks: readonly GcLink[]
  /** Things renamed away and put back because a writer touched them during the run. */
  readonly restored: number
  /** Leftovers of an interrupted run, put back. */
  readonly recovered: number
  readonly warnings: readonly string[]
}

const QUARANTINE_DATA = '.gc-data'
const QUARANTINE_LINK = '.gc-link'

interface RepositoryState {
  readonly name: string
  readonly revisions: Map<string, LinkEntry>
  readonly layers: LinkEntry[]
  readonly tagged: Set<string>
  readonly kept: Set<string>
}

/** Collects garbage on `driver`'s tree. Throws GcBusyError when another run holds it (not for dry runs). */
export async function collectGarbage(driver: StorageDriver, options: GcOptions = {}): Promise<GcReport> {
  const lock = options.dryRun ? undefined : await takeGcLock(driver, options.lock)
  try {
    return await new GarbageCollection(driver, options, lock).run()
  } finally {
    await lock?.release()
  }
}

class GarbageCollection {
  readonly #driver: StorageDriver
  readonly #dryRun: boolean
  readonly #deleteUntagged: boolean
  readonly #keepReferrers: boolean
  readonly #startedAt: Date
  readonly #cutoff: number
  readonly #options: GcOptions
  readonly #marked = new Set<string>()
  readonly #references = new Map<string, ManifestReferences | null>()
  readonly #warnings: string[] = []
  readonly #blobs: GcBlob[] = []
  readonly #manifests: GcLink[] = []
  readonly #layerLinks: GcLink[] = []
  readonly #lock: GcLock | undefined
  readonly #intents: boolean
  #restored = 0
  #recovered = 0

  constructor(driver: StorageDriver, options: GcOptions, lock: GcLock | undefined) {
    this.#driver = driver
    this.#options = options
    this.#lock = lock
    this.#intents = usesDeleteIntents(driver)
    this.#dryRun = options.dryRun ?? false
    this.#deleteUntagged = options.deleteUntagged ?? false
    this.#keepReferrers = options.keepReferrers ?? true
    // With delete intents, the store's clock: what writers' touches are stamped with.
    this.#startedAt = options.now ?? (this.#intents ? lock?.storeTime : undefined) ?? new Date()
    const grace = options.gracePeriodMs ?? DEFAULT_GC_GRACE_MS
    if (!Number.isFinite(grace) || grace < 0) throw new RangeError('grace period must be a non-negative number of milliseconds')
    this.#cutoff = this.#startedAt.getTime() - grace
  }

  async run(): Promise<GcReport> {
    // Intents a killed run left would make writers wait until they turn stale: none can be live now.
    if (this.#intents && !this.#dryRun) await this.#driver.delete(GC_INTENTS_ROOT).catch(ignoreMissing)
    const repositories: RepositoryState[] = []
    const names = await listRepositories(this.#driver)
    for (const [i, name] of names.entries()) {
      repositories.push(await this.#load(name))
      this.#progress('mark', i + 1, names.length)
    }
    for (const repository of repositories) await this.#mark(repository)

    await this.#options.beforeSweep?.('untagged')
    if (this.#deleteUntagged) await this.#sweepUntagged(repositories)
    const { kept, recent, candidates } = await this.#listBlobs()
    await this.#options.beforeSweep?.('blobs')
    await this.#sweepBlobs(candidates)
    await this.#sweepLayerLinks(repositories)

    return {
      dryRun: this.#dryRun,
      startedAt: this.#startedAt,
      cutoff: new Date(this.#cutoff),
      finishedAt: new Date(),
      repositories: repositories.length,
      blobsKept: kept,
      blobsRecent: recent,
      blobs: this.#blobs,
      bytesFreed: this.#blobs.reduce((sum, blob) => sum + blob.size, 0),
      manifests: this.#manifests,
      layerLinks: this.#layerLinks,
      restored: this.#restored,
      recovered: this.#recovered,
      warnings: this.#warnings,
    }
  }

  #progress(phase: GcProgress['phase'], done: number, total: number): void {
    this.#options.signal?.throwIfAborted()
    this.#lock?.lost.throwIfAborted()
    this.#options.onProgress?.({ phase, done, total })
  }

  #isFresh(modTime: Date | undefined): boolean {
    return modTime !== undefined && modTime.getTime() >= this.#cutoff
  }

  async #load(name: string): Promise<RepositoryState> {
    const revisions = new Map<string, LinkEntry>()
    for (const entry of await listLinks(this.#driver, manifestRevisionsPath(name))) {
      const recovered = await this.#recoverLink(entry)
      if (recovered.modTime !== undefined) revisions.set(recovered.digest, recovered)
    }
    const layers: LinkEntry[] = []
    for (const entry of await listLinks(this.#driver, `${repositoryPath(name)}/_layers`)) {
      layers.push(await this.#recoverLink(entry))
    }
    const tagged = new Set<string>()
    for (const tagDir of await listOrEmpty(this.#driver, tagsPath(name))) {
      try {
        const digest = (await this.#driver.getContent(`${tagDir}/current/link`)).toString('utf8').trim()
        if (isDigest(digest)) tagged.add(digest)
        else this.#warnings.push(`${name}: tag ${tagDir.slice(tagDir.lastIndexOf('/') + 1)} holds a corrupt link`)
      } catch (error) {
        if (!(error instanceof PathNotFoundError)) throw error
      }
    }
    return { name, revisions, layers, tagged, kept: new Set() }
  }

  /** Puts back a link a killed run left renamed (`.gc-link`); returns the entry as it is now. */
  async #recoverLink(entry: LinkEntry): Promise<LinkEntry> {
    if (entry.modTime !== undefined || this.#dryRun) return entry
    const quarantined = `${entry.dir}/${QUARANTINE_LINK}`
    if ((await statFileOrUndefined(this.#driver, quarantined)) === undefined) return entry
    await this.#driver.move(quarantined, `${entry.dir}/link`).catch(ignoreMissing)
    this.#recovered++
    return { ...entry, modTime: (await statFileOrUndefined(this.#driver, `${entry.dir}/link`))?.modTime }
  }

  async #referencesOf(repository: string, digest: string): Promise<ManifestReferences | null> {
    let references = this.#references.get(digest)
    if (references !== undefined) return references
    try {
      references = manifestReferences(await this.#driver.getContent(blobDataPath(digest))) ?? null
      if (references === null) this.#warnings.push(`${repository}: manifest ${digest} is not JSON; nothing it names is marked`)
    } catch (error) {
      if (!(error instanceof PathNotFoundError)) throw error
      this.#warnings.push(`${repository}: manifest ${digest} has no stored bytes`)
      references = null
    }
    this.#references.set(digest, references)
    return references
  }

  async #mark(repository: RepositoryState): Promise<void> {
    const roots = this.#deleteUntagged
      ? [...repository.tagged, ...[...repository.revisions.values()].filter(r => this.#isFresh(r.modTime)).map(r => r.digest)]
      : [...repository.revisions.keys()]
    for (const root of roots) await this.#markManifest(repository, root)
    if (!this.#deleteUntagged || !this.#keepReferrers) return
    // Referrers of kept manifests are kept, and theirs too: repeat until nothing changes.
    for (let changed = true; changed;) {
      changed = false
      for (const digest of repository.revisions.keys()) {
        if (repository.kept.has(digest)) continue
        const subject = (await this.#referencesOf(repository.name, digest))?.subject
        if (subject !== undefined && repository.kept.has(subject)) {
          await this.#markManifest(repository, digest)
          changed = true
        }
      }
    }
  }

  async #markManifest(repository: RepositoryState, root: string): Promise<void> {
    const work = [root]
    for (let digest = work.pop(); digest !== undefined; digest = work.pop()) {
      if (repository.kept.has(digest)) continue
      if (!repository.revisions.has(digest)) {
        // An index child that is not stored is absent, not damage: sparse indexes (partial copies,
        // --allow-sparse-manifests) and registry:2's DELETE of a child both leave them. A tag
        // naming a missing revision is worth a warning.
        if (digest === root && repository.tagged.has(digest)) this.#warnings.push(`${repository.name}: ${digest} is tagged but not stored in the repository`)
        continue
      }
      repository.kept.add(digest)
      this.#marked.add(digest)
      const references = await this.#referencesOf(repository.name, digest)
      if (references === null) continue
      for (const blob of references.blobs) this.#marked.add(blob)
      work.push(...references.children)
    }
  }

  async #sweepUntagged(repositories: RepositoryState[]): Promise<void> {
    const doomed = repositories.flatMap(repository =>
      [...repository.revisions.values()].filter(r => !repository.kept.has(r.digest) && !this.#isFresh(r.modTime)).map(r => ({ repository, entry: r })),
    )
    for (const [i, { repository, entry }] of doomed.entries()) {
      this.#progress('untagged', i + 1, doomed.length)
      if (this.#dryRun) {
        this.#manifests.push({ repository: repository.name, digest: entry.digest })
        continue
      }
      const outcome = await this.#quarantine(entry.dir, 'link', QUARANTINE_LINK)
      if (outcome === 'restored') {
        // A manifest PUT touched it (an index naming it as a child): keep it and all it names.
        await this.#markManifest(repository, entry.digest)
        continue
      }
      if (outcome !== 'deleted') continue
      repository.revisions.delete(entry.digest)
      // Re-pushed while we worked (a fresh `link` beside the one we took)? Then it stays, history too.
      if ((await statFileOrUndefined(this.#driver, `${entry.dir}/link`)) !== undefined) continue
      this.#manifests.push({ repository: repository.name, digest: entry.digest })
      // As distribution's vacuum.RemoveManifest: the tags' index entries, and our referrers index.
      const [algorithm, hex] = entry.digest.split(':') as [string, string]
      for (const tagDir of await listOrEmpty(this.#driver, tagsPath(repository.name))) {
        await this.#driver.delete(`${tagDir}/index/${algorithm}/${hex}`).catch(ignoreMissing)
      }
      const subject = (await this.#referencesOf(repository.name, entry.digest))?.subject
      if (subject !== undefined) await this.#driver.delete(`${referrersPath(repository.name, subject)}/${algorithm}/${hex}`).catch(ignoreMissing)
    }
  }

  async #listBlobs(): Promise<{ kept: number; recent: number; candidates: GcBlob[] }> {
    let kept = 0
    let recent = 0
    const candidates: GcBlob[] = []
    await forEachBlob(this.#driver, async blob => {
      let { size, modTime } = blob
      if (size === undefined && !this.#dryRun) {
        const quarantined = `${blob.dir}/${QUARANTINE_DATA}`
        if ((await statFileOrUndefined(this.#driver, quarantined)) !== undefined) {
          await this.#driver.move(quarantined, `${blob.dir}/data`).catch(ignoreMissing)
          this.#recovered++
          const info = await statFileOrUndefined(this.#driver, `${blob.dir}/data`)
          size = info?.size
          modTime = info?.modTime
        }
      }
      if (size === undefined) return
      if (this.#marked.has(blob.digest)) kept++
      else if (this.#isFresh(modTime)) recent++
      else candidates.push({ digest: blob.digest, size })
    })
    return { kept, recent, candidates }
  }

  async #sweepBlobs(candidates: GcBlob[]): Promise<void> {
    let done = 0
    await forEachConcurrently(candidates, 8, async blob => {
      this.#progress('blobs', ++done, candidates.length)
      if (this.#dryRun) {
        this.#blobs.push(blob)
        return
      }
      const dir = blobDataPath(blob.digest).slice(0, -'/data'.length)
      if ((await this.#quarantine(dir, 'data', QUARANTINE_DATA)) === 'deleted') {
        this.#blobs.push(blob)
        await this.#driver.removeEmptyDirectory(dir)
        await this.#driver.removeEmptyDirectory(dir.slice(0, dir.lastIndexOf('/')))
      }
    })
  }

  /** `_layers` links whose blob is gone (swept now, or missing before), older than the cut-off. */
  async #sweepLayerLinks(repositories: RepositoryState[]): Promise<void> {
    const swept = new Set(this.#blobs.map(blob => blob.digest))
    const work = repositories.flatMap(repository => repository.layers.map(entry => ({ repository, entry })))
    let done = 0
    for (const { repository, entry } of work) {
      this.#progress('links', ++done, work.length)
      if (entry.modTime === undefined || this.#isFresh(entry.modTime) || this.#marked.has(entry.digest)) continue
      if (this.#dryRun) {
        if (swept.has(entry.digest) || (await statFileOrUndefined(this.#driver, blobDataPath(entry.digest))) === undefined) {
          this.#layerLinks.push({ repository: repository.name, digest: entry.digest })
        }
        continue
      }
      if ((await statFileOrUndefined(this.#driver, blobDataPath(entry.digest))) !== undefined) continue
      const dir = layerLinkPath(repository.name, entry.digest).slice(0, -'/link'.length)
      if ((await this.#quarantine(dir, 'link', QUARANTINE_LINK)) === 'deleted') {
        this.#layerLinks.push({ repository: repository.name, digest: entry.digest })
        await this.#driver.removeEmptyDirectory(dir)
      }
    }
  }

  /**
   * The safety rule (see the file header): rename `dir/name` out of the way, re-check its time,
   * then delete it, or rename it back when a writer touched it after we listed it.
   */
  async #quarantine(dir: string, name: string, quarantineName: string): Promise<'deleted' | 'restored' | 'gone'> {
    if (this.#intents) return this.#deleteWithIntent(`${dir}/${name}`)
    const live = `${dir}/${name}`
    const quarantined = `${dir}/${quarantineName}`
    try {
      await this.#driver.move(live, quarantined)
    } catch (error) {
      if (error instanceof PathNotFoundError) return 'gone'
      throw error
    }
    const info = await statFileOrUndefined(this.#driver, quarantined)
    if (info === undefined) return 'gone'
    if (this.#isFresh(info.modTime)) {
      // Replaces a copy a writer may have stored meanwhile: the same bytes (content addressed).
      await this.#driver.move(quarantined, live)
      this.#restored++
      return 'restored'
    }
    await this.#driver.delete(quarantined).catch(ignoreMissing)
    return 'deleted'
  }

  /**
   * The collector's half of the delete-intent rule (g1–g4 in gc-guard.ts, where it is argued):
   * intent first, then the last look, then the delete, and the delete only within the deadline
   * and while the lock is still ours. 'restored' means a writer touched it: kept.
   */
  async #deleteWithIntent(path: string): Promise<'deleted' | 'restored' | 'gone'> {
    const intent = intentPath(path)
    const begun = performance.now()
    await this.#driver.putContent(intent, Buffer.from(JSON.stringify({ path, startedAt: this.#startedAt.toISOString() }))) // g1
    try {
      const info = await statFileOrUndefined(this.#driver, path) // g2
      if (info === undefined) return 'gone'
      if (this.#isFresh(info.modTime)) {
        this.#restored++
        return 'restored'
      }
      if (this.#lock !== undefined && !(await this.#lock.stillHeld())) throw this.#lock.lost.reason
      if (performance.now() - begun > ITEM_DEADLINE_MS) {
        this.#warnings.push(`${path}: the store answered too slowly to delete it safely; kept for the next run`)
        return 'gone'
      }
      await this.#driver.delete(path).catch(ignoreMissing) // g3
      return 'deleted'
    } finally {
      await this.#driver.delete(intent).catch(() => {}) // g4 (a leftover turns stale; the next run clears it)
    }
  }
}

async function forEachConcurrently<T>(items: readonly T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T
      await task(item)
    }
  })
  // Every worker finishes its item before the run ends (an abort must not leave a rename pending).
  const failed = (await Promise.allSettled(workers)).find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed) throw failed.reason
}

/**
 * Exclusive right to collect garbage on this driver's store; resolves with the release function.
 * (gc-lock.ts has the lock itself.)
 */
export async function acquireGcLock(driver: StorageDriver, options?: GcLockOptions): Promise<() => Promise<void>> {
  const lock = await takeGcLock(driver, options)
  return () => lock.release()
}

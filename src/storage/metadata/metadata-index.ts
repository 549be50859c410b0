/**
 * The metadata index: what each repository holds (tags, manifests, sizes, platforms, created,
 * labels, referrers, push and pull times), written when it changes so that listing never reads
 * manifests or configs. Records live on the StorageDriver under `/berth/index` (paths.ts), one
 * small object per (repository, tag), per (repository, manifest) and per (repository, process)
 * for pulls, so processes sharing a bucket never rewrite each other's objects except a tag's or a
 * manifest's record, where the last writer wins as it does for the tag link itself.
 *
 * It is derived data: the registry tree is the truth, and `reindex` rebuilds every record from
 * it (keeping the push times already recorded). The rules that keep it exact:
 *
 * - A tag record is written from the tag link, never from what a request meant to write: read the
 *   link, write the record (digest, pushed-at = the link's modification time in the store's
 *   clock), read the link again, and repeat until both reads agree (`#syncTag`). Whatever order
 *   concurrent writers interleave in, the last record write is followed by a read of the final
 *   link, so the record ends equal to the link. The same loop deletes the record of a tag that
 *   is gone. Reindex derives the same time from the same link, so it agrees with the live index.
 * - A manifest record keeps the pushed-at of a record already there; a new one takes the revision
 *   link's modification time. Times nobody recorded stay null ("unknown"), never "now".
 * - Hooks (ManifestObserver) run after the change is in the tree and never fail the request: a
 *   failure is logged and the repository is reconciled on the next `refresh`.
 * - Pulls are counted in memory (`manifestPulled`, O(1)) and written by `flushPulls` to this
 *   process's own record per repository (counts since this process started counting); readers
 *   sum every process's record and take the latest time.
 *
 * Other processes' writes (instances on one bucket, `berth rm` beside `berth serve`) reach the
 * view through `changes/<instance>`: each process lists there the repositories it changed, and
 * `refresh` reads again only those (or everything, when it missed entries). The view is therefore
 * current for this process's own writes at once and for others' within one refresh interval.
 */
import { randomUUID } from 'node:crypto'
import { silentLogger, type Logger } from '../../log.js'
import { BlobStore } from '../blob-store.js'
import { PathNotFoundError, ignoreMissing, statFileOrUndefined, type FileInfo, type StorageDriver } from '../driver/storage-driver.js'
import { parseDigest } from '../digest.js'
import { BlobUnknownError } from '../errors.js'
import { listLinks, listOrEmpty, listRepositories } from '../maintenance-scan.js'
import type { ManifestObserver, ManifestPushedEvent } from '../manifest-observer.js'
import {
  INDEX_CHANGES_ROOT,
  INDEX_RECORD_FOLDERS,
  INDEX_REPOSITORIES_ROOT,
  indexChangesPath,
  indexManifestPath,
  indexPullsPath,
  indexRepositoryPath,
  indexTagPath,
  manifestRevisionLinkPath,
  manifestRevisionsPath,
  parseIndexRecordPath,
  tagCurrentLinkPath,
  tagsPath,
} from '../paths.js'
import { isTag } from '../reference.js'
import { describeManifest } from './describe.js'
import {
  CHANGES_KEPT,
  encodeRecord,
  readChangesRecord,
  readManifestRecord,
  readPullsRecord,
  readTagRecord,
  recordTime,
  RECORD_VERSION,
  type PullStat,
  type TagRecord,
} from './records.js'
import {
  MetadataView,
  RepositoryRecords,
  type ImageDetails,
  type MetadataStore,
  type RepositoryQuery,
  type RepositorySummary,
  type TagQuery,
  type TagSummary,
} from './view.js'

export interface MetadataIndexOptions {
  /** This process's name in `_pulls/` and `changes/` (letters, digits, dashes); default a new UUID. */
  readonly instance?: string
  readonly logger?: Logger
  /** How many store reads run at once while loading (default 32). */
  readonly readConcurrency?: number
}

/** What `reindex` (or reconciling one repository) changed. */
export interface ReindexReport {
  repositories: number
  tagsWritten: number
  tagsDeleted: number
  manifestsWritten: number
  manifestsDeleted: number
}

/** How often `berth serve` refreshes the view from other processes' change feeds. */
export const INDEX_REFRESH_INTERVAL_MS = 30_000
/** How often `berth serve` writes the pulls it counted. */
export const PULL_FLUSH_INTERVAL_MS = 10_000
/** How often `berth serve` reconciles the whole index with the tree (also once at start). */
export const RECONCILE_INTERVAL_MS = 24 * 3600_000

/** A change feed not rewritten for this long belongs to a process long gone: deleted by `refresh`. */
export const CHANGES_STALE_MS = 7 * 24 * 3600_000

interface TagLink {
  readonly digest: string
  readonly modTime: Date
}

export class MetadataIndex implements ManifestObserver, MetadataStore {
  readonly instance: string
  readonly #driver: StorageDriver
  readonly #blobs: BlobStore
  readonly #logger: Logger
  readonly #readConcurrency: number
  #view: MetadataView | undefined
  #loading: Promise<void> | undefined
  /** Repositories written to while a load was reading: read again once it is in place. */
  #touchedWhileLoading: Set<string> | undefined
  /** Repositories whose hook failed: reconciled by the next refresh. */
  readonly #needsRepair = new Set<string>()
  /** Pulls counted since the last flush, by repository then digest. */
  #pending = new Map<string, Map<string, { count: number; last: number }>>()
  /** This process's counts as written (or about to be), by repository then digest. */
  readonly #ownPulls = new Map<string, Map<string, PullStat>>()
  readonly #unflushedPulls = new Set<string>()
  /** This process's change feed. */
  #changeSeq = 0
  #changes: [number, string][] = []
  #changesDirty = false
  #changesWriting: Promise<void> | undefined
  /** Other processes' feeds: the last sequence number read and the file's `<modTime>/<size>`. */
  readonly #feeds = new Map<string, { seq: number; key: string }>()

  constructor(driver: StorageDriver, options: MetadataIndexOptions = {}) {
    this.#driver = driver
    this.#blobs = new BlobStore(driver)
    this.instance = options.instance ?? randomUUID()
    this.#logger = options.logger ?? silentLogger
    this.#readConcurrency = options.readConcurrency ?? 32
    indexChangesPath(this.instance) // validates the name
  }

  /** Whether the view has been loaded (queries before that wait for it). */
  get isLoaded(): boolean {
    return this.#view !== undefined
  }

  /** Loads the view from the store once; later calls share that load. Rejects when the store fails (a later call tries again). */
  ready(): Promise<void> {
    if (this.#view !== undefined) return Promise.resolve()
    return this.#reload()
  }

  // --- reads (MetadataStore) ---

  async listRepositories(query: RepositoryQuery = {}): Promise<{ total: number; items: RepositorySummary[] }> {
    await this.ready()
    return this.#loaded().listRepositories(query)
  }

  async listTags(repository: string, query: TagQuery = {}): Promise<TagSummary[] | undefined> {
    await this.ready()
    const pending = this.#pending.get(repository)
    return this.#loaded().listTags(repository, query, digest => pending?.get(digest))
  }

  async image(repository: string, digest: string): Promise<ImageDetails | undefined> {
    await this.ready()
    return this.#loaded().image(repository, digest, this.#pending.get(repository)?.get(digest))
  }

  /** One repository's records read from the store now, without loading the whole view (for CLI commands). */
  readRepository(repository: string): Promise<RepositoryRecords> {
    return this.#readRepository(repository, undefined)
  }

  #loaded(): MetadataView {
    if (this.#view === undefined) throw new Error('metadata index not loaded')
    return this.#view
  }

  // --- hooks (ManifestObserver) ---

  async manifestPushed(event: ManifestPushedEvent): Promise<void> {
    const { repository, digest, content, tags } = event
    await this.#guard(repository, async () => {
      await this.#writeManifestRecord(repository, digest, content)
      for (const tag of tags) await this.#syncTag(repository, tag)
    })
  }

  async tagDeleted(repository: string, tag: string): Promise<void> {
    await this.#guard(repository, () => this.#syncTag(repository, tag).then(() => {}))
  }

  async manifestDeleted(repository: string, digest: string, tags: readonly string[]): Promise<void> {
    await this.#guard(repository, async () => {
      await this.#forgetManifest(repository, digest)
      for (const tag of tags) await this.#syncTag(repository, tag)
    })
  }

  manifestPulled(repository: string, digest: string): void {
    let byDigest = this.#pending.get(repository)
    if (byDigest === undefined) this.#pending.set(repository, (byDigest = new Map()))
    const stat = byDigest.get(digest)
    if (stat === undefined) byDigest.set(digest, { count: 1, last: Date.now() })
    else {
      stat.count++
      stat.last = Date.now()
    }
  }

  /**
   * After garbage collection: forgets the manifests it deleted (GcReport.manifests). Each is
   * checked against the tree first, so a manifest pushed again meanwhile keeps its record.
   */
  async manifestsCollected(manifests: readonly { repository: string; digest: string }[]): Promise<void> {
    for (const { repository, digest } of manifests) {
      await this.#guard(repository, async () => {
        if ((await statFileOrUndefined(this.#driver, manifestRevisionLinkPath(repository, digest))) === undefined)
          await this.#forgetManifest(repository, digest)
      })
    }
  }

  /** Runs a hook's work: never rejects; a failure is logged and the repository is reconciled later. */
  async #guard(repository: string, work: () => Promise<void>): Promise<void> {
    try {
      await work()
    } catch (error) {
      this.#needsRepair.add(repository)
      this.#logger.warn('metadata index: update failed; the repository is reconciled on the next refresh', {
        repository,
        error: error instanceof Error ? error.message : String(error),
      })
    } finally {
      this.#noteChange(repository)
    }
  }

  // --- background work ---

  /**
   * Writes the pulls counted since the last call to this process's records. Never rejects: a
   * repository whose write failed is written again next time (the counts stay in memory).
   */
  async flushPulls(): Promise<void> {
    const batch = this.#pending
    this.#pending = new Map()
    for (const [repository, byDigest] of batch) {
      let own = this.#ownPulls.get(repository)
      if (own === undefined) this.#ownPulls.set(repository, (own = new Map()))
      for (const [digest, stat] of byDigest) {
        const before = own.get(digest)
        own.set(digest, { count: (before?.count ?? 0) + stat.count, last: Math.max(before?.last ?? 0, stat.last) })
      }
      this.#unflushedPulls.add(repository)
    }
    for (const repository of this.#unflushedPulls) {
      const own = this.#ownPulls.get(repository) ?? new Map<string, PullStat>()
      try {
        await this.#driver.putContent(indexPullsPath(repository, this.instance), encodeRecord({ v: RECORD_VERSION, pulls: Object.fromEntries(own) }))
        this.#unflushedPulls.delete(repository)
        this.#inView(repository, records => records.pulls.set(this.instance, own))
        this.#noteChange(repository)
      } catch (error) {
        this.#logger.warn('metadata index: writing pull counts failed; retried on the next flush', {
          repository,
          error: error instanceof Error ? error.message : String(error),
        })
      }
    }
  }

  /**
   * Brings the view up to date with other processes' writes (their change feeds), and reconciles
   * repositories whose hook failed here. Loads the view first when it is not loaded.
   */
  async refresh(): Promise<void> {
    if (this.#view === undefined) return this.ready()
    const { repositories, complete } = await this.#readFeeds()
    if (!complete) await this.#reload()
    else for (const repository of repositories) await this.#reloadRepository(repository)
    for (const repository of this.#needsRepair) {
      this.#needsRepair.delete(repository)
      await this.reconcileRepository(repository).catch((error: unknown) => {
        this.#needsRepair.add(repository)
        throw error
      })
    }
  }

  /** Writes what is pending (pull counts, the change feed). For shutdown and for CLI commands before they exit. */
  async close(): Promise<void> {
    await this.flushPulls()
    while (this.#changesWriting !== undefined) await this.#changesWriting
  }

  // --- rebuilding from the registry tree ---

  /**
   * Makes every record agree with the registry tree: records for tags and manifests that have
   * none (pushed-at from their link's modification time), tag records whose digest differs
   * rewritten, records of what is gone deleted. Idempotent; keeps the pushed-at of records that
   * agree. Works on a tree written by registry:2. Then reloads the view if it is loaded.
   */
  async reindex(options: { onRepository?: (name: string) => void; signal?: AbortSignal } = {}): Promise<ReindexReport> {
    const names = new Set(await listRepositories(this.#driver))
    for (const name of await this.#indexedRepositories()) names.add(name)
    const report: ReindexReport = { repositories: 0, tagsWritten: 0, tagsDeleted: 0, manifestsWritten: 0, manifestsDeleted: 0 }
    await forEachBounded([...names].sort(), 4, async name => {
      options.signal?.throwIfAborted()
      const one = await this.#reconcile(name)
      report.repositories++
      report.tagsWritten += one.tagsWritten
      report.tagsDeleted += one.tagsDeleted
      report.manifestsWritten += one.manifestsWritten
      report.manifestsDeleted += one.manifestsDeleted
      options.onRepository?.(name)
    })
    if (this.#view !== undefined) await this.#reload()
    return report
  }

  /** `reindex` for one repository. */
  async reconcileRepository(name: string): Promise<ReindexReport> {
    const report = await this.#reconcile(name)
    return { ...report, repositories: 1 }
  }

  async #reconcile(name: string): Promise<Omit<ReindexReport, 'repositories'>> {
    const report = { tagsWritten: 0, tagsDeleted: 0, manifestsWritten: 0, manifestsDeleted: 0 }
    const revisions = new Map<string, Date>()
    for (const link of await listLinks(this.#driver, manifestRevisionsPath(name))) if (link.modTime !== undefined) revisions.set(link.digest, link.modTime)
    const tagNames = (await listOrEmpty(this.#driver, tagsPath(name))).map(base).filter(isTag)
    const records = await this.#readRepository(name, undefined)
    await forEachBounded(
      [...revisions].filter(([digest]) => !records.manifests.has(digest)),
      8,
      async ([digest, modTime]) => {
        let content: Buffer
        try {
          content = await this.#blobs.getContent(digest)
        } catch (error) {
          if (error instanceof BlobUnknownError) return // a revision without bytes: nothing to describe
          throw error
        }
        await this.#writeManifestRecord(name, digest, content, recordTime(modTime))
        report.manifestsWritten++
      },
    )
    for (const digest of records.manifests.keys()) {
      if (revisions.has(digest) || (await statFileOrUndefined(this.#driver, manifestRevisionLinkPath(name, digest))) !== undefined) continue
      await this.#forgetManifest(name, digest)
      report.manifestsDeleted++
    }
    await forEachBounded([...new Set([...tagNames, ...records.tags.keys()])], 8, async tag => {
      const link = await this.#readTagLink(name, tag)
      const record = records.tags.get(tag)
      if ((link === undefined && record === undefined) || (link !== undefined && record?.digest === link.digest)) return
      const after = await this.#syncTag(name, tag)
      if (after === undefined) report.tagsDeleted++
      else report.tagsWritten++
    })
    if (revisions.size === 0 && tagNames.length === 0) await this.#driver.delete(`${indexRepositoryPath(name)}/_pulls`).catch(ignoreMissing)
    if (report.tagsWritten + report.tagsDeleted + report.manifestsWritten + report.manifestsDeleted > 0) this.#noteChange(name)
    if (this.#view !== undefined) await this.#reloadRepository(name)
    return report
  }

  // --- writing records ---

  async #writeManifestRecord(repository: string, digest: string, content: Buffer, fallbackPushedAt?: string | null): Promise<void> {
    const path = indexManifestPath(repository, digest)
    const existing = await this.#getOrUndefined(path).then(bytes => (bytes === undefined ? undefined : readManifestRecord(bytes)))
    const pushedAt =
      existing?.pushedAt ?? fallbackPushedAt ?? recordTime((await statFileOrUndefined(this.#driver, manifestRevisionLinkPath(repository, digest)))?.modTime)
    const record = await describeManifest(content, pushedAt, async config => {
      try {
        return await this.#blobs.getContent(config)
      } catch (error) {
        if (error instanceof BlobUnknownError) return undefined
        throw error
      }
    })
    await this.#driver.putContent(path, encodeRecord(record))
    this.#inView(repository, records => {
      records.manifests.set(digest, record)
      records.files.delete(path)
    })
  }

  async #forgetManifest(repository: string, digest: string): Promise<void> {
    const path = indexManifestPath(repository, digest)
    await this.#driver.delete(path).catch(ignoreMissing)
    this.#inView(repository, records => {
      records.manifests.delete(digest)
      records.files.delete(path)
    })
  }

  /**
   * Makes the tag's record equal to its link (see the file comment): resolves with the record
   * written, or undefined when the tag is gone and its record deleted.
   */
  async #syncTag(repository: string, tag: string): Promise<TagRecord | undefined> {
    const path = indexTagPath(repository, tag)
    for (let attempt = 0; attempt < 20; attempt++) {
      const link = await this.#readTagLink(repository, tag)
      let record: TagRecord | undefined
      if (link === undefined) await this.#driver.delete(path).catch(ignoreMissing)
      else {
        record = { v: RECORD_VERSION, digest: link.digest, pushedAt: recordTime(link.modTime) }
        await this.#driver.putContent(path, encodeRecord(record))
      }
      this.#inView(repository, records => {
        if (record === undefined) records.tags.delete(tag)
        else records.tags.set(tag, record)
        records.files.delete(path)
      })
      const again = await this.#readTagLink(repository, tag)
      if (again?.digest === link?.digest && again?.modTime.getTime() === link?.modTime.getTime()) return record
    }
    throw new Error(`tag ${repository}:${tag} kept changing while its record was written`)
  }

  /** The tag's current link and its modification time, or undefined when the tag does not exist. */
  async #readTagLink(repository: string, tag: string): Promise<TagLink | undefined> {
    const path = tagCurrentLinkPath(repository, tag)
    const content = await this.#getOrUndefined(path)
    if (content === undefined) return undefined
    const info = await statFileOrUndefined(this.#driver, path)
    if (info === undefined) return undefined
    try {
      return { digest: parseDigest(content.toString('utf8').trim()).value, modTime: info.modTime }
    } catch {
      return undefined // a corrupt link is no tag (as the tag store reads it)
    }
  }

  #inView(repository: string, change: (records: RepositoryRecords) => void): void {
    this.#touchedWhileLoading?.add(repository)
    const view = this.#view
    if (view === undefined) return
    const records = view.repository(repository, true)
    change(records)
    records.changed()
  }

  // --- the change feed ---

  #noteChange(repository: string): void {
    this.#changes.push([++this.#changeSeq, repository])
    if (this.#changes.length > CHANGES_KEPT) this.#changes = this.#changes.slice(-CHANGES_KEPT)
    this.#changesDirty = true
    this.#changesWriting ??= this.#writeChanges().finally(() => (this.#changesWriting = undefined))
  }

  async #writeChanges(): Promise<void> {
    while (this.#changesDirty) {
      this.#changesDirty = false
      const record = encodeRecord({ v: RECORD_VERSION, seq: this.#changeSeq, entries: this.#changes })
      try {
        await this.#driver.putContent(indexChangesPath(this.instance), record)
      } catch (error) {
        this.#logger.warn('metadata index: writing the change feed failed; other instances see these changes at their next full load', {
          error: error instanceof Error ? error.message : String(error),
        })
      }
    }
  }

  /** Reads the other processes' feeds: the repositories they changed since the last read, or `complete: false` when some changes were missed. */
  async #readFeeds(): Promise<{ repositories: Set<string>; complete: boolean }> {
    const repositories = new Set<string>()
    let complete = true
    const present = new Set<string>()
    for (const path of await listOrEmpty(this.#driver, INDEX_CHANGES_ROOT)) {
      const instance = base(path)
      if (instance === this.instance) continue
      const info = await statFileOrUndefined(this.#driver, path)
      if (info === undefined) continue
      present.add(instance)
      if (Date.now() - info.modTime.getTime() > CHANGES_STALE_MS) {
        await this.#driver.delete(path).catch(ignoreMissing)
        continue
      }
      const key = fileKey(info)
      const known = this.#feeds.get(instance)
      if (known?.key === key) continue
      const bytes = await this.#getOrUndefined(path)
      const feed = bytes === undefined ? undefined : readChangesRecord(bytes)
      if (feed === undefined) continue
      const seen = known?.seq ?? 0
      const first = feed.entries[0]?.[0] ?? feed.seq + 1
      if (feed.seq < seen || first > seen + 1) complete = false
      for (const [seq, repository] of feed.entries) if (seq > seen) repositories.add(repository)
      this.#feeds.set(instance, { seq: feed.seq, key })
    }
    for (const instance of this.#feeds.keys()) if (!present.has(instance)) this.#feeds.delete(instance)
    return { repositories, complete }
  }

  // --- loading ---

  async #load(): Promise<void> {
    this.#touchedWhileLoading = new Set()
    try {
      await this.#readFeeds() // before the records: whatever changes after this shows in the feeds
      const files = await this.#walkFiles(INDEX_REPOSITORIES_ROOT, false)
      const view = new MetadataView()
      await this.#readFiles(files, name => view.repository(name, true), this.#view)
      for (const [repository, own] of this.#ownPulls) view.repository(repository, true).pulls.set(this.instance, own)
      this.#view = view
      const touched = this.#touchedWhileLoading
      this.#touchedWhileLoading = undefined
      for (const repository of touched) await this.#reloadRepository(repository)
    } finally {
      this.#touchedWhileLoading = undefined
    }
  }

  /** A full load that replaces the view; shares a load already running. */
  #reload(): Promise<void> {
    this.#loading ??= this.#load().finally(() => (this.#loading = undefined))
    return this.#loading
  }

  async #reloadRepository(name: string): Promise<void> {
    const view = this.#view
    if (view === undefined) return
    const records = await this.#readRepository(name, view.repository(name))
    const own = this.#ownPulls.get(name)
    if (own !== undefined) records.pulls.set(this.instance, own)
    if (records.isEmpty && records.pulls.size === 0) view.repositories.delete(name)
    else view.repositories.set(name, records)
  }

  /** One repository's records as stored now; unchanged files are taken from `previous` instead of read again. */
  async #readRepository(name: string, previous: RepositoryRecords | undefined): Promise<RepositoryRecords> {
    const records = new RepositoryRecords(name)
    const files = await this.#walkFiles(indexRepositoryPath(name), true)
    const previousView = new MetadataView()
    if (previous !== undefined) previousView.repositories.set(name, previous)
    await this.#readFiles(files, () => records, previousView)
    return records
  }

  /** Record files below `root`; with `oneRepository`, nested repositories' folders are skipped. */
  async #walkFiles(root: string, oneRepository: boolean): Promise<FileInfo[]> {
    const files: FileInfo[] = []
    try {
      await this.#driver.walk(root, info => {
        if (!info.isDir) {
          files.push(info)
          return
        }
        const relative = info.path.slice(root.length + 1)
        if (oneRepository && !relative.includes('/') && !(INDEX_RECORD_FOLDERS as readonly string[]).includes(relative)) return 'skip'
      })
    } catch (error) {
      if (!(error instanceof PathNotFoundError)) throw error
    }
    return files
  }

  async #readFiles(files: readonly FileInfo[], into: (repository: string) => RepositoryRecords, previous: MetadataView | undefined): Promise<void> {
    await forEachBounded(files, this.#readConcurrency, async info => {
      const parsed = parseIndexRecordPath(info.path)
      if (parsed === undefined) return
      const key = fileKey(info)
      const before = previous?.repository(parsed.repository)
      const reuse = before?.files.get(info.path) === key
      const records = into(parsed.repository)
      if (reuse && before !== undefined) {
        if (parsed.kind === 'tag') copyIfSet(before.tags, records.tags, parsed.key)
        else if (parsed.kind === 'manifest') copyIfSet(before.manifests, records.manifests, parsed.key)
        else copyIfSet(before.pulls, records.pulls, parsed.key)
        records.files.set(info.path, key)
        return
      }
      const bytes = await this.#getOrUndefined(info.path)
      if (bytes === undefined) return
      if (parsed.kind === 'tag') {
        const record = readTagRecord(bytes)
        if (record !== undefined) records.tags.set(parsed.key, record)
      } else if (parsed.kind === 'manifest') {
        const record = readManifestRecord(bytes)
        if (record !== undefined) records.manifests.set(parsed.key, record)
      } else {
        const record = readPullsRecord(bytes)
        if (record !== undefined) records.pulls.set(parsed.key, new Map(Object.entries(record.pulls)))
      }
      records.files.set(info.path, key)
      records.changed()
    })
  }

  async #indexedRepositories(): Promise<Set<string>> {
    const names = new Set<string>()
    for (const info of await this.#walkFiles(INDEX_REPOSITORIES_ROOT, false)) {
      const parsed = parseIndexRecordPath(info.path)
      if (parsed !== undefined) names.add(parsed.repository)
    }
    return names
  }

  async #getOrUndefined(path: string): Promise<Buffer | undefined> {
    try {
      return await this.#driver.getContent(path)
    } catch (error) {
      if (error instanceof PathNotFoundError) return undefined
      throw error
    }
  }
}

function base(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1)
}

function fileKey(info: FileInfo): string {
  return `${info.modTime.getTime()}/${info.size}${info.etag === undefined ? '' : `/${info.etag}`}`
}

function copyIfSet<T>(from: Map<string, T>, to: Map<string, T>, key: string): void {
  const value = from.get(key)
  if (value !== undefined) to.set(key, value)
}

/** Runs `task` over `items`, at most `limit` at once; the first failure is thrown after the rest in flight settle. */
async function forEachBounded<T>(items: readonly T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  let failure: { error: unknown } | undefined
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const item = items[next++] as T
      try {
        await task(item)
      } catch (error) {
        failure ??= { error }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  if (failure !== undefined) throw failure.error
}

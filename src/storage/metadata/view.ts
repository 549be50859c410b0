/**
 * The metadata index in memory: every repository's tag, manifest and pull records, and the
 * queries the CLI and the UI ask (the MetadataStore contract). Pure data: it reads nothing from
 * the store; metadata-index.ts fills it and keeps it current.
 *
 * Derived figures are computed when asked, so they are exact for whatever records are present:
 * an index's size is the sum of its stored children, a repository's size the sum of its image
 * manifests (a blob two manifests share counts twice; `berth du` counts stored bytes once), pull
 * counts the sum over every process's record and last-pulled the latest of them.
 */
import type { ManifestRecord, PullStat, TagRecord } from './records.js'

export type SortOrder = 'asc' | 'desc'

export interface RepositoryQuery {
  /** Only names starting with this. */
  readonly prefix?: string
  /** Only names containing this (case-insensitive). */
  readonly search?: string
  readonly sort?: 'name' | 'pushed' | 'size'
  /** Default: ascending by name, descending by pushed time and size. */
  readonly order?: SortOrder
  readonly offset?: number
  readonly limit?: number
}

export interface RepositorySummary {
  readonly name: string
  /** How many tags. */
  readonly tags: number
  /** The latest tag push, ISO 8601, or null when no tag's time is known. */
  readonly lastPushed: string | null
  readonly size: number
}

export interface TagQuery {
  readonly sort?: 'pushed' | 'name'
  /** Default: ascending by name, descending by pushed time. */
  readonly order?: SortOrder
  readonly offset?: number
  readonly limit?: number
}

export interface TagSummary {
  readonly tag: string
  readonly digest: string
  /** Undefined when the manifest has no record (yet): the tag is listed with what is known. */
  readonly mediaType: string | undefined
  readonly size: number | undefined
  readonly platforms: readonly string[]
  readonly created: string | null
  readonly pushedAt: string | null
  readonly lastPulledAt: string | null
  readonly pullCount: number
}

export interface Referrer {
  readonly digest: string
  readonly mediaType: string
  readonly artifactType: string | undefined
}

export interface ImageDetails extends ManifestRecord {
  readonly digest: string
  /** The config's `created`, or for an index the latest of its stored children's (as in listTags). */
  readonly created?: string
  /** For an index: the sum over its stored children. */
  readonly totalSize: number
  readonly tags: readonly string[]
  readonly referrers: readonly Referrer[]
  readonly lastPulledAt: string | null
  readonly pullCount: number
}

/** The read side of the metadata index, narrow enough for another backend (PostgreSQL) later. */
export interface MetadataStore {
  listRepositories(query?: RepositoryQuery): Promise<{ total: number; items: RepositorySummary[] }>
  /** Undefined when the repository has no records. */
  listTags(repository: string, query?: TagQuery): Promise<TagSummary[] | undefined>
  /** Undefined when the manifest has no record in the repository. */
  image(repository: string, digest: string): Promise<ImageDetails | undefined>
}

/** One repository's records. `files` remembers what each record file looked like when read. */
export class RepositoryRecords {
  readonly tags = new Map<string, TagRecord>()
  readonly manifests = new Map<string, ManifestRecord>()
  /** By instance, then digest. */
  readonly pulls = new Map<string, Map<string, PullStat>>()
  /** Record path → `<modTime ms>/<size>` as last read, to skip re-reading unchanged files. */
  readonly files = new Map<string, string>()
  #summary: RepositorySummary | undefined

  constructor(readonly name: string) {}

  get isEmpty(): boolean {
    return this.tags.size === 0 && this.manifests.size === 0
  }

  /** Call after any change to the records. */
  changed(): void {
    this.#summary = undefined
  }

  summary(): RepositorySummary {
    if (this.#summary !== undefined) return this.#summary
    let lastPushed: number | undefined
    for (const tag of this.tags.values()) {
      const time = tag.pushedAt === null ? undefined : Date.parse(tag.pushedAt)
      if (time !== undefined && (lastPushed === undefined || time > lastPushed)) lastPushed = time
    }
    let size = 0
    for (const manifest of this.manifests.values()) size += manifest.size
    this.#summary = { name: this.name, tags: this.tags.size, lastPushed: lastPushed === undefined ? null : new Date(lastPushed).toISOString(), size }
    return this.#summary
  }

  /** A manifest's size: its own, or for an index the sum over its stored children (nested indexes too). */
  sizeOf(digest: string, seen = new Set<string>()): number | undefined {
    const record = this.manifests.get(digest)
    if (record === undefined || seen.has(digest)) return undefined
    if (record.children === undefined) return record.size
    seen.add(digest)
    let total = 0
    for (const child of new Set(record.children)) total += this.sizeOf(child, seen) ?? 0
    return total
  }

  /** An image's `created`, or for an index the latest of its stored children's. */
  createdOf(digest: string): string | null {
    const record = this.manifests.get(digest)
    if (record === undefined) return null
    if (record.created !== undefined) return record.created
    let latest: string | null = null
    for (const child of record.children ?? []) {
      const created = this.manifests.get(child)?.created
      if (created !== undefined && (latest === null || Date.parse(created) > Date.parse(latest))) latest = created
    }
    return latest
  }

  /** Summed over every process's record, plus `pending` (this process's pulls not yet written). */
  pullsOf(digest: string, pending: PullStat | undefined): { count: number; last: number | undefined } {
    let count = pending?.count ?? 0
    let last = pending?.last
    for (const byDigest of this.pulls.values()) {
      const stat = byDigest.get(digest)
      if (stat === undefined) continue
      count += stat.count
      if (last === undefined || stat.last > last) last = stat.last
    }
    return { count, last }
  }
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** Unknown times (null) sort after every known one, whatever the order. */
function compareTimes(a: string | null, b: string | null, order: SortOrder): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? 1 : -1
  const difference = Date.parse(a) - Date.parse(b)
  return order === 'asc' ? difference : -difference
}

function pageOf<T>(items: T[], offset = 0, limit = Number.POSITIVE_INFINITY): T[] {
  const start = Math.max(0, Math.floor(offset))
  return items.slice(start, Number.isFinite(limit) ? start + Math.max(0, Math.floor(limit)) : undefined)
}

/** Every repository's records, and the queries over them. */
export class MetadataView {
  readonly repositories = new Map<string, RepositoryRecords>()

  /** A view of just these repositories' records. */
  static of(records: readonly RepositoryRecords[]): MetadataView {
    const view = new MetadataView()
    for (const one of records) view.repositories.set(one.name, one)
    return view
  }

  repository(name: string, create: true): RepositoryRecords
  repository(name: string, create?: boolean): RepositoryRecords | undefined
  repository(name: string, create = false): RepositoryRecords | undefined {
    let records = this.repositories.get(name)
    if (records === undefined && create) {
      records = new RepositoryRecords(name)
      this.repositories.set(name, records)
    }
    return records
  }

  listRepositories(query: RepositoryQuery = {}): { total: number; items: RepositorySummary[] } {
    const sort = query.sort ?? 'name'
    const order = query.order ?? (sort === 'name' ? 'asc' : 'desc')
    const search = query.search?.toLowerCase()
    const matching: RepositorySummary[] = []
    for (const records of this.repositories.values()) {
      if (records.isEmpty) continue
      if (query.prefix !== undefined && !records.name.startsWith(query.prefix)) continue
      if (search !== undefined && !records.name.includes(search)) continue
      matching.push(records.summary())
    }
    const byName = (a: RepositorySummary, b: RepositorySummary) => compareText(a.name, b.name)
    const compare =
      sort === 'name'
        ? (a: RepositorySummary, b: RepositorySummary) => (order === 'asc' ? byName(a, b) : byName(b, a))
        : sort === 'size'
          ? (a: RepositorySummary, b: RepositorySummary) => (order === 'asc' ? a.size - b.size : b.size - a.size) || byName(a, b)
          : (a: RepositorySummary, b: RepositorySummary) => compareTimes(a.lastPushed, b.lastPushed, order) || byName(a, b)
    matching.sort(compare)
    return { total: matching.length, items: pageOf(matching, query.offset, query.limit) }
  }

  listTags(name: string, query: TagQuery = {}, pending?: (digest: string) => PullStat | undefined): TagSummary[] | undefined {
    const records = this.repositories.get(name)
    if (records === undefined || records.isEmpty) return undefined
    const sort = query.sort ?? 'name'
    const order = query.order ?? (sort === 'name' ? 'asc' : 'desc')
    const tags: TagSummary[] = []
    for (const [tag, record] of records.tags) {
      const manifest = records.manifests.get(record.digest)
      const pulls = records.pullsOf(record.digest, pending?.(record.digest))
      tags.push({
        tag,
        digest: record.digest,
        mediaType: manifest?.mediaType,
        size: records.sizeOf(record.digest),
        platforms: manifest?.platforms ?? [],
        created: records.createdOf(record.digest),
        pushedAt: record.pushedAt,
        lastPulledAt: pulls.last === undefined ? null : new Date(pulls.last).toISOString(),
        pullCount: pulls.count,
      })
    }
    const byName = (a: TagSummary, b: TagSummary) => compareText(a.tag, b.tag)
    tags.sort(
      sort === 'name' ? (a, b) => (order === 'asc' ? byName(a, b) : byName(b, a)) : (a, b) => compareTimes(a.pushedAt, b.pushedAt, order) || byName(a, b),
    )
    return pageOf(tags, query.offset, query.limit)
  }

  image(name: string, digest: string, pending?: PullStat): ImageDetails | undefined {
    const records = this.repositories.get(name)
    const record = records?.manifests.get(digest)
    if (records === undefined || record === undefined) return undefined
    const referrers: Referrer[] = []
    for (const [other, manifest] of records.manifests) {
      if (manifest.subject === digest) referrers.push({ digest: other, mediaType: manifest.mediaType, artifactType: manifest.artifactType })
    }
    referrers.sort((a, b) => compareText(a.digest, b.digest))
    const tags = [...records.tags].filter(([, tag]) => tag.digest === digest).map(([tag]) => tag)
    const pulls = records.pullsOf(digest, pending)
    const created = records.createdOf(digest)
    return {
      ...record,
      ...(created === null ? {} : { created }),
      digest,
      totalSize: records.sizeOf(digest) ?? 0,
      tags: tags.sort(compareText),
      referrers,
      lastPulledAt: pulls.last === undefined ? null : new Date(pulls.last).toISOString(),
      pullCount: pulls.count,
    }
  }
}

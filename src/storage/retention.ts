/**
 * Retention: which tags and images the configured policies remove (`planRetention`, pure, from the
 * metadata index's records and an injected clock), and removing them (`applyRetention`) through the
 * same store calls as the API's DELETE. `berth gc` (or serve's GC run after retention) then frees
 * the bytes nothing references any more.
 *
 * Semantics (zot's and Harbor's, stated once here and in the README):
 * - The FIRST policy whose `repositories` globs match a repository applies to it (as access rules
 *   and zot); a repository no policy matches keeps everything.
 * - A tag is kept when ANY keep rule keeps it: one of the newest `last` tags by push time, a whole-tag
 *   match of one of the `tags` regular expressions, pushed within `pushedWithin`, pulled within
 *   `pulledWithin`. A policy without `keep` keeps every tag. A tag with no recorded push time counts
 *   as new: it is always kept (and ranks newest for `last`); times come from the durable index
 *   (the tag link's modification time), never from when the index was (re)built (zot#4233).
 * - A removed tag is untagged; the image (manifest) goes too when none of its tags is kept and
 *   nothing kept needs it: images a kept index lists (children) and referrers of kept images
 *   (signatures, SBOMs) stay, and untagged manifests stay unless the policy says `untagged:
 *   olderThan` and they were pushed longer ago than that. Children of a removed index and referrers
 *   of a removed image go with it.
 * - Applying re-checks the live tree: a tag is removed only while it still names the planned digest
 *   (a push that moved it wins), and an image only while no tag names it or a tagged index lists it.
 */
import { compileGlob } from '../access/rules.js'
import type { Actor, EventSink } from '../events/events.js'
import { parseDigest } from './digest.js'
import type { StorageDriver } from './driver/storage-driver.js'
import { ManifestUnknownError } from './errors.js'
import { parseManifest } from './manifest.js'
import { listRepositories } from './maintenance-scan.js'
import type { MetadataIndex } from './metadata/metadata-index.js'
import type { RepositoryRecords } from './metadata/view.js'
import type { RegistryStore } from './registry-store.js'

/** One policy as configured (config/values.ts parses it). */
export interface RetentionPolicy {
  /** Repository globs as in the access file (`ci/*`, `team/**`). */
  readonly repositories: readonly string[]
  /** Keep rules; undefined keeps every tag (a policy for untagged manifests only). */
  readonly keep?: RetentionKeep | undefined
  /** Delete untagged manifests pushed longer ago than this; undefined keeps them. */
  readonly untagged?: { readonly olderThanMs: number } | undefined
}

export interface RetentionKeep {
  /** The newest N tags by push time. */
  readonly last?: number | undefined
  /** Regular expressions a whole tag must match (`^v\d+\.\d+\.\d+$`, `latest`). */
  readonly tags?: readonly string[] | undefined
  readonly pushedWithinMs?: number | undefined
  readonly pulledWithinMs?: number | undefined
}

/** One row of a plan: a tag removed (and maybe its image), or an untagged manifest removed. */
export interface RetentionItem {
  readonly repository: string
  /** Null for a manifest removed without a tag (untagged, a removed index's child, a referrer). */
  readonly tag: string | null
  readonly digest: string
  /** ISO 8601 or null (unknown). */
  readonly pushed: string | null
  readonly lastPulled: string | null
  /**
   * Bytes of the image(s) this row removes (config and layers, an index's removed children
   * included), each image counted once in the plan; 0 when the image stays or another row counted
   * it. Layers a kept image shares are counted too: GC frees only what nothing references.
   */
  readonly bytes: number
  /** Whether the manifest itself is deleted (else only the tag). */
  readonly deletesManifest: boolean
  readonly reason: string
}

export interface RetentionPlan {
  readonly now: string
  /** Repositories a policy matched. */
  readonly repositories: number
  readonly items: readonly RetentionItem[]
  readonly tags: number
  readonly manifests: number
  readonly bytes: number
}

/** A policy compiled once: globs and tag patterns as RegExps. */
export interface CompiledPolicy {
  readonly index: number
  readonly policy: RetentionPolicy
  readonly globs: readonly RegExp[]
  readonly patterns: readonly RegExp[]
}

/** Compiles policies; throws Error naming the first bad glob or pattern (config parsing checks the same). */
export function compilePolicies(policies: readonly RetentionPolicy[]): CompiledPolicy[] {
  return policies.map((policy, index) => {
    const globs = policy.repositories.map(glob => {
      const compiled = compileGlob(glob)
      if (typeof compiled === 'string') throw new Error(compiled)
      return compiled
    })
    const patterns = (policy.keep?.tags ?? []).map(compileTagPattern)
    return { index, policy, globs, patterns }
  })
}

/** A keep pattern as an anchored RegExp (the whole tag must match). Throws SyntaxError. */
export function compileTagPattern(pattern: string): RegExp {
  return new RegExp(`^(?:${pattern})$`)
}

/** The first policy whose globs match `repository`, or undefined. */
export function policyFor(policies: readonly CompiledPolicy[], repository: string): CompiledPolicy | undefined {
  return policies.find(policy => policy.globs.some(glob => glob.test(repository)))
}

/** Plans every repository in `records` (one per repository; those no policy matches are skipped). */
export function planRetention(records: readonly RepositoryRecords[], policies: readonly CompiledPolicy[], now: Date): RetentionPlan {
  const items: RetentionItem[] = []
  let repositories = 0
  for (const repository of [...records].sort((a, b) => compareText(a.name, b.name))) {
    const policy = policyFor(policies, repository.name)
    if (policy === undefined) continue
    repositories++
    items.push(...planRepository(repository, policy, now.getTime()))
  }
  return {
    now: now.toISOString(),
    repositories,
    items,
    tags: items.filter(item => item.tag !== null).length,
    manifests: new Set(items.filter(item => item.deletesManifest).map(item => `${item.repository}@${item.digest}`)).size,
    bytes: items.reduce((sum, item) => sum + item.bytes, 0),
  }
}

/** One repository's rows: removed tags (oldest push first), then manifests removed without a tag. */
export function planRepository(records: RepositoryRecords, compiled: CompiledPolicy, now: number): RetentionItem[] {
  const { policy } = compiled
  const time = (iso: string | null) => (iso === null ? undefined : Date.parse(iso))
  const lastPulled = (digest: string) => records.pullsOf(digest, undefined).last

  // 1. Tags: kept when any rule keeps them.
  const tags = [...records.tags].map(([tag, record]) => ({ tag, digest: record.digest, pushedAt: record.pushedAt, pushed: time(record.pushedAt) }))
  const newest = [...tags].sort((a, b) => (b.pushed ?? Infinity) - (a.pushed ?? Infinity) || compareText(a.tag, b.tag))
  const keep = policy.keep
  const inLast = new Set(keep?.last === undefined ? [] : newest.slice(0, keep.last).map(tag => tag.tag))
  const removedTags: (typeof tags)[number][] = []
  const keptDigests = new Map<string, string>() // digest → why it is kept
  for (const tag of tags) {
    const kept =
      keep === undefined ||
      tag.pushed === undefined ||
      inLast.has(tag.tag) ||
      compiled.patterns.some(pattern => pattern.test(tag.tag)) ||
      (keep.pushedWithinMs !== undefined && tag.pushed >= now - keep.pushedWithinMs) ||
      (keep.pulledWithinMs !== undefined && (lastPulled(tag.digest) ?? -Infinity) >= now - keep.pulledWithinMs)
    if (kept) {
      if (!keptDigests.has(tag.digest)) keptDigests.set(tag.digest, `also tagged ${tag.tag}, which is kept`)
    } else removedTags.push(tag)
  }

  // 2. Untagged manifests that are no part of another one (no index lists them, their subject is
  //    not stored here): kept unless the policy expires them.
  const tagged = new Set(tags.map(tag => tag.digest))
  const parts = new Set<string>()
  for (const [, manifest] of records.manifests) for (const child of manifest.children ?? []) parts.add(child)
  for (const [digest, manifest] of records.manifests) if (manifest.subject !== undefined && records.manifests.has(manifest.subject)) parts.add(digest)
  const expired: string[] = []
  for (const [digest, manifest] of records.manifests) {
    if (tagged.has(digest) || parts.has(digest)) continue
    const pushed = time(manifest.pushedAt)
    const olderThan = policy.untagged?.olderThanMs
    if (olderThan !== undefined && pushed !== undefined && pushed < now - olderThan) expired.push(digest)
    else if (!keptDigests.has(digest)) keptDigests.set(digest, 'untagged, kept by the policy')
  }

  // 3. What kept manifests need: children of kept indexes, referrers of kept manifests.
  const kept = keepClosure(records, keptDigests)

  // 4. Rows. Removed images, then their parts (breadth first, so a parent is deleted before its children).
  const items: RetentionItem[] = []
  const counted = new Set<string>()
  const removedDigestListed = new Set<string>()
  const doomed = (digest: string) => records.manifests.has(digest) && !kept.has(digest)
  const bytesOf = (digest: string): number => {
    if (counted.has(digest) || !doomed(digest)) return 0
    counted.add(digest)
    const manifest = records.manifests.get(digest)!
    let total = manifest.size
    for (const child of new Set(manifest.children ?? [])) total += bytesOf(child)
    return total
  }
  const row = (tag: string | null, digest: string, pushed: string | null, reason: string): RetentionItem => {
    const pulled = lastPulled(digest)
    const deletesManifest = doomed(digest) && (tag === null || !removedDigestListed.has(digest))
    if (deletesManifest) removedDigestListed.add(digest)
    const why = tag !== null && !doomed(digest) ? `${reason}; the image stays (${kept.get(digest) ?? 'not in the index'})` : reason
    return {
      repository: records.name,
      tag,
      digest,
      pushed,
      lastPulled: pulled === undefined ? null : new Date(pulled).toISOString(),
      bytes: bytesOf(digest),
      deletesManifest,
      reason: why,
    }
  }
  removedTags.sort((a, b) => (a.pushed ?? Infinity) - (b.pushed ?? Infinity) || compareText(a.tag, b.tag))
  for (const tag of removedTags) items.push(row(tag.tag, tag.digest, tag.pushedAt, tagReason(compiled, keep)))
  const queue: { digest: string; reason: string }[] = []
  for (const digest of expired.sort()) {
    if (!doomed(digest)) continue
    queue.push({ digest, reason: `untagged, pushed more than ${formatMs(policy.untagged!.olderThanMs)} ago` })
  }
  const listed = new Set(removedTags.map(tag => tag.digest))
  const roots = [...listed].filter(doomed)
  for (const { digest, reason } of queue) {
    items.push(row(null, digest, records.manifests.get(digest)!.pushedAt, reason))
    listed.add(digest)
    roots.push(digest)
  }
  // Parts of removed manifests: their children, their referrers.
  for (let i = 0; i < roots.length; i++) {
    const parent = roots[i]!
    const dependents: { digest: string; reason: string }[] = []
    for (const child of records.manifests.get(parent)?.children ?? [])
      dependents.push({ digest: child, reason: `listed by the removed index ${shortDigest(parent)}` })
    for (const [digest, manifest] of records.manifests) {
      if (manifest.subject === parent) dependents.push({ digest, reason: `referrer of the removed ${shortDigest(parent)}` })
    }
    for (const dependent of dependents.sort((a, b) => compareText(a.digest, b.digest))) {
      if (listed.has(dependent.digest) || !doomed(dependent.digest)) continue
      listed.add(dependent.digest)
      roots.push(dependent.digest)
      items.push(row(null, dependent.digest, records.manifests.get(dependent.digest)!.pushedAt, dependent.reason))
    }
  }
  return items
}

/**
 * Every manifest kept: the roots, the children of kept indexes and the referrers of kept
 * manifests, to a fixed point. Values say why (for the "image stays" explanation).
 */
function keepClosure(records: RepositoryRecords, roots: ReadonlyMap<string, string>): Map<string, string> {
  const kept = new Map(roots)
  const work = [...roots.keys()]
  const referrers = new Map<string, string[]>()
  for (const [digest, manifest] of records.manifests) {
    if (manifest.subject === undefined) continue
    const list = referrers.get(manifest.subject) ?? []
    list.push(digest)
    referrers.set(manifest.subject, list)
  }
  for (let digest = work.pop(); digest !== undefined; digest = work.pop()) {
    const add = (other: string, why: string) => {
      if (kept.has(other)) return
      kept.set(other, why)
      work.push(other)
    }
    for (const child of records.manifests.get(digest)?.children ?? []) add(child, `listed by the kept index ${shortDigest(digest)}`)
    for (const referrer of referrers.get(digest) ?? []) add(referrer, `referrer of the kept ${shortDigest(digest)}`)
  }
  return kept
}

function tagReason(compiled: CompiledPolicy, keep: RetentionKeep | undefined): string {
  const parts: string[] = []
  if (keep?.last !== undefined) parts.push(`not among the newest ${keep.last}`)
  if (compiled.patterns.length > 0) parts.push('matches no kept tag pattern')
  if (keep?.pushedWithinMs !== undefined) parts.push(`pushed more than ${formatMs(keep.pushedWithinMs)} ago`)
  if (keep?.pulledWithinMs !== undefined) parts.push(`not pulled within ${formatMs(keep.pulledWithinMs)}`)
  return `policy ${compiled.index + 1}: ${parts.join(', ')}`
}

// --- applying ---

export interface ApplyOptions {
  /** Told of each tag and manifest removed (audit log, webhooks), as user `retention`. */
  readonly events?: EventSink | undefined
  /** Checked between items: true stops the run there (read-only mode switched on, shutdown). */
  readonly shouldStop?: (() => boolean) | undefined
  /** Test hook: runs after the tags of a repository are removed, before its manifests are. */
  readonly beforeManifests?: ((repository: string) => Promise<void>) | undefined
}

export interface RetentionResult {
  /** The rows applied (a row whose tag was kept is not here; its manifest deletion may still be). */
  readonly removed: readonly RetentionItem[]
  /** Rows left alone, with why (a push moved the tag, a tag names the image again, …). */
  readonly skipped: readonly { readonly item: RetentionItem; readonly why: string }[]
  readonly tags: number
  readonly manifests: number
  readonly bytes: number
  /** True when `shouldStop` ended the run early. */
  readonly stopped: boolean
}

export const RETENTION_ACTOR: Actor = { user: 'retention' }

/**
 * Removes what `plan` lists, re-checking the live tree first: a tag only while it still names the
 * planned digest, a manifest only while no tag names it and no tagged index (or tagged image's
 * referrer chain) needs it. Same calls as the API's DELETE (no lock: GC tolerates them).
 */
export async function applyRetention(store: RegistryStore, plan: RetentionPlan, options: ApplyOptions = {}): Promise<RetentionResult> {
  const removed: RetentionItem[] = []
  const skipped: { item: RetentionItem; why: string }[] = []
  const byRepository = new Map<string, RetentionItem[]>()
  for (const item of plan.items) {
    const list = byRepository.get(item.repository) ?? []
    list.push(item)
    byRepository.set(item.repository, list)
  }
  let tags = 0
  let manifests = 0
  const emit = (repository: string, target: 'tag' | 'manifest', reference: string) =>
    options.events?.emit({ action: 'delete', repository, target, reference }, RETENTION_ACTOR)
  const result = (stopped: boolean): RetentionResult => ({
    removed,
    skipped,
    tags,
    manifests,
    bytes: removed.reduce((sum, item) => sum + item.bytes, 0),
    stopped,
  })
  for (const [repository, items] of byRepository) {
    // Tags first, each only while it still names the planned digest.
    const untagged = new Set<RetentionItem>()
    for (const item of items) {
      if (item.tag === null) continue
      if (options.shouldStop?.()) return result(true)
      const why = await untagIfStill(store, repository, item.tag, item.digest)
      if (why !== undefined) {
        skipped.push({ item, why })
        continue
      }
      tags++
      untagged.add(item)
      emit(repository, 'tag', item.tag)
      if (!item.deletesManifest) removed.push(item)
    }
    const doomed = items.filter(item => item.deletesManifest)
    if (doomed.length === 0) continue
    await options.beforeManifests?.(repository)
    // Then manifests, each only while nothing tagged needs it (read from the store now).
    const needed = await liveNeeds(store, repository)
    for (const item of doomed) {
      if (options.shouldStop?.()) return result(true)
      const why = needed.get(item.digest)
      let deleted = false
      if (why === undefined) {
        try {
          await store.manifests.delete(repository, item.digest)
          deleted = true
          manifests++
          emit(repository, 'manifest', item.digest)
        } catch (error) {
          if (!(error instanceof ManifestUnknownError)) throw error
        }
      }
      const tagDone = item.tag === null || untagged.has(item)
      if (deleted) removed.push(tagDone ? item : { ...item, tag: null, reason: `${item.reason}; its tag had moved, the image went` })
      else if (item.tag !== null && tagDone)
        removed.push({ ...item, deletesManifest: false, bytes: 0, reason: `${item.reason}; the image stays (${why ?? 'gone already'})` })
      else if (item.tag === null) skipped.push({ item, why: why ?? 'the manifest is gone already' })
    }
  }
  return result(false)
}

/** Removes `tag` if it names `digest` now; else says why not. */
async function untagIfStill(store: RegistryStore, repository: string, tag: string, digest: string): Promise<string | undefined> {
  try {
    const current = (await store.tags.resolve(repository, tag)).value
    if (current !== digest) return `a push moved the tag to ${current}`
    await store.manifests.delete(repository, tag)
    return undefined
  } catch (error) {
    if (error instanceof ManifestUnknownError) return 'the tag is gone already'
    throw error
  }
}

/**
 * What the live tree needs in `repository` now: every digest a tag names, the children of those
 * (indexes), and referrers of anything needed, read from the store (tag links, manifest bytes,
 * the referrers index), not from the metadata index, so pushes from any process count.
 */
async function liveNeeds(store: RegistryStore, repository: string): Promise<Map<string, string>> {
  const needed = new Map<string, string>()
  let tags: string[]
  try {
    tags = await store.tags.list(repository)
  } catch {
    return needed
  }
  const work: string[] = []
  for (const tag of tags) {
    try {
      const digest = (await store.tags.resolve(repository, tag)).value
      if (!needed.has(digest)) {
        needed.set(digest, `tagged ${tag} now`)
        work.push(digest)
      }
    } catch (error) {
      if (!(error instanceof ManifestUnknownError)) throw error
    }
  }
  for (let digest = work.pop(); digest !== undefined; digest = work.pop()) {
    const add = (other: string, why: string) => {
      if (needed.has(other)) return
      needed.set(other, why)
      work.push(other)
    }
    try {
      const manifest = parseManifest((await store.manifests.get(repository, digest)).content)
      for (const child of manifest.manifests) add(child.digest, `listed by the tagged index ${shortDigest(digest)}`)
    } catch {
      // not stored or not a manifest: nothing it lists
    }
    try {
      const page = await store.referrers.page(repository, parseDigest(digest), { maxEntries: Number.MAX_SAFE_INTEGER, maxBytes: Number.POSITIVE_INFINITY })
      for (const referrer of page.descriptors) add(referrer.digest, `referrer of ${shortDigest(digest)}, which is kept`)
    } catch {
      // no referrers index
    }
  }
  return needed
}

// --- formatting helpers ---

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function shortDigest(digest: string): string {
  const colon = digest.indexOf(':')
  return digest.slice(0, colon + 13)
}

/** 2592000000 → "30d", 5400000 → "90m". */
export function formatMs(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`
  }
  return `${ms}ms`
}

// --- reading the store ---

/**
 * The plan for the store as it is now: the repositories in the tree that a policy matches, each
 * with its records read from the store (every process's pulls included), never from a cached view.
 * Tags or manifests the index does not know yet are left out, which only ever keeps more.
 */
export async function planFromStore(
  driver: StorageDriver,
  index: Pick<MetadataIndex, 'readRepository'>,
  policies: readonly CompiledPolicy[],
  now: Date,
): Promise<RetentionPlan> {
  const names = (await listRepositories(driver)).filter(name => policyFor(policies, name) !== undefined)
  const records: RepositoryRecords[] = []
  for (const name of names) records.push(await index.readRepository(name))
  return planRetention(records, policies, now)
}

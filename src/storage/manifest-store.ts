/**
 * Manifests (distribution's `manifestStore` + `tagStore` wiring): bytes stored as pushed in the
 * blob store, a revision link per repository, tags, and the referrers index.
 *
 * Write order on PUT is what makes a crash harmless: blob bytes, then the revision link, then
 * the referrer link, then the tag. Whatever step a `kill -9` interrupts, nothing points at bytes
 * that are not there. Deletions are here too, so garbage collection can reuse them.
 */
import { PathNotFoundError, statFileOrUndefined, type StorageDriver } from './driver/storage-driver.js'
import type { BlobStore } from './blob-store.js'
import { digestOf, isDigest, parseDigest, type Digest } from './digest.js'
import { BlobUnknownError, DigestMismatchError, ManifestBlobUnknownError, ManifestUnknownError } from './errors.js'
import { MAX_DESCRIPTORS, parseManifest, storedMediaType, type ParsedManifest } from './manifest.js'
import { ManifestCache } from './manifest-cache.js'
import type { ManifestObserver } from './manifest-observer.js'
import { manifestRevisionLinkPath } from './paths.js'
import { ReadBatcher } from './read-batcher.js'
import { assertTag } from './reference.js'
import type { ReferrerStore } from './referrer-store.js'
import type { TagStore } from './tag-store.js'

export interface StoredManifest {
  readonly digest: string
  readonly mediaType: string
  readonly content: Buffer
}

export interface PutManifestResult {
  readonly digest: string
  readonly mediaType: string
  /** The `subject` digest, when the manifest has one (the handler answers with `OCI-Subject`). */
  readonly subject?: string
  /** The tags now pointing at the manifest from `PutManifestOptions.tags`, in the order given, once each. */
  readonly tags: readonly string[]
}

export interface PutManifestOptions {
  /**
   * More tags to point at the manifest (the spec's `?tag=` on a push by digest). Every one is
   * checked before anything is written: one invalid tag refuses the whole push with
   * TagInvalidError. Written after the revision link, like the reference tag.
   */
  tags?: readonly string[]
  /**
   * Whether the push may move a tag that already points at another manifest (default true). When
   * false, every tag is checked before anything is written and written only if absent (a create
   * race lost to another manifest is TagExistsError too); pointing a tag again at the manifest it
   * already names is allowed.
   */
  overwrite?: boolean
}

export interface ManifestStoreOptions {
  /**
   * Accept manifests whose layers, or indexes whose child manifests, are not stored in the
   * repository (the spec lets a registry do so; partial copies of multi-platform images need it).
   * The config must still be stored. Off: such a push is ManifestBlobUnknownError.
   */
  allowSparse?: boolean
  /** Told about every committed put and delete (manifest-observer.ts); awaited before they resolve. */
  observer?: ManifestObserver
}

/** A reference is a digest when it has a colon (tags cannot), else a tag. */
export function isDigestReference(reference: string): boolean {
  return reference.includes(':')
}

/**
 * How many existence checks of one manifest's references run at once. A push names each blob or
 * child once after de-duplication, and a manifest has at most MAX_DESCRIPTORS of them; this keeps
 * one large manifest from queueing thousands of storage calls ahead of other clients' requests.
 */
const REFERENCE_CHECKS_AT_ONCE = 8

/** Tags whose last resolved digest is remembered (ManifestStore.#lastResolved); the oldest go first. */
const MAX_LAST_RESOLVED = 10_000

export class ManifestStore {
  /**
   * Tag resolutions share reads (ReadBatcher's rule: never a read that started before the request).
   * Up to 4 reads of one tag at once: a request then waits about one store round trip, not more.
   */
  readonly #resolving = new ReadBatcher<Digest>(undefined, 4)
  /** `name tag` → the digest it last resolved to: a guess for the next read, never an answer. */
  readonly #lastResolved = new Map<string, Digest>()
  readonly #allowSparse: boolean
  readonly #observer: ManifestObserver | undefined

  constructor(
    private readonly driver: StorageDriver,
    private readonly blobs: BlobStore,
    private readonly tags: TagStore,
    private readonly referrers: ReferrerStore,
    /** Bytes by digest only (immutable); whether a manifest exists is always read from the store. */
    readonly cache: ManifestCache = new ManifestCache(),
    options: ManifestStoreOptions = {},
  ) {
    this.#allowSparse = options.allowSparse ?? false
    this.#observer = options.observer
  }

  /**
   * Stores `content` byte for byte under `reference` (a tag or the manifest's own digest).
   * Throws DigestInvalidError / TagInvalidError for a bad reference or tag, DigestMismatchError
   * when the body does not hash to the digest reference, ManifestInvalidError (also for more than
   * MAX_DESCRIPTORS layers or children), ManifestBlobUnknownError when the config, a layer or a
   * child manifest is not in the repository (layers and children may be absent with
   * `allowSparse`; a `subject` need not be there ever).
   */
  async put(name: string, reference: string, content: Buffer, contentType?: string, options: PutManifestOptions = {}): Promise<PutManifestResult> {
    let expected: Digest | undefined
    if (isDigestReference(reference)) expected = parseDigest(reference)
    else assertTag(reference)
    const extraTags = [...new Set(options.tags ?? [])]
    for (const tag of extraTags) assertTag(tag)
    const digest = digestOf(content, expected?.algorithm ?? 'sha256')
    if (expected !== undefined && expected.value !== digest.value) throw new DigestMismatchError(expected.value, digest.value)
    const manifest = parseManifest(content, contentType, MAX_DESCRIPTORS)
    const allTags = expected === undefined ? [reference, ...extraTags] : extraTags
    const overwrite = options.overwrite ?? true
    if (!overwrite) await this.tags.assertNoneMoves(name, allTags, digest)
    await this.#checkReferences(name, manifest)

    await this.blobs.putContent(digest, content)
    await this.driver.putContent(manifestRevisionLinkPath(name, digest), Buffer.from(digest.value))
    let subject: Digest | undefined
    if (manifest.subject !== undefined) {
      subject = parseDigest(manifest.subject.digest)
      await this.referrers.add(name, subject, digest)
    }
    for (const tag of allTags) {
      if (overwrite) await this.tags.tag(name, tag, digest)
      else await this.tags.tagIfAbsent(name, tag, digest)
    }
    this.cache.set(digest.value, { content, mediaType: manifest.storedMediaType })
    const tagged = expected === undefined ? [reference, ...extraTags.filter(tag => tag !== reference)] : extraTags
    await this.#observer?.manifestPushed({ repository: name, digest: digest.value, content, tags: tagged })
    const result: { digest: string; mediaType: string; subject?: string; tags: string[] } = {
      digest: digest.value,
      mediaType: manifest.mediaType,
      tags: extraTags,
    }
    if (subject !== undefined) result.subject = subject.value
    return result
  }

  /**
   * Touches every blob and child revision the manifest names, each once, a few at a time, and
   * stops at the first one missing. Touch, not stat: a blob or child revision touched here is safe
   * from a concurrent garbage collection run, and one it has already taken fails the touch
   * (storage/gc.ts), which counts as missing.
   */
  async #checkReferences(name: string, manifest: ParsedManifest): Promise<void> {
    const config = manifest.config === undefined ? undefined : manifest.config.digest
    const checks: (() => Promise<void>)[] = []
    for (const digest of uniqueDigests(manifest.blobs)) {
      const required = !this.#allowSparse || digest.value === config
      checks.push(async () => {
        if ((await this.blobs.isLinked(name, digest)) && (await this.blobs.touch(digest)) !== undefined) return
        if (required) throw new ManifestBlobUnknownError(digest.value)
      })
    }
    for (const digest of uniqueDigests(manifest.manifests.map(child => parseDigest(child.digest)))) {
      checks.push(async () => {
        try {
          await this.driver.touch(manifestRevisionLinkPath(name, digest))
        } catch (error) {
          if (!(error instanceof PathNotFoundError)) throw error
          if (!this.#allowSparse) throw new ManifestBlobUnknownError(digest.value)
        }
      })
    }
    await runBounded(checks, REFERENCE_CHECKS_AT_ONCE)
  }

  async hasRevision(name: string, digest: Digest): Promise<boolean> {
    return (await statFileOrUndefined(this.driver, manifestRevisionLinkPath(name, digest))) !== undefined
  }

  /**
   * The digest a reference names in `name`, read from the store (the tag's link, then the
   * revision link) by a read that started after this call: concurrent calls for one reference
   * share reads only that way (read-batcher.ts). Throws ManifestUnknownError.
   */
  async resolve(name: string, reference: string): Promise<Digest> {
    if (isDigestReference(reference)) parseDigest(reference)
    else assertTag(reference)
    return this.#resolving.run(`${name} ${reference}`, () => this.#resolveNow(name, reference))
  }

  /**
   * With a digest this tag resolved to before, its revision link is read alongside the tag's link
   * (one round trip instead of two) and the answer is used only when the tag still names that
   * digest; both reads started after the call, as in the sequential order.
   */
  async #resolveNow(name: string, reference: string): Promise<Digest> {
    if (isDigestReference(reference)) {
      const digest = parseDigest(reference)
      if (!(await this.hasRevision(name, digest))) throw new ManifestUnknownError(reference)
      return digest
    }
    const key = `${name} ${reference}`
    const guess = this.#lastResolved.get(key)
    const [digest, guessed] = await Promise.all([this.tags.resolve(name, reference), guess === undefined ? undefined : this.hasRevision(name, guess)])
    const present = guess !== undefined && guess.value === digest.value ? (guessed as boolean) : await this.hasRevision(name, digest)
    if (!present) {
      this.#lastResolved.delete(key)
      throw new ManifestUnknownError(reference)
    }
    this.#lastResolved.delete(key)
    this.#lastResolved.set(key, digest)
    if (this.#lastResolved.size > MAX_LAST_RESOLVED) {
      const oldest = this.#lastResolved.keys().next().value
      if (oldest !== undefined) this.#lastResolved.delete(oldest)
    }
    return digest
  }

  /**
   * The stored bytes and their media type. Throws ManifestUnknownError.
   * Existence is read from the store every time (the tag's link, then the revision link), so a
   * manifest deleted or a tag moved by anyone, this process or another, shows at once; only the
   * bytes of a digest may come from the cache. The returned content is shared: do not modify it.
   */
  async get(name: string, reference: string): Promise<StoredManifest> {
    const digest = await this.resolve(name, reference)
    const cached = this.cache.get(digest.value)
    if (cached !== undefined) return { digest: digest.value, mediaType: cached.mediaType, content: cached.content }
    let content: Buffer
    try {
      content = await this.blobs.getContent(digest)
    } catch (error) {
      if (error instanceof BlobUnknownError) throw new ManifestUnknownError(reference)
      throw error
    }
    const mediaType = storedMediaType(content)
    this.cache.set(digest.value, { content, mediaType })
    return { digest: digest.value, mediaType, content }
  }

  /**
   * Deletes by digest: the revision link, every tag pointing at it and its referrer link (the
   * bytes stay until garbage collection). Deletes by tag: that tag only. Resolves with the tags
   * removed. Throws ManifestUnknownError.
   */
  async delete(name: string, reference: string): Promise<{ tags: string[] }> {
    if (!isDigestReference(reference)) {
      assertTag(reference)
      await this.tags.untag(name, reference)
      await this.#observer?.tagDeleted(name, reference)
      return { tags: [reference] }
    }
    const digest = parseDigest(reference)
    if (!(await this.hasRevision(name, digest))) throw new ManifestUnknownError(reference)
    let subject: Digest | undefined
    try {
      const parsed = parseManifest(await this.blobs.getContent(digest))
      if (parsed.subject !== undefined && isDigest(parsed.subject.digest)) subject = parseDigest(parsed.subject.digest)
    } catch {
      // bytes missing or unreadable: there is no referrer link to clean up that we could find
    }
    // Tags and the referrer entry first, then the revision: a crash in between leaves the manifest
    // reachable by digest and untagged, and the retried DELETE finishes. The other order
    // (distribution's) left tags and referrers that were listed but no longer resolved, which a
    // retry (404) could not remove. test/hardening/delete-order.test.ts.
    const tags = await this.tags.untagDigest(name, digest)
    if (subject !== undefined) await this.referrers.remove(name, subject, digest)
    const link = manifestRevisionLinkPath(name, digest)
    try {
      await this.driver.delete(link.slice(0, -'/link'.length))
    } catch (error) {
      if (error instanceof PathNotFoundError) throw new ManifestUnknownError(reference)
      throw error
    }
    await this.#observer?.manifestDeleted(name, digest.value, tags)
    return { tags }
  }
}

/** Each digest once, in first-seen order. */
function uniqueDigests(digests: readonly Digest[]): Digest[] {
  const seen = new Map<string, Digest>()
  for (const digest of digests) if (!seen.has(digest.value)) seen.set(digest.value, digest)
  return [...seen.values()]
}

/**
 * Runs `tasks` with at most `limit` in flight. After the first failure no new task starts; the
 * ones in flight are awaited (nothing is left running), then that first failure is thrown.
 */
async function runBounded(tasks: readonly (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0
  let failure: { error: unknown } | undefined
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < tasks.length) {
      const task = tasks[next++]!
      try {
        await task()
      } catch (error) {
        failure ??= { error }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker))
  if (failure !== undefined) throw failure.error
}

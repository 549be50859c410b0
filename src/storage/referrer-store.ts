/**
 * The referrers index (OCI distribution-spec 1.1 "Listing Referrers"): for each manifest pushed
 * with a `subject`, a link at `_referrers/<subject-alg>/<subject-hex>/<alg>/<hex>/link` (see
 * paths.ts). Listing reads only that folder and the referring manifests themselves, so it costs
 * the same however large the repository is.
 */
import { PathNotFoundError, type StorageDriver } from './driver/storage-driver.js'
import type { BlobStore } from './blob-store.js'
import { parseDigest, type Digest } from './digest.js'
import { BlobUnknownError } from './errors.js'
import { isIndexType, parseManifest, storedMediaType, type Descriptor } from './manifest.js'
import { manifestRevisionLinkPath, referrerLinkPath, referrersPath, tagCurrentLinkPath } from './paths.js'

export interface ReferrerPageOptions {
  /** Only referrers with this artifact type. */
  artifactType?: string
  /** Only referrers whose digest sorts after this one (the previous page's last). */
  last?: string
  /** At most this many descriptors. */
  maxEntries: number
  /** At most this many bytes of descriptor JSON (one descriptor always fits). */
  maxBytes: number
}

export interface ReferrerPage {
  descriptors: Descriptor[]
  /** Another matching referrer follows this page. */
  more: boolean
}

/** How many referring manifests one page reads at once. */
const PAGE_READ_BATCH = 16

export class ReferrerStore {
  constructor(
    private readonly driver: StorageDriver,
    private readonly blobs: BlobStore,
  ) {}

  async add(name: string, subject: Digest, referrer: Digest): Promise<void> {
    await this.driver.putContent(referrerLinkPath(name, subject, referrer), Buffer.from(referrer.value))
  }

  async remove(name: string, subject: Digest, referrer: Digest): Promise<void> {
    const link = referrerLinkPath(name, subject, referrer)
    try {
      await this.driver.delete(link.slice(0, -'/link'.length))
    } catch (error) {
      if (!(error instanceof PathNotFoundError)) throw error
    }
  }

  /**
   * One page of the manifests in `name` that refer to `subject`: those whose digest sorts after
   * `last` (when given) and that pass the `artifactType` filter, in digest order, at most
   * `maxEntries` of them and at most `maxBytes` of JSON (but always at least one, so paging
   * always moves on); never throws for an unknown repository or subject. `more` tells whether
   * another matching referrer follows. Only the manifests up to the end of the page (plus the
   * one that tells `more`) are read, `PAGE_READ_BATCH` at a time.
   */
  async page(name: string, subject: Digest, options: ReferrerPageOptions): Promise<ReferrerPage> {
    const { artifactType, last, maxEntries, maxBytes } = options
    const linked = await this.#linkedDigests(name, subject)
    // Upgrade rule of the spec: manifests listed under the tag-schema fallback tag `<alg>-<hex>`
    // (pushed by clients before this registry had the API) are referrers too. A linked referrer
    // is described from its own manifest; the fallback descriptor stands in when that is gone.
    const fallback = new Map((await this.#fromFallbackTag(name, subject)).map(d => [d.digest, d]))
    const candidates = [...new Set([...linked.keys(), ...fallback.keys()])]
      .filter(digest => last === undefined || digest > last)
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    const descriptors: Descriptor[] = []
    let bytes = 0
    for (let next = 0; next < candidates.length;) {
      const batch = candidates.slice(next, next + PAGE_READ_BATCH)
      next += batch.length
      const described = await Promise.all(
        batch.map(async value => {
          const digest = linked.get(value)
          return (digest === undefined ? undefined : await this.#describe(name, digest)) ?? fallback.get(value)
        }),
      )
      for (const descriptor of described) {
        if (descriptor === undefined) continue
        if (artifactType !== undefined && descriptor.artifactType !== artifactType) continue
        // The descriptor's share of the index JSON: itself and the comma before it.
        const size = Buffer.byteLength(JSON.stringify(descriptor)) + 1
        if (descriptors.length >= maxEntries || (descriptors.length > 0 && bytes + size > maxBytes)) return { descriptors, more: true }
        descriptors.push(descriptor)
        bytes += size
      }
    }
    return { descriptors, more: false }
  }

  /** The digests linked under `_referrers/<subject>/`, by value. */
  async #linkedDigests(name: string, subject: Digest): Promise<Map<string, Digest>> {
    const digests = new Map<string, Digest>()
    for (const algorithmDir of await this.#listOrEmpty(referrersPath(name, subject))) {
      for (const hexDir of await this.#listOrEmpty(algorithmDir)) {
        const algorithm = algorithmDir.slice(algorithmDir.lastIndexOf('/') + 1)
        const hex = hexDir.slice(hexDir.lastIndexOf('/') + 1)
        try {
          const digest = parseDigest(`${algorithm}:${hex}`)
          digests.set(digest.value, digest)
        } catch {
          // not ours: ignore
        }
      }
    }
    return digests
  }

  async #listOrEmpty(path: string): Promise<string[]> {
    try {
      return await this.driver.list(path)
    } catch (error) {
      if (error instanceof PathNotFoundError) return []
      throw error
    }
  }

  /** The descriptor of a referring manifest, or undefined when it is no longer in the repository. */
  async #describe(name: string, digest: Digest): Promise<Descriptor | undefined> {
    try {
      await this.driver.stat(manifestRevisionLinkPath(name, digest))
      const content = await this.blobs.getContent(digest)
      return describeManifest(digest, content)
    } catch (error) {
      if (error instanceof PathNotFoundError || error instanceof BlobUnknownError) return undefined
      throw error
    }
  }

  async #fromFallbackTag(name: string, subject: Digest): Promise<Descriptor[]> {
    let link: Buffer
    try {
      link = await this.driver.getContent(tagCurrentLinkPath(name, `${subject.algorithm}-${subject.hex}`))
    } catch (error) {
      if (error instanceof PathNotFoundError) return []
      throw error
    }
    try {
      const index = parseManifest(await this.blobs.getContent(parseDigest(link.toString('utf8').trim())))
      if (!isIndexType(index.mediaType)) return []
      return index.manifests.map(d => {
        const descriptor: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size }
        if (d.artifactType !== undefined) descriptor.artifactType = d.artifactType
        if (d.annotations !== undefined) descriptor.annotations = d.annotations
        return descriptor
      })
    } catch {
      return [] // a fallback tag that is not a readable index is ignored, not an error
    }
  }
}

/**
 * A referrer's descriptor per the spec: `artifactType` is the manifest's `artifactType`, else its
 * config's media type (omitted for an index without one); `annotations` are the manifest's.
 */
export function describeManifest(digest: Digest, content: Buffer): Descriptor | undefined {
  let parsed
  try {
    parsed = parseManifest(content)
  } catch {
    return undefined
  }
  const descriptor: Descriptor = { mediaType: storedMediaType(content), digest: digest.value, size: content.byteLength }
  const artifactType = parsed.artifactType ?? (isIndexType(parsed.mediaType) ? undefined : parsed.config?.mediaType)
  if (artifactType !== undefined) descriptor.artifactType = artifactType
  if (parsed.annotations !== undefined) descriptor.annotations = parsed.annotations
  return descriptor
}

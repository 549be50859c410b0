/**
 * The pull-through cache: repositories under a mirror prefix (`docker.io/library/alpine`) are
 * read from the prefix's upstream registry (`library/alpine` there) on a miss, stored here in
 * the normal layout under the prefixed name (so GC, `berth du` and the catalog see them), and
 * served from storage afterwards. The engine's manifest and blob GET/HEAD handlers consult it;
 * nothing else of the engine knows about upstreams.
 *
 * Routing (`route`): the name's first component is a prefix; or containerd's `?ns=<prefix>`
 * (its `hosts.toml` mirrors send the registry the image came from); or, with a default prefix,
 * any name that is no repository here.
 *
 * Correctness:
 * - manifests are stored byte for byte, after checking they hash to the digest asked for (or that
 *   the upstream's HEAD named), and are never re-serialized;
 * - a tag is re-checked with one HEAD at most every `tagTtlMs` (HEAD does not count against Docker
 *   Hub's pull limit); digests are content addressed and never re-checked;
 * - when the upstream is down, slow, 5xx or 429, cached tags are served (a warning per tag and
 *   retry period) and only misses fail;
 * - blobs: see blob-fetch.ts (one download per blob however many clients wait, verified before commit).
 *
 * Concurrent misses for one manifest share one upstream exchange (`#flights`). Limits: manifests
 * up to `maxManifestBytes` (the engine's PUT limit), blobs up to `maxBlobBytes`.
 */
import { BlobUnknownError, ManifestInvalidError, ManifestUnknownError } from '../storage/errors.js'
import { digestOf, isDigest, parseDigest, type Digest } from '../storage/digest.js'
import { PathNotFoundError } from '../storage/driver/storage-driver.js'
import { MAX_DESCRIPTORS, MEDIA_TYPES, parseManifest } from '../storage/manifest.js'
import { isDigestReference } from '../storage/manifest-store.js'
import { manifestRevisionLinkPath, manifestsPath, mirrorMarkerPath } from '../storage/paths.js'
import type { RegistryStore } from '../storage/registry-store.js'
import type { Logger } from '../log.js'
import { batchedBody } from './batched-body.js'
import { BlobFetch } from './blob-fetch.js'
import { isUpstreamOutage, UpstreamDeniedError, UpstreamRateLimitedError, UpstreamUnavailableError } from './errors.js'
import { discard, readCapped, UpstreamClient, type UpstreamResponse } from './upstream.js'
import type { Readable } from 'node:stream'

export interface MirrorUpstream {
  /** One repository-name component: `docker.io`. */
  readonly prefix: string
  readonly url: string
  readonly username?: string | undefined
  readonly password?: string | undefined
}

export interface MirrorOptions {
  readonly upstreams: readonly MirrorUpstream[]
  /** Names that are no repository here and carry no prefix go to this prefix's upstream. */
  readonly defaultPrefix?: string | undefined
  readonly tagTtlMs: number
  readonly maxManifestBytes: number
  readonly maxBlobBytes: number
  readonly logger: Logger
  readonly headersTimeoutMs?: number
  readonly idleTimeoutMs?: number
  /** Told of cache hits and misses, stale serving, upstream failures and new content (metrics, the cache's trim). */
  readonly observer?: MirrorObserver | undefined
  /** For tests. */
  readonly now?: () => number
}

/**
 * What the mirror reports as it serves; each method returns at once (it is called on request paths).
 * A hit is a read answered from storage without an upstream GET (a tag check by HEAD included), a
 * miss one that needed the upstream's bytes (clients joining one download count one miss each).
 */
export interface MirrorObserver {
  cacheRead(prefix: string, kind: 'manifest' | 'blob', result: 'hit' | 'miss'): void
  /** A cached tag was served because the upstream could not confirm it (once per tag and retry period). */
  staleServed(prefix: string): void
  /** An exchange with the upstream failed: down, 5xx or unusable answers; 429; 401/403. */
  upstreamError(prefix: string, reason: UpstreamErrorReason): void
  /** New content (a manifest or a blob) was stored in the cache. */
  stored(prefix: string): void
}

export type UpstreamErrorReason = 'unavailable' | 'rate_limited' | 'denied'

/** Where a read goes: the repository here (`name`) and the one upstream (`upstreamName`). */
export interface MirrorTarget {
  readonly prefix: string
  readonly name: string
  readonly upstreamName: string
}

/** A blob answered from the upstream: its size when known, and (for GET) its bytes. */
export interface FetchedBlob {
  readonly size: number | undefined
  readonly body: Readable | undefined
}

/** Every manifest type the cache asks for: what it stores is what the upstream has, whatever the client later accepts. */
const MANIFEST_ACCEPT = [MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList, MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifest].join(', ')
/** After a failed tag check the cached tag is served without asking again for this long (or the TTL, if shorter). */
const RETRY_AFTER_OUTAGE_MS = 30_000
/** Tag check times kept (per instance; after a restart a tag is checked once more). */
const MAX_CHECKED_TAGS = 10_000

/** How a manifest read was answered: from storage, from the upstream, or from storage because the upstream failed. */
type CacheResult = 'hit' | 'miss' | 'stale'

interface Upstream {
  readonly prefix: string
  readonly client: UpstreamClient
}

export class Mirror {
  readonly #upstreams = new Map<string, Upstream>()
  readonly #defaultPrefix: string | undefined
  readonly #options: MirrorOptions
  readonly #now: () => number
  /** `name tag` → when the upstream last confirmed (or could not be asked about) the tag. */
  readonly #checked = new Map<string, number>()
  readonly #flights = new Map<string, Promise<CacheResult>>()
  /** Blob downloads in flight (from before the upstream answered until the commit), by repository and digest. */
  readonly #fetches = new Map<string, Promise<BlobFetch>>()
  readonly #marked = new Set<string>()
  readonly #observer: MirrorObserver | undefined

  constructor(
    private readonly store: RegistryStore,
    options: MirrorOptions,
  ) {
    this.#options = options
    this.#now = options.now ?? Date.now
    this.#observer = options.observer
    for (const upstream of options.upstreams) {
      const client = new UpstreamClient({
        url: upstream.url,
        username: upstream.username,
        password: upstream.password,
        ...(options.headersTimeoutMs !== undefined ? { headersTimeoutMs: options.headersTimeoutMs } : {}),
        ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
      })
      this.#upstreams.set(upstream.prefix, { prefix: upstream.prefix, client })
    }
    this.#defaultPrefix = options.defaultPrefix
  }

  /** The upstream URL of a prefix (for messages). */
  upstreamUrl(prefix: string): string | undefined {
    return this.#upstreams.get(prefix)?.client.url
  }

  /**
   * The mirror prefix a write to `name` would go into (a prefixed name, or `?ns=` naming a mirror),
   * or undefined when the write is local. Writes never follow the default prefix: pushing a new
   * name creates a local repository.
   */
  prefixOfWrite(name: string, query: URLSearchParams): string | undefined {
    const ns = query.get('ns')
    if (ns !== null && this.#upstreams.has(ns)) return ns
    const slash = name.indexOf('/')
    if (slash > 0 && this.#upstreams.has(name.slice(0, slash))) return name.slice(0, slash)
    return undefined
  }

  /** Where a GET/HEAD of `name` goes: a mirror target, or undefined for a local repository. */
  async route(name: string, query: URLSearchParams): Promise<MirrorTarget | undefined> {
    const ns = query.get('ns')
    if (ns !== null && this.#upstreams.has(ns)) return { prefix: ns, name: `${ns}/${name}`, upstreamName: name }
    const slash = name.indexOf('/')
    if (slash > 0 && this.#upstreams.has(name.slice(0, slash))) return { prefix: name.slice(0, slash), name, upstreamName: name.slice(slash + 1) }
    if (this.#defaultPrefix !== undefined && !(await this.#isLocalRepository(name))) {
      return { prefix: this.#defaultPrefix, name: `${this.#defaultPrefix}/${name}`, upstreamName: name }
    }
    return undefined
  }

  /**
   * Makes the manifest `reference` (a tag or digest) of the target present and, for a tag, fresh
   * enough, so the engine can serve it from storage. Throws ManifestUnknownError when the upstream
   * does not have it, UpstreamDeniedError, or, only when nothing usable is cached,
   * UpstreamUnavailableError / UpstreamRateLimitedError. `requestId` (of the request that asks)
   * goes on the log lines; requests that join a fetch already running share the first one's.
   */
  async ensureManifest(target: MirrorTarget, reference: string, requestId?: string): Promise<void> {
    const key = `${target.name} ${reference}`
    let flight = this.#flights.get(key)
    if (flight === undefined) {
      flight = this.#counted(
        target,
        isDigestReference(reference) ? this.#ensureDigest(target, parseDigest(reference)) : this.#ensureTag(target, reference, requestId),
      ).finally(() => this.#flights.delete(key))
      this.#flights.set(key, flight)
    }
    const result = await flight
    this.#observer?.cacheRead(target.prefix, 'manifest', result === 'miss' ? 'miss' : 'hit')
    if (result === 'stale') this.#observer?.staleServed(target.prefix)
  }

  async #ensureDigest(target: MirrorTarget, digest: Digest): Promise<CacheResult> {
    if (await this.store.manifests.hasRevision(target.name, digest)) return 'hit'
    await this.#fetchManifest(target, digest.value, digest, undefined)
    return 'miss'
  }

  async #ensureTag(target: MirrorTarget, tag: string, requestId: string | undefined): Promise<CacheResult> {
    const key = `${target.name} ${tag}`
    const cached = await this.#cachedTag(target.name, tag)
    const checkedAt = this.#checked.get(key)
    if (cached !== undefined && checkedAt !== undefined && this.#now() - checkedAt < this.#options.tagTtlMs) return 'hit'
    try {
      const head = await this.#ask(target, 'HEAD', `manifests/${tag}`, { Accept: MANIFEST_ACCEPT })
      discard(head)
      this.#failOn(head, target, tag, 'manifest')
      const named = headerDigest(head)
      if (named !== undefined && named.value === cached?.value) {
        this.#markChecked(key, this.#now())
        return 'hit'
      }
      let result: CacheResult = 'hit'
      if (named !== undefined && (await this.store.manifests.hasRevision(target.name, named))) {
        await this.store.tags.tag(target.name, tag, named)
      } else {
        // By digest when the HEAD named one: the bytes then match what was checked even if the tag moves meanwhile.
        await this.#fetchManifest(target, named?.value ?? tag, named, tag)
        result = 'miss'
      }
      this.#markChecked(key, this.#now())
      return result
    } catch (error) {
      if (cached === undefined || !isUpstreamOutage(error)) throw error
      this.#upstreamFailed(target, error)
      this.#options.logger.warn('mirror: upstream unavailable, serving the cached tag', {
        repository: target.name,
        tag,
        digest: cached.value,
        error: (error as Error).message,
        id: requestId,
      })
      // Ask again in a little while, not on every pull of a tag while the upstream is down.
      this.#markChecked(key, this.#now() - this.#options.tagTtlMs + Math.min(this.#options.tagTtlMs, RETRY_AFTER_OUTAGE_MS))
      return 'stale'
    }
  }

  /** Counts an upstream failure that ends `work` (once per shared exchange, not per waiting client). */
  async #counted<T>(target: MirrorTarget, work: Promise<T>): Promise<T> {
    try {
      return await work
    } catch (error) {
      this.#upstreamFailed(target, error)
      throw error
    }
  }

  #upstreamFailed(target: MirrorTarget, error: unknown): void {
    const reason: UpstreamErrorReason | undefined =
      error instanceof UpstreamRateLimitedError
        ? 'rate_limited'
        : error instanceof UpstreamDeniedError
          ? 'denied'
          : error instanceof UpstreamUnavailableError
            ? 'unavailable'
            : undefined
    if (reason !== undefined) this.#observer?.upstreamError(target.prefix, reason)
  }

  /** GETs a manifest (by `reference`), checks its bytes and stores them (and `tag`, if given). */
  async #fetchManifest(target: MirrorTarget, reference: string, expected: Digest | undefined, tag: string | undefined): Promise<void> {
    const upstream = this.#upstream(target)
    const response = await this.#ask(target, 'GET', `manifests/${reference}`, { Accept: MANIFEST_ACCEPT })
    if (response.status !== 200) discard(response)
    this.#failOn(response, target, reference, 'manifest')
    const content = await readCapped(response, this.#options.maxManifestBytes, upstream.client.url)
    const announced = headerDigest(response)
    const digest = digestOf(content, expected?.algorithm ?? announced?.algorithm ?? 'sha256')
    for (const claimed of [expected, announced]) {
      if (claimed !== undefined && claimed.algorithm === digest.algorithm && claimed.value !== digest.value) {
        throw new UpstreamUnavailableError(upstream.client.url, `it sent a manifest for ${reference} that hashes to ${digest.value}, not ${claimed.value}`)
      }
    }
    let manifest: ReturnType<typeof parseManifest>
    try {
      manifest = parseManifest(content, contentType(response), MAX_DESCRIPTORS)
    } catch (error) {
      if (!(error instanceof ManifestInvalidError)) throw error
      throw new UpstreamUnavailableError(upstream.client.url, `it sent an invalid manifest for ${reference}: ${error.reason}`, { cause: error })
    }
    // The engine's write order: bytes, revision link, referrer link, tag (registry-store.ts).
    await this.store.blobs.putContent(digest, content)
    await this.store.driver.putContent(manifestRevisionLinkPath(target.name, digest), Buffer.from(digest.value))
    if (manifest.subject !== undefined && isDigest(manifest.subject.digest)) {
      await this.store.referrers.add(target.name, parseDigest(manifest.subject.digest), digest)
    }
    if (tag !== undefined) await this.store.tags.tag(target.name, tag, digest)
    await this.#mark(target)
    this.#observer?.stored(target.prefix)
  }

  /**
   * Answers a blob GET/HEAD from the upstream when it is not stored here, or resolves undefined
   * when the engine can serve it from storage (stored and linked here, possibly just now: a blob
   * stored for another repository is linked once the upstream confirms this repository has it).
   * With `range`, the download is waited for and the engine serves the range from storage.
   */
  async fetchBlob(target: MirrorTarget, digest: Digest, options: { head: boolean; range: boolean; id?: string }): Promise<FetchedBlob | undefined> {
    if ((await this.store.blobs.isLinked(target.name, digest)) && (await this.store.blobs.statGlobal(digest)) !== undefined) {
      this.#observer?.cacheRead(target.prefix, 'blob', 'hit')
      return undefined
    }
    const key = `${target.name} ${digest.value}`
    const running = this.#fetches.get(key)
    if (running !== undefined) return this.#join(target, await running, options)
    if ((await this.store.blobs.statGlobal(digest)) !== undefined || options.head) {
      // Stored already (another repository) or only its size wanted: the upstream says whether this repository has it.
      const head = await this.#counted(
        target,
        this.#ask(target, 'HEAD', `blobs/${digest.value}`, {}).then(head => {
          discard(head)
          this.#failOn(head, target, digest.value, 'blob')
          return head
        }),
      )
      if ((await this.store.blobs.touch(digest)) !== undefined) {
        await this.store.blobs.link(target.name, digest)
        await this.#mark(target)
        this.#observer?.cacheRead(target.prefix, 'blob', 'hit')
        return undefined
      }
      this.#observer?.cacheRead(target.prefix, 'blob', 'miss')
      return { size: contentLength(head), body: undefined }
    }
    // No await between this look-up and the set: concurrent misses share one upstream GET.
    let pending = this.#fetches.get(key)
    if (pending === undefined) {
      pending = this.#counted(target, this.#startFetch(target, digest, options.id))
      this.#fetches.set(key, pending)
      const forget = (): void => void this.#fetches.delete(key)
      void pending.then(fetch => fetch.done.then(forget, forget), forget)
    }
    return this.#join(target, await pending, options)
  }

  async #startFetch(target: MirrorTarget, digest: Digest, requestId: string | undefined): Promise<BlobFetch> {
    const response = await this.#ask(target, 'GET', `blobs/${digest.value}`, {})
    if (response.status !== 200) discard(response)
    this.#failOn(response, target, digest.value, 'blob')
    const url = this.#upstream(target).client.url
    const size = contentLength(response)
    if (size !== undefined && size > this.#options.maxBlobBytes) {
      response.body.destroy()
      throw new UpstreamUnavailableError(url, `blob ${digest.value} has ${size} bytes, more than the ${this.#options.maxBlobBytes} accepted`)
    }
    const fetch = new BlobFetch(this.store, target.name, digest, url, this.#options.maxBlobBytes, { body: batchedBody(response.body), size })
    void fetch.done.then(
      async () => {
        await this.#mark(target)
        this.#observer?.stored(target.prefix)
      },
      (error: unknown) => {
        this.#upstreamFailed(target, error)
        this.#options.logger.warn('mirror: blob download failed', {
          repository: target.name,
          digest: digest.value,
          error: (error as Error).message,
          id: requestId,
        })
      },
    )
    return fetch
  }

  async #join(target: MirrorTarget, fetch: BlobFetch, options: { head: boolean; range: boolean }): Promise<FetchedBlob | undefined> {
    this.#observer?.cacheRead(target.prefix, 'blob', 'miss')
    if (options.range || options.head) {
      await fetch.done
      return undefined
    }
    return { size: fetch.size, body: fetch.subscribe() }
  }

  /** Closes the upstreams' kept-alive sockets. */
  close(): void {
    for (const upstream of this.#upstreams.values()) upstream.client.close()
  }

  #upstream(target: MirrorTarget): Upstream {
    const upstream = this.#upstreams.get(target.prefix)
    if (upstream === undefined) throw new Error(`no mirror for prefix ${target.prefix}`)
    return upstream
  }

  #ask(target: MirrorTarget, method: 'GET' | 'HEAD', what: string, headers: Record<string, string>): Promise<UpstreamResponse> {
    return this.#upstream(target).client.request({ method, path: `/v2/${target.upstreamName}/${what}`, repository: target.upstreamName, headers })
  }

  /** Throws what a non-200 upstream answer means for a manifest or blob `reference`. */
  #failOn(response: UpstreamResponse, target: MirrorTarget, reference: string, kind: 'manifest' | 'blob'): void {
    const { status } = response
    if (status === 200) return
    const url = this.#upstream(target).client.url
    if (status === 404) throw kind === 'manifest' ? new ManifestUnknownError(reference) : new BlobUnknownError(reference)
    if (status === 401 || status === 403) throw new UpstreamDeniedError(url, target.upstreamName, status)
    if (status === 429) throw new UpstreamRateLimitedError(url, headerText(response.headers['retry-after']))
    throw new UpstreamUnavailableError(url, `it answered ${status} to ${kind} ${reference}`)
  }

  async #cachedTag(name: string, tag: string): Promise<Digest | undefined> {
    try {
      return await this.store.manifests.resolve(name, tag)
    } catch (error) {
      if (error instanceof ManifestUnknownError) return undefined
      throw error
    }
  }

  #markChecked(key: string, at: number): void {
    this.#checked.delete(key)
    this.#checked.set(key, at)
    if (this.#checked.size > MAX_CHECKED_TAGS) this.#checked.delete(this.#checked.keys().next().value as string)
  }

  async #isLocalRepository(name: string): Promise<boolean> {
    try {
      await this.store.driver.stat(manifestsPath(name))
      return true
    } catch (error) {
      if (error instanceof PathNotFoundError) return false
      throw error
    }
  }

  /** Writes the repository's mirror marker once (what tells cached content from pushed content). */
  async #mark(target: MirrorTarget): Promise<void> {
    if (this.#marked.has(target.name)) return
    const marker = JSON.stringify({ prefix: target.prefix, upstream: this.#upstream(target).client.url, repository: target.upstreamName })
    await this.store.driver.putContentIfAbsent(mirrorMarkerPath(target.name), Buffer.from(marker + '\n'))
    if (this.#marked.size > MAX_CHECKED_TAGS) this.#marked.clear()
    this.#marked.add(target.name)
  }
}

function headerText(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

function headerDigest(response: UpstreamResponse): Digest | undefined {
  const value = headerText(response.headers['docker-content-digest'])?.trim()
  return value !== undefined && isDigest(value) ? parseDigest(value) : undefined
}

function contentType(response: UpstreamResponse): string | undefined {
  return headerText(response.headers['content-type'])?.split(';', 1)[0]?.trim().toLowerCase()
}

function contentLength(response: UpstreamResponse): number | undefined {
  const raw = headerText(response.headers['content-length'])
  return raw !== undefined && /^[0-9]{1,15}$/.test(raw) ? Number(raw) : undefined
}

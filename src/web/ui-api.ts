/**
 * The web UI's JSON API (`/api/ui/...`) over the metadata index and the registry's stores. Every
 * answer is JSON; every parameter is bounded and checked (400 with the registry's error body when
 * not); a repository the viewer may not pull is answered exactly as one that does not exist.
 *
 *   GET    /api/ui/repositories?q=&namespace=&sort=name|pushed|size&order=asc|desc&offset=&limit=
 *   GET    /api/ui/tags?repository=&sort=pushed|name&order=&offset=&limit=
 *   GET    /api/ui/image?repository=&reference=<tag|digest>
 *   GET    /api/ui/storage
 *   DELETE /api/ui/tag?repository=&tag=              untag (the image stays)
 *   DELETE /api/ui/image?repository=&digest=         the manifest and every tag on it
 *
 * Deletes go through the same store operation as `DELETE /v2/<name>/manifests/<reference>` and
 * emit the same events (audit trail, webhooks).
 */
import type { EventSink } from '../events/events.js'
import type { Exchange } from '../http/exchange.js'
import { RegistryError } from '../http/errors.js'
import { sendJson } from '../http/respond.js'
import { actorOf } from '../registry/routes.js'
import { toRegistryError } from '../registry/errors.js'
import { isDigest } from '../storage/digest.js'
import { BlobUnknownError, ManifestInvalidError } from '../storage/errors.js'
import type { RegistryStore } from '../storage/registry-store.js'
import { isRepositoryName, isTag } from '../storage/reference.js'
import type { MetadataStore, RepositorySummary } from '../storage/metadata/view.js'
import type { StorageSurveyResult } from '../storage/storage-survey.js'
import type { DeleteResult, RepositoryPage, StorageSurveyView, StorageView, TagItem, TagPage } from './api-types.js'
import { imageView } from './image-view.js'

/** What the caller of the UI may do: the access rules for the session's user (see web-ui.ts). */
export interface Viewer {
  readonly user: string | undefined
  may(repository: string, action: 'pull' | 'delete'): boolean
}

export interface UiApiOptions {
  readonly metadata: MetadataStore
  readonly store: RegistryStore
  readonly events: EventSink
  /** `--read-only`: deletes are refused. */
  readonly readOnly: () => boolean
  /** Mirror prefixes: content there is the upstream's; deletes are refused as the engine refuses them. */
  readonly mirrorPrefixes: readonly string[]
  /** The storage page's background figures (absent: the page shows index sizes only). */
  readonly survey?: { readonly latest: StorageSurveyResult | undefined }
}

export const MAX_PAGE = 200
const DEFAULT_PAGE = 50
const MAX_SEARCH = 255
const MAX_OFFSET = 10_000_000
const NO_STORE = { 'Cache-Control': 'no-store' }

/** A bad parameter: 400 with the parameter named. */
function badParameter(name: string, why: string): RegistryError {
  return new RegistryError('UNSUPPORTED', { parameter: name }, { status: 400, message: `${name}: ${why}` })
}

function notFound(what: string): RegistryError {
  return new RegistryError('NAME_UNKNOWN', null, { message: `${what} not found` })
}

/** The one value of a parameter; a repeated parameter is refused. */
function single(query: URLSearchParams, name: string): string | undefined {
  const values = query.getAll(name)
  if (values.length > 1) throw badParameter(name, 'given more than once')
  return values[0]
}

function integer(query: URLSearchParams, name: string, fallback: number, max: number): number {
  const value = single(query, name)
  if (value === undefined || value === '') return fallback
  if (!/^\d{1,9}$/.test(value) || Number(value) > max) throw badParameter(name, `a whole number from 0 to ${max}`)
  return Number(value)
}

function oneOf<T extends string>(query: URLSearchParams, name: string, allowed: readonly T[], fallback: T): T {
  const value = single(query, name)
  if (value === undefined || value === '') return fallback
  if (!(allowed as readonly string[]).includes(value)) throw badParameter(name, `one of ${allowed.join(', ')}`)
  return value as T
}

function repositoryParam(query: URLSearchParams): string {
  const name = single(query, 'repository')
  if (name === undefined || !isRepositoryName(name)) throw badParameter('repository', 'a repository name (lowercase a-z 0-9 . _ - /, at most 255 characters)')
  return name
}

function limitParam(query: URLSearchParams): number {
  const limit = integer(query, 'limit', DEFAULT_PAGE, MAX_PAGE)
  if (limit === 0) throw badParameter('limit', `from 1 to ${MAX_PAGE}`)
  return limit
}

export class UiApi {
  constructor(private readonly options: UiApiOptions) {}

  /** Answers one API request (path below `/api/ui/`); throws RegistryError for the caller to write. */
  async handle(exchange: Exchange, route: string, viewer: Viewer): Promise<void> {
    const method = exchange.req.method ?? 'GET'
    const read = method === 'GET' || method === 'HEAD'
    const { query } = exchange
    let body: unknown
    if (route === 'repositories' && read) body = await this.repositories(query, viewer)
    else if (route === 'tags' && read) body = await this.tags(query, viewer)
    else if (route === 'image' && read) body = await this.image(query, viewer)
    else if (route === 'storage' && read) body = await this.storage(query, viewer)
    else if (route === 'tag' && method === 'DELETE') body = await this.deleteTag(exchange, viewer)
    else if (route === 'image' && method === 'DELETE') body = await this.deleteImage(exchange, viewer)
    else if (['repositories', 'tags', 'storage', 'image', 'tag'].includes(route)) {
      const allow = route === 'tag' ? 'DELETE' : route === 'image' ? 'GET, HEAD, DELETE' : 'GET, HEAD'
      throw new RegistryError('UNSUPPORTED', { method }, { message: `${method} is not supported here`, headers: { Allow: allow } })
    } else throw new RegistryError('NOT_FOUND', null, { message: 'no such API endpoint' })
    sendJson(exchange, 200, body, NO_STORE)
  }

  async #visible(viewer: Viewer, filter: { search?: string; prefix?: string; sort?: 'name' | 'pushed' | 'size'; order?: 'asc' | 'desc' } = {}) {
    const all = await this.options.metadata.listRepositories(filter)
    return all.items.filter(item => viewer.may(item.name, 'pull'))
  }

  async repositories(query: URLSearchParams, viewer: Viewer): Promise<RepositoryPage> {
    const search = single(query, 'q') ?? ''
    if (search.length > MAX_SEARCH) throw badParameter('q', `at most ${MAX_SEARCH} characters`)
    const namespace = single(query, 'namespace') ?? ''
    if (namespace !== '' && !isRepositoryName(namespace)) throw badParameter('namespace', 'a repository name prefix')
    const sort = oneOf(query, 'sort', ['name', 'pushed', 'size'] as const, 'name')
    const order = oneOf(query, 'order', ['asc', 'desc'] as const, sort === 'name' ? 'asc' : 'desc')
    const offset = integer(query, 'offset', 0, MAX_OFFSET)
    const limit = limitParam(query)
    const matching = await this.#visible(viewer, { ...(search !== '' ? { search: search.toLowerCase() } : {}), sort, order })
    const namespaces = new Map<string, number>()
    for (const item of matching) {
      const slash = item.name.indexOf('/')
      const top = slash < 0 ? '' : item.name.slice(0, slash)
      if (top !== '') namespaces.set(top, (namespaces.get(top) ?? 0) + 1)
    }
    const inNamespace = namespace === '' ? matching : matching.filter(item => item.name.startsWith(`${namespace}/`))
    return {
      total: inNamespace.length,
      offset,
      limit,
      items: inNamespace.slice(offset, offset + limit).map(summary),
      namespaces: [...namespaces].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, repositories]) => ({ name, repositories })),
    }
  }

  async tags(query: URLSearchParams, viewer: Viewer): Promise<TagPage> {
    const repository = repositoryParam(query)
    const sort = oneOf(query, 'sort', ['pushed', 'name'] as const, 'pushed')
    const order = oneOf(query, 'order', ['asc', 'desc'] as const, sort === 'name' ? 'asc' : 'desc')
    const offset = integer(query, 'offset', 0, MAX_OFFSET)
    const limit = limitParam(query)
    if (!viewer.may(repository, 'pull')) throw notFound('repository')
    const all = await this.options.metadata.listTags(repository, { sort, order })
    if (all === undefined) throw notFound('repository')
    const byDigest = new Map<string, string[]>()
    for (const tag of all) byDigest.set(tag.digest, [...(byDigest.get(tag.digest) ?? []), tag.tag])
    const items: TagItem[] = all.slice(offset, offset + limit).map(tag => ({
      tag: tag.tag,
      digest: tag.digest,
      mediaType: tag.mediaType ?? null,
      size: tag.size ?? null,
      platforms: tag.platforms,
      created: tag.created,
      pushedAt: tag.pushedAt,
      lastPulledAt: tag.lastPulledAt,
      pullCount: tag.pullCount,
      sameDigest: (byDigest.get(tag.digest) ?? []).filter(other => other !== tag.tag).sort(),
    }))
    return { repository, total: all.length, offset, limit, items, canDelete: this.#mayDelete(repository, viewer) }
  }

  async image(query: URLSearchParams, viewer: Viewer) {
    const repository = repositoryParam(query)
    const reference = single(query, 'reference')
    if (reference === undefined || !(isTag(reference) || isDigest(reference))) throw badParameter('reference', 'a tag or a digest (sha256:<64 hex>)')
    if (!viewer.may(repository, 'pull')) throw notFound('repository')
    const { store, metadata } = this.options
    let manifest
    try {
      manifest = await store.manifests.get(repository, reference)
    } catch (error) {
      const mapped = toRegistryError(error)
      if (mapped.status === 404) throw notFound('image')
      throw error
    }
    const details = await metadata.image(repository, manifest.digest)
    try {
      return await imageView({
        repository,
        digest: manifest.digest,
        content: manifest.content,
        details,
        canDelete: this.#mayDelete(repository, viewer),
        readConfig: async digest => {
          try {
            return await store.blobs.getContent(digest)
          } catch (error) {
            if (error instanceof BlobUnknownError) return undefined
            throw error
          }
        },
        sizeOf: async digest => (await metadata.image(repository, digest))?.totalSize,
      })
    } catch (error) {
      // Stored bytes that do not parse as a manifest: say so rather than fail with 500.
      if (error instanceof ManifestInvalidError)
        throw new RegistryError('MANIFEST_INVALID', null, { status: 422, message: 'the stored manifest does not parse' })
      throw error
    }
  }

  /** Reads only memory: the index and the last background survey (storage-survey.ts); never walks the store. */
  async storage(query: URLSearchParams, viewer: Viewer): Promise<StorageView> {
    const offset = integer(query, 'offset', 0, MAX_OFFSET)
    const limit = limitParam(query)
    const visible = await this.#visible(viewer, { sort: 'size', order: 'desc' })
    let total = 0
    for (const item of visible) total += item.size
    const latest = this.options.survey?.latest
    const repositories = visible.slice(offset, offset + limit).map(item => {
      const usage = latest?.byRepository.get(item.name)
      return { name: item.name, size: item.size, tags: item.tags, uniqueBytes: usage?.uniqueBytes ?? null, sharedBytes: usage?.sharedBytes ?? null }
    })
    return { total, count: visible.length, offset, limit, repositories, survey: surveyView(latest, viewer) }
  }

  async deleteTag(exchange: Exchange, viewer: Viewer): Promise<DeleteResult> {
    const repository = repositoryParam(exchange.query)
    const tag = single(exchange.query, 'tag')
    if (tag === undefined || !isTag(tag)) throw badParameter('tag', 'a tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})')
    this.#checkDelete(repository, viewer)
    const removed = await this.#delete(exchange, repository, tag)
    return { repository, tags: removed, digest: null }
  }

  async deleteImage(exchange: Exchange, viewer: Viewer): Promise<DeleteResult> {
    const repository = repositoryParam(exchange.query)
    const digest = single(exchange.query, 'digest')
    if (digest === undefined || !isDigest(digest)) throw badParameter('digest', 'a digest (sha256:<64 hex>)')
    this.#checkDelete(repository, viewer)
    const removed = await this.#delete(exchange, repository, digest)
    return { repository, tags: removed, digest }
  }

  async #delete(exchange: Exchange, repository: string, reference: string): Promise<string[]> {
    let result
    try {
      result = await this.options.store.manifests.delete(repository, reference)
    } catch (error) {
      const mapped = toRegistryError(error)
      if (mapped.status === 404) throw new RegistryError('MANIFEST_UNKNOWN', null, { message: `${isDigest(reference) ? 'image' : 'tag'} not found` })
      throw mapped
    }
    this.options.events.emit({ action: 'delete', repository, target: isDigest(reference) ? 'manifest' : 'tag', reference }, actorOf(exchange))
    return result.tags
  }

  #mayDelete(repository: string, viewer: Viewer): boolean {
    return !this.options.readOnly() && !this.#isMirrored(repository) && viewer.may(repository, 'delete')
  }

  #isMirrored(repository: string): boolean {
    return this.options.mirrorPrefixes.some(prefix => repository.startsWith(`${prefix}/`))
  }

  #checkDelete(repository: string, viewer: Viewer): void {
    if (!viewer.may(repository, 'pull')) throw notFound('repository')
    if (this.options.readOnly()) throw new RegistryError('UNSUPPORTED', null, { message: 'the registry is read-only for maintenance: deletes are refused' })
    if (this.#isMirrored(repository)) throw new RegistryError('UNSUPPORTED', null, { message: 'this repository is a read-only mirror' })
    if (!viewer.may(repository, 'delete')) {
      throw new RegistryError('DENIED', null, { message: viewer.user === undefined ? 'log in to delete' : 'the access rules do not let you delete here' })
    }
  }
}

function summary(item: RepositorySummary) {
  return { name: item.name, tags: item.tags, lastPushed: item.lastPushed, size: item.size }
}

/** The whole store's figures, for a viewer who may pull every repository in it (they describe what others hold). */
function surveyView(latest: StorageSurveyResult | undefined, viewer: Viewer): StorageSurveyView | 'pending' | 'hidden' {
  if (latest === undefined) return 'pending'
  if (!latest.usage.repositories.every(repository => viewer.may(repository.name, 'pull'))) return 'hidden'
  const { usage, lastGc } = latest
  return {
    computedAt: latest.computedAt,
    durationMs: latest.durationMs,
    storedBytes: usage.bytes,
    sharedBytes: usage.sharedBytes,
    unreferencedBytes: usage.unreferencedBytes,
    uploadBytes: usage.uploadBytes,
    gcWouldFree: latest.gcWouldFree,
    gcUntaggedWouldFree: latest.gcUntaggedWouldFree,
    lastGc:
      lastGc === undefined
        ? null
        : {
            startedAt: lastGc.startedAt,
            finishedAt: lastGc.finishedAt,
            blobs: lastGc.blobs,
            bytesFreed: lastGc.bytesFreed,
            manifests: lastGc.manifests,
            deleteUntagged: lastGc.deleteUntagged,
          },
  }
}

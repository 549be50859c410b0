/** `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>` (end-3, end-7, end-9). */
import type { IncomingMessage } from 'node:http'
import type { Readable } from 'node:stream'
import { ManifestTooLargeError, ManifestUnknownError } from '../../storage/errors.js'
import { digestOf } from '../../storage/digest.js'
import { isTag } from '../../storage/reference.js'
import { MEDIA_TYPES } from '../../storage/manifest.js'
import { isDigestReference, type StoredManifest } from '../../storage/manifest-store.js'
import { RegistryError } from '../errors.js'
import { sendEmpty } from '../../http/respond.js'
import { acceptedTypes, contentLength, mediaTypeOf } from '../headers.js'
import { actorOf, type Handler } from '../routes.js'
import { NO_EVENTS } from '../../events/events.js'
import { reference, repositoryName } from './params.js'

/** Reads a body of at most `limit` bytes; a larger one is refused as soon as it is known to be larger. */
async function readLimited(request: IncomingMessage, body: Readable, limit: number): Promise<Buffer> {
  let declared: number | undefined
  try {
    declared = contentLength(request)
  } catch {
    throw new RegistryError('SIZE_INVALID', undefined, { message: 'malformed Content-Length' })
  }
  if (declared !== undefined && declared > limit) throw new ManifestTooLargeError(limit)
  const chunks: Buffer[] = []
  let total = 0
  for await (const chunk of body) {
    total += (chunk as Buffer).byteLength
    if (total > limit) throw new ManifestTooLargeError(limit)
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks, total)
}

function accepts(accepted: readonly string[], type: string): boolean {
  const major = type.slice(0, type.indexOf('/'))
  return accepted.some(a => a === type || a === '*/*' || a === `${major}/*`)
}

/**
 * Content negotiation as docker and containerd expect from distribution: they always send the
 * types they understand; by tag, an OCI manifest or index the client did not list is
 * MANIFEST_UNKNOWN (what distribution answers, so old clients fall back cleanly), and a Docker
 * manifest list asked for by a client that only knows schema 2 manifests resolves to its
 * linux/amd64 entry. A request with no Accept header at all (curl) gets the stored bytes.
 */
async function negotiate(context: Parameters<Handler>[0], name: string, ref: string, manifest: StoredManifest): Promise<StoredManifest> {
  const accepted = acceptedTypes(context.request)
  if (accepted === undefined || isDigestReference(ref) || accepts(accepted, manifest.mediaType)) return manifest
  if (manifest.mediaType === MEDIA_TYPES.ociManifest || manifest.mediaType === MEDIA_TYPES.ociIndex) {
    throw new ManifestUnknownError(ref, `OCI manifest found, but the Accept header does not support OCI manifests`)
  }
  if (manifest.mediaType === MEDIA_TYPES.dockerManifestList && accepts(accepted, MEDIA_TYPES.dockerManifest)) {
    const list = JSON.parse(manifest.content.toString('utf8')) as { manifests?: { digest?: string; platform?: { os?: string; architecture?: string } }[] }
    const child = list.manifests?.find(m => m.platform?.os === 'linux' && m.platform?.architecture === 'amd64')
    if (child?.digest !== undefined) return context.store.manifests.get(name, child.digest)
    throw new ManifestUnknownError(ref, 'manifest list has no linux/amd64 entry for a client without manifest list support')
  }
  return manifest
}

/**
 * Most `?tag=` parameters one push by digest may carry. The spec (distribution-spec main, "Pushing
 * manifests with tags") asks for at least 10 and allows 414 above a registry's limit; 100 tags of
 * the longest form (128 characters) already come near the request-line size Node accepts.
 */
export const MAX_TAGS_PER_PUSH = 100

export const getManifest: Handler = async context => {
  const { request, response, params, store } = context
  let name = repositoryName(params)
  const ref = reference(params)
  // A string that cannot be a tag names no manifest: 404, as registry:2 answers and the OCI
  // conformance suite expects for a nonexistent manifest (a PUT by it stays 400 TAG_INVALID).
  if (!isDigestReference(ref) && !isTag(ref)) throw new ManifestUnknownError(ref)
  const mirrored = await context.mirror?.route(name, context.query)
  if (mirrored !== undefined) {
    name = mirrored.name
    await context.mirror?.ensureManifest(mirrored, ref, context.exchange.id)
  }
  const manifest = await negotiate(context, name, ref, await store.manifests.get(name, ref))
  const etag = `"${manifest.digest}"`
  const ifNoneMatch = request.headers['if-none-match']
  if (ifNoneMatch !== undefined && ifNoneMatch.split(',').some(tag => tag.trim() === etag || tag.trim() === '*')) {
    response.writeHead(304, { 'Content-Type': manifest.mediaType, 'Docker-Content-Digest': manifest.digest, ETag: etag })
    response.end()
    return
  }
  response.writeHead(200, {
    'Content-Type': manifest.mediaType,
    'Docker-Content-Digest': manifest.digest,
    ETag: etag,
    'Content-Length': manifest.content.byteLength,
  })
  if (request.method !== 'HEAD') context.exchange.meter.sent += manifest.content.byteLength
  response.end(request.method === 'HEAD' ? undefined : manifest.content)
  // Pull events only for a sink that asked for them (webhooks with `pull`): nothing is built otherwise.
  if (context.events.wantsPulls === true && request.method === 'GET') {
    const tag = isDigestReference(ref) ? undefined : ref
    const pulled = { action: 'pull', repository: name, digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.content.byteLength, tag } as const
    context.events.emit(pulled, actorOf(context.exchange))
  }
  // A pull is a GET answered with the bytes (not a HEAD, not a 304): counted in memory only.
  if (request.method === 'GET') store.observer?.manifestPulled(name, manifest.digest)
}

/**
 * The `tag` query parameters of a push by digest, each once (distribution-spec main: a registry
 * that supports them answers with one `OCI-Tag` header per tag applied). A push by tag ignores
 * them and sends no `OCI-Tag`, which tells the client none were applied. Over MAX_TAGS_PER_PUSH
 * is 414; an invalid one refuses the whole push (400 TAG_INVALID) before anything is stored.
 */
function tagParameters(query: URLSearchParams, ref: string): string[] {
  if (!isDigestReference(ref)) return []
  const tags = [...new Set(query.getAll('tag'))]
  if (tags.length > MAX_TAGS_PER_PUSH) {
    throw new RegistryError(
      'TAG_INVALID',
      { tags: tags.length, limit: MAX_TAGS_PER_PUSH },
      {
        status: 414,
        message: `more than ${MAX_TAGS_PER_PUSH} tag parameters; push the rest in another request`,
      },
    )
  }
  return tags
}

export const putManifest: Handler = async context => {
  const { request, params, query, store, maxManifestBytes } = context
  const name = repositoryName(params)
  const ref = reference(params)
  const tags = tagParameters(query, ref)
  const body = await readLimited(request, context.body, maxManifestBytes)
  // Moving an existing tag is `overwrite`, which only the store can tell from a new tag (access rules).
  const overwrite = context.exchange.access?.may(name, 'overwrite') ?? true
  const pushedTags = isDigestReference(ref) ? tags : [ref, ...tags]
  // What each tag named before, for the events: a push that moves a tag says from where. Read only
  // when someone listens (an audit log, webhooks): it costs a storage read per tag.
  const listened = context.events !== NO_EVENTS
  const previous = await Promise.all(
    (listened ? pushedTags : []).map(tag =>
      store.tags.resolve(name, tag).then(
        digest => digest.value,
        () => undefined,
      ),
    ),
  )
  // Quotas (storage/quota.ts) refuse before anything is stored: no manifest, no tag moved.
  const mediaType = mediaTypeOf(request.headers['content-type'])
  if (context.quota !== undefined)
    await context.quota.checkPush(name, { content: body, mediaType, digest: isDigestReference(ref) ? ref : digestOf(body).value })
  const result = await store.manifests.put(name, ref, body, mediaType, { tags, overwrite })
  const actor = actorOf(context.exchange)
  const pushed = { action: 'push', repository: name, digest: result.digest, mediaType: result.mediaType, size: body.byteLength } as const
  if (pushedTags.length === 0) context.events.emit(pushed, actor)
  pushedTags.forEach((tag, index) => context.events.emit({ ...pushed, tag, previous: previous[index] === result.digest ? undefined : previous[index] }, actor))
  const headers: Record<string, string | string[]> = {
    Location: `/v2/${name}/manifests/${result.digest}`,
    'Docker-Content-Digest': result.digest,
  }
  if (result.subject !== undefined) headers['OCI-Subject'] = result.subject
  if (result.tags.length > 0) headers['OCI-Tag'] = [...result.tags]
  sendEmpty(context.response, 201, headers)
}

export const deleteManifest: Handler = async ({ exchange, response, params, store, events }) => {
  const name = repositoryName(params)
  const ref = reference(params)
  await store.manifests.delete(name, ref)
  events.emit({ action: 'delete', repository: name, target: isDigestReference(ref) ? 'manifest' : 'tag', reference: ref }, actorOf(exchange))
  sendEmpty(response, 202)
}

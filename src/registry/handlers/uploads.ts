/**
 * Blob uploads (end-4a/4b, end-5, end-6, end-11, end-13 and cancel): POST starts (or mounts, or
 * takes a whole blob with `?digest=`), PATCH appends a streamed chunk, PUT finishes, GET reports
 * progress, DELETE cancels. `Location` is always relative, so no proxy can rewrite it wrongly.
 *
 * No `OCI-Chunk-Min-Length` on the POST: distribution-spec v1.1 has a registry send it when it
 * has a minimum chunk size (and may answer a smaller chunk with 416). Berth has none: every
 * driver appends a chunk of any size (the S3 driver resends an upload under 5 MiB and copies a
 * larger one server-side before the new part), so the header would only make clients that honour
 * it (the OCI conformance suite; client libraries that take max(their chunk, the minimum)) buffer
 * bigger chunks for no limit of ours.
 */
import type { IncomingMessage } from 'node:http'
import { parseDigest } from '../../storage/digest.js'
import { UploadRangeError, UploadSizeError, UploadUnknownError } from '../../storage/errors.js'
import type { ChunkOptions } from '../../storage/upload-store.js'
import { assertRepositoryName } from '../../storage/reference.js'
import { RegistryError } from '../errors.js'
import { sendEmpty } from '../../http/respond.js'
import { contentLength } from '../headers.js'
import type { Handler, HandlerContext } from '../routes.js'
import { repositoryName } from './params.js'

function uploadLocation(name: string, id: string): string {
  return `/v2/${name}/blobs/uploads/${id}`
}

/** distribution's quirk kept for clients that learned it: `0-0` for an empty upload. */
function rangeHeader(size: number): string {
  return `0-${size > 0 ? size - 1 : 0}`
}

function uploadHeaders(name: string, id: string, size: number): Record<string, string | number> {
  return { Location: uploadLocation(name, id), Range: rangeHeader(size), 'Docker-Upload-UUID': id }
}

function blobCreated(context: HandlerContext, name: string, digest: string): void {
  sendEmpty(context.response, 201, { Location: `/v2/${name}/blobs/${digest}`, 'Docker-Content-Digest': digest })
}

function uploadId(context: HandlerContext): string {
  return context.params.uploadId ?? ''
}

function requestLength(request: IncomingMessage): number | undefined {
  try {
    return contentLength(request)
  } catch {
    throw new RegistryError('SIZE_INVALID', undefined, { message: 'malformed Content-Length' })
  }
}

/** Whether the request carries a body at all (a length > 0, or chunked transfer coding). */
function hasBody(request: IncomingMessage): boolean {
  const length = requestLength(request)
  if (length !== undefined) return length > 0
  return request.headers['transfer-encoding'] !== undefined
}

/**
 * `Content-Range: <start>-<end>` (inclusive, distribution-spec end-5) plus Content-Length, as
 * chunk options. A malformed range is a 416 like an out-of-order one; a Content-Length that
 * disagrees with the range is 400 SIZE_INVALID.
 */
function chunkOptions(request: IncomingMessage, name: string, id: string, currentSize: () => Promise<number>): Promise<ChunkOptions> {
  return (async () => {
    const length = requestLength(request)
    const raw = request.headers['content-range']
    if (raw === undefined) return length === undefined ? {} : { length }
    // The spec's form is `^[0-9]+-[0-9]+$`; docker-era clients sometimes add the `bytes ` unit.
    const match = /^(?:bytes[ =])?([0-9]{1,15})-([0-9]{1,15})$/.exec(raw.trim())
    const start = match ? Number(match[1]) : NaN
    const end = match ? Number(match[2]) : NaN
    if (!match || end < start) throw new UploadRangeError(name, id, await currentSize(), `malformed Content-Range ${JSON.stringify(raw.slice(0, 100))}`)
    const rangeLength = end - start + 1
    if (length !== undefined && length !== rangeLength) {
      throw new UploadSizeError(`Content-Length ${length} does not match Content-Range ${start}-${end}`)
    }
    return { start, length: rangeLength }
  })()
}

async function sizeOrZero(context: HandlerContext, name: string, id: string): Promise<number> {
  try {
    return await context.store.uploads.size(name, id)
  } catch (error) {
    if (error instanceof UploadUnknownError) return 0
    throw error
  }
}

export const startUpload: Handler = async context => {
  const { request, query, store } = context
  const name = repositoryName(context.params)
  const mount = query.get('mount')
  if (mount !== null) {
    const digest = parseDigest(mount)
    const from = query.get('from') ?? undefined
    if (from !== undefined) assertRepositoryName(from)
    // Under access rules a mount needs pull on its source, and one without a source (the spec's
    // automatic discovery) would hand out any repository's blob by digest: both become an upload.
    const access = context.exchange.access
    const allowed = access === undefined || (from !== undefined && access.may(from, 'pull'))
    const mounted = allowed ? await store.blobs.mount(name, digest, from) : undefined
    if (mounted !== undefined) return blobCreated(context, name, digest.value)
    // Cannot mount: the spec says fall back to a normal upload session (202).
  }
  // A repository already at its quota takes no more bytes (storage/quota.ts): refused before any are sent.
  await context.quota?.checkUpload(name)
  const digestParam = mount === null ? query.get('digest') : null
  if (digestParam !== null) {
    // Monolithic single-POST upload (end-4b): the body is the whole blob.
    const digest = parseDigest(digestParam)
    const length = requestLength(request)
    const id = await store.uploads.start(name)
    try {
      const info = await store.uploads.complete(name, id, digest, context.body, length === undefined ? {} : { length })
      return blobCreated(context, name, info.digest)
    } catch (error) {
      await store.uploads.cancel(name, id).catch(() => {})
      throw error
    }
  }
  const id = await store.uploads.start(name)
  sendEmpty(context.response, 202, uploadHeaders(name, id, 0))
}

export const patchUpload: Handler = async context => {
  const name = repositoryName(context.params)
  const id = uploadId(context)
  const options = await chunkOptions(context.request, name, id, () => sizeOrZero(context, name, id))
  const size = await context.store.uploads.append(name, id, context.body, options)
  sendEmpty(context.response, 202, uploadHeaders(name, id, size))
}

export const putUpload: Handler = async context => {
  const name = repositoryName(context.params)
  const id = uploadId(context)
  const digestParam = context.query.get('digest')
  if (digestParam === null || digestParam === '') {
    throw new RegistryError('DIGEST_INVALID', undefined, { message: 'the digest query parameter is required to finish an upload' })
  }
  const digest = parseDigest(digestParam)
  const body = hasBody(context.request)
  const options = body ? await chunkOptions(context.request, name, id, () => sizeOrZero(context, name, id)) : {}
  const info = await context.store.uploads.complete(name, id, digest, body ? context.body : undefined, options)
  blobCreated(context, name, info.digest)
}

export const getUpload: Handler = async context => {
  const name = repositoryName(context.params)
  const id = uploadId(context)
  const size = await context.store.uploads.size(name, id)
  sendEmpty(context.response, 204, uploadHeaders(name, id, size))
}

export const cancelUpload: Handler = async context => {
  const name = repositoryName(context.params)
  const id = uploadId(context)
  await context.store.uploads.cancel(name, id)
  sendEmpty(context.response, 204)
}

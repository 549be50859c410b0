/**
 * The one mapping from storage domain errors to the OCI error table (`http/errors.ts`). Handlers
 * and stores throw; the engine maps what it catches here and writes it with `http/respond.ts`.
 */
import {
  BlobUnknownError,
  DigestInvalidError,
  DigestMismatchError,
  ManifestBlobUnknownError,
  ManifestInvalidError,
  ManifestTooLargeError,
  ManifestUnknownError,
  NameInvalidError,
  QuotaExceededError,
  RepositoryUnknownError,
  TagExistsError,
  TagInvalidError,
  UploadRangeError,
  UploadSizeError,
  UploadUnknownError,
} from '../storage/errors.js'
import { RegistryError, toHttpError } from '../http/errors.js'
import { UpstreamDeniedError, UpstreamRateLimitedError, UpstreamUnavailableError } from '../mirror/errors.js'

export { RegistryError }

/** Maps anything thrown below the HTTP layer to what the client sees. Unknown errors become 500 UNKNOWN without details. */
export function toRegistryError(error: unknown): RegistryError {
  const known = toHttpError(error)
  if (known !== undefined) return known
  if (error instanceof NameInvalidError) return new RegistryError('NAME_INVALID', { name: error.repository.slice(0, 300) })
  if (error instanceof TagExistsError) return new RegistryError('DENIED', { tag: error.tag.slice(0, 300), current: error.current }, { message: error.message })
  if (error instanceof QuotaExceededError) {
    const { repository, quota, limit, usage, push } = error
    return new RegistryError('DENIED', { repository, quota, limit, usage, push }, { message: error.message })
  }
  if (error instanceof TagInvalidError) return new RegistryError('TAG_INVALID', { tag: error.tag.slice(0, 300) })
  if (error instanceof DigestInvalidError) return new RegistryError('DIGEST_INVALID', { digest: error.digest.slice(0, 300), reason: error.reason })
  if (error instanceof DigestMismatchError) return new RegistryError('DIGEST_INVALID', { expected: error.expected, actual: error.actual })
  if (error instanceof RepositoryUnknownError) return new RegistryError('NAME_UNKNOWN', { name: error.repository })
  if (error instanceof BlobUnknownError) return new RegistryError('BLOB_UNKNOWN', { digest: error.digest })
  if (error instanceof ManifestUnknownError) {
    return new RegistryError('MANIFEST_UNKNOWN', { reference: error.reference }, { message: error.message })
  }
  if (error instanceof ManifestBlobUnknownError) return new RegistryError('MANIFEST_BLOB_UNKNOWN', { digest: error.digest })
  if (error instanceof ManifestInvalidError) return new RegistryError('MANIFEST_INVALID', { reason: error.reason })
  // distribution-spec: a registry SHOULD answer 413 to a manifest over its limit.
  if (error instanceof ManifestTooLargeError) {
    return new RegistryError('SIZE_INVALID', { limit: error.limit }, { status: 413, message: `manifest larger than ${error.limit} bytes` })
  }
  if (error instanceof UploadUnknownError) return new RegistryError('BLOB_UPLOAD_UNKNOWN', { uuid: error.uploadId })
  if (error instanceof UploadRangeError) {
    // distribution-spec: "If a chunk is uploaded out of order, the registry MUST respond with 416".
    return new RegistryError(
      'BLOB_UPLOAD_INVALID',
      { reason: error.message },
      {
        status: 416,
        message: error.message,
        headers: {
          Location: `/v2/${error.repository}/blobs/uploads/${error.uploadId}`,
          Range: error.size > 0 ? `0-${error.size - 1}` : '0-0',
          'Docker-Upload-UUID': error.uploadId,
        },
      },
    )
  }
  if (error instanceof UploadSizeError) return new RegistryError('SIZE_INVALID', { reason: error.message })
  // A mirror's upstream: 502 as the edge's proxy answers for a registry behind it that fails.
  if (error instanceof UpstreamUnavailableError) {
    return new RegistryError('UNAVAILABLE', { upstream: error.upstream }, { status: 502, message: `${error.message}; it is not cached here`, cause: error })
  }
  if (error instanceof UpstreamRateLimitedError) {
    return new RegistryError(
      'TOOMANYREQUESTS',
      { upstream: error.upstream },
      { message: error.message, headers: error.retryAfter === undefined ? {} : { 'Retry-After': error.retryAfter } },
    )
  }
  if (error instanceof UpstreamDeniedError) return new RegistryError('DENIED', { upstream: error.upstream, name: error.repository }, { message: error.message })
  // A full or read-only disk is the operator's to fix, and the pusher should be told so rather than
  // see "unknown error" (RFC 4918 §11.5: 507 Insufficient Storage). Docker shows the message.
  const code = systemErrorCode(error)
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new RegistryError('UNKNOWN', undefined, {
      cause: error,
      status: 507,
      message: 'the registry is out of storage space (no space left on its disk); ask its operator to free some',
    })
  }
  // Out of file descriptors is a moment's overload, not a fault of the request: clients retry a 503.
  if (code === 'EMFILE' || code === 'ENFILE') {
    return new RegistryError('UNAVAILABLE', undefined, {
      cause: error,
      message: 'the registry has too many open files at the moment; try again shortly',
      headers: { 'Retry-After': '5' },
    })
  }
  if (code === 'EROFS') {
    return new RegistryError('UNKNOWN', undefined, { cause: error, status: 507, message: "the registry's storage is read-only; ask its operator" })
  }
  return new RegistryError('UNKNOWN', undefined, { cause: error })
}

/** The errno code (`ENOSPC` …) of an error or of any error in its `cause` chain. */
function systemErrorCode(error: unknown): string | undefined {
  for (let current = error, depth = 0; current instanceof Error && depth < 5; current = current.cause, depth++) {
    const code = (current as NodeJS.ErrnoException).code
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code
  }
  return undefined
}

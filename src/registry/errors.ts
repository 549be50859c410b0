/**
 * The OCI error table (distribution-spec v1.1 "Error Codes", plus the few codes distribution adds
 * that docker clients know) and the one mapping from storage domain errors to it. Nothing else in
 * Berth picks an HTTP status for a registry error; `app.ts` is the one place that writes them.
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
  RepositoryUnknownError,
  TagInvalidError,
  UploadRangeError,
  UploadSizeError,
  UploadUnknownError,
} from '../storage/errors.js'

export const OCI_ERRORS = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: { status: 400, message: 'manifest references a manifest or blob unknown to registry' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  // Not in the OCI list; distribution sends them and docker understands them.
  TAG_INVALID: { status: 400, message: 'manifest tag did not match URI' },
  RANGE_INVALID: { status: 416, message: 'invalid content range' },
  PAGINATION_NUMBER_INVALID: { status: 400, message: 'invalid number of results requested' },
  NOT_FOUND: { status: 404, message: 'no such endpoint' },
  UNKNOWN: { status: 500, message: 'unknown error' },
} as const satisfies Record<string, { status: number; message: string }>

export type OciErrorCode = keyof typeof OCI_ERRORS

export class RegistryError extends Error {
  override readonly name = 'RegistryError'
  readonly status: number
  /** Extra response headers (e.g. `Range` on a 416 so the client can resume). */
  readonly headers: Record<string, string>

  constructor(
    readonly code: OciErrorCode,
    readonly detail?: unknown,
    options?: { cause?: unknown; status?: number; message?: string; headers?: Record<string, string> },
  ) {
    super(options?.message ?? OCI_ERRORS[code].message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.status = options?.status ?? OCI_ERRORS[code].status
    this.headers = options?.headers ?? {}
  }

  toBody(): { errors: { code: string; message: string; detail?: unknown }[] } {
    const error: { code: string; message: string; detail?: unknown } = { code: this.code, message: this.message }
    if (this.detail !== undefined) error.detail = this.detail
    return { errors: [error] }
  }
}

/** Maps anything thrown below the HTTP layer to what the client sees. Unknown errors become 500 UNKNOWN without details. */
export function toRegistryError(error: unknown): RegistryError {
  if (error instanceof RegistryError) return error
  if (error instanceof NameInvalidError) return new RegistryError('NAME_INVALID', { name: error.repository.slice(0, 300) })
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
    return new RegistryError('BLOB_UPLOAD_INVALID', { reason: error.message }, {
      status: 416,
      message: error.message,
      headers: {
        Location: `/v2/${error.repository}/blobs/uploads/${error.uploadId}`,
        Range: error.size > 0 ? `0-${error.size - 1}` : '0-0',
        'Docker-Upload-UUID': error.uploadId,
      },
    })
  }
  if (error instanceof UploadSizeError) return new RegistryError('SIZE_INVALID', { reason: error.message })
  // A full or read-only disk is the operator's to fix, and the pusher should be told so rather than
  // see "unknown error" (RFC 4918 §11.5: 507 Insufficient Storage). Docker shows the message.
  const code = systemErrorCode(error)
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new RegistryError('UNKNOWN', undefined, { cause: error, status: 507, message: 'the registry is out of storage space (no space left on its disk); ask its operator to free some' })
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

/**
 * Domain errors of the storage layer. They say what went wrong in registry words and carry no
 * HTTP: `registry/errors.ts` is the one place that maps them to OCI codes and statuses.
 */
export class StorageError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
  }
}

export class NameInvalidError extends StorageError {
  constructor(readonly repository: string) {
    super('NAME_INVALID', `invalid repository name: ${JSON.stringify(repository.slice(0, 300))}`)
  }
}

export class TagInvalidError extends StorageError {
  constructor(readonly tag: string) {
    super('TAG_INVALID', `invalid tag: ${JSON.stringify(tag.slice(0, 300))}`)
  }
}

export class DigestInvalidError extends StorageError {
  constructor(
    readonly digest: string,
    readonly reason: string,
  ) {
    super('DIGEST_INVALID', `${reason}: ${JSON.stringify(digest.slice(0, 300))}`)
  }
}

/** The content did not hash to the digest the client stated. */
export class DigestMismatchError extends StorageError {
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super('DIGEST_MISMATCH', `content digest ${actual} does not match ${expected}`)
  }
}

export class RepositoryUnknownError extends StorageError {
  constructor(readonly repository: string) {
    super('REPOSITORY_UNKNOWN', `repository not known: ${repository}`)
  }
}

export class BlobUnknownError extends StorageError {
  constructor(readonly digest: string) {
    super('BLOB_UNKNOWN', `blob unknown: ${digest}`)
  }
}

export class ManifestUnknownError extends StorageError {
  constructor(
    readonly reference: string,
    message?: string,
  ) {
    super('MANIFEST_UNKNOWN', message ?? `manifest unknown: ${reference}`)
  }
}

/** A push would move a tag that already points at another manifest, and the pusher may not (immutable tags). */
export class TagExistsError extends StorageError {
  constructor(
    readonly repository: string,
    readonly tag: string,
    readonly current: string,
  ) {
    super('DENIED', `tag ${tag} of ${repository} already points at ${current}, and this push may not move it (the access rules grant push, not overwrite)`)
  }
}

/** A push would take a repository past its quota (storage/quota.ts builds the message: glob, limit, usage, this push). */
export class QuotaExceededError extends StorageError {
  constructor(
    readonly repository: string,
    readonly quota: string,
    readonly limit: number,
    readonly usage: number,
    readonly push: number,
    message: string,
  ) {
    super('DENIED', message)
  }
}

/** A manifest references a blob or child manifest that this repository does not hold. */
export class ManifestBlobUnknownError extends StorageError {
  constructor(readonly digest: string) {
    super('MANIFEST_BLOB_UNKNOWN', `manifest references unknown blob ${digest}`)
  }
}

export class ManifestInvalidError extends StorageError {
  constructor(
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super('MANIFEST_INVALID', `manifest invalid: ${reason}`, options)
  }
}

export class ManifestTooLargeError extends StorageError {
  constructor(readonly limit: number) {
    super('MANIFEST_TOO_LARGE', `manifest larger than ${limit} bytes`)
  }
}

export class UploadUnknownError extends StorageError {
  constructor(readonly uploadId: string) {
    super('UPLOAD_UNKNOWN', `upload unknown: ${uploadId.slice(0, 100)}`)
  }
}

/** A chunk did not start where the upload ends (out of order), or its range is malformed. */
export class UploadRangeError extends StorageError {
  constructor(
    readonly repository: string,
    readonly uploadId: string,
    readonly size: number,
    reason: string,
  ) {
    super('UPLOAD_RANGE_INVALID', reason)
  }
}

/** The body length disagreed with Content-Length / Content-Range, or the client went away mid-body. */
export class UploadSizeError extends StorageError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super('UPLOAD_SIZE_INVALID', reason, options)
  }
}

/**
 * The error table of the whole process: the OCI codes (distribution-spec v1.1 "Error Codes", plus
 * the few distribution adds that docker clients know) with their status and message. The edge's
 * steps and the engine throw or pass a RegistryError; `respond.ts` is the one writer. Nothing else
 * in Berth picks an HTTP status for an error.
 */

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
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
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

/** A request body crossed the body limit (the body-limit step's counting stream fails with it). */
export class BodyTooLargeError extends Error {
  override readonly name = 'BodyTooLargeError'
  constructor(readonly limit: number) {
    super(`request body larger than the limit of ${limit} bytes`)
  }
}

/**
 * The RegistryError for errors this layer knows (a RegistryError, a body over the limit, anywhere
 * in the `cause` chain), undefined for anything else.
 */
export function toHttpError(error: unknown): RegistryError | undefined {
  for (let current = error, depth = 0; current instanceof Error && depth < 5; current = current.cause, depth++) {
    if (current instanceof RegistryError) return current
    if (current instanceof BodyTooLargeError) {
      return new RegistryError('SIZE_INVALID', { limit: current.limit }, { status: 413, message: current.message, cause: current })
    }
  }
  return undefined
}

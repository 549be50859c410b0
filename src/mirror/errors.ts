/**
 * What can go wrong between Berth and a mirror's upstream, as domain errors (no HTTP status in
 * them): `registry/errors.ts` maps them to the OCI table once. Each names the upstream so the
 * client's error message says which registry failed.
 */

/** The upstream cannot answer now: refused, timed out, 5xx, or it sent something unusable (a wrong digest, too many bytes). */
export class UpstreamUnavailableError extends Error {
  override readonly name = 'UpstreamUnavailableError'
  constructor(
    readonly upstream: string,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`upstream ${upstream} is unreachable or failed: ${reason}`, options)
  }
}

/** The upstream answered 429; `retryAfter` is its Retry-After, passed on. */
export class UpstreamRateLimitedError extends Error {
  override readonly name = 'UpstreamRateLimitedError'
  constructor(
    readonly upstream: string,
    readonly retryAfter: string | undefined,
  ) {
    super(`upstream ${upstream} is rate limiting this mirror (429) and the content is not cached here`)
  }
}

/** The upstream refused access (401/403 after authenticating): the repository is private, missing, or the mirror's credentials lack access. */
export class UpstreamDeniedError extends Error {
  override readonly name: string = 'UpstreamDeniedError'
  constructor(
    readonly upstream: string,
    readonly repository: string,
    readonly status: number,
  ) {
    super(`upstream ${upstream} refused access to ${repository} (${status}): it may not exist there, or need credentials the mirror lacks`)
  }
}

/**
 * The upstream refused the mirror's own login: its token realm answered 401/403 to the configured
 * credentials (or to none, when it allows no anonymous tokens), or it answered 401 to Basic
 * credentials. A configuration fault of the mirror, not of the pulling client.
 */
export class UpstreamCredentialsError extends UpstreamDeniedError {
  override readonly name = 'UpstreamCredentialsError'
  constructor(upstream: string, repository: string, status: number, username: string | undefined, where: string) {
    super(upstream, repository, status)
    this.message =
      username === undefined
        ? `upstream ${upstream} refused anonymous access (${where} answered ${status}): give this mirror a username and password`
        : `upstream ${upstream} refused the mirror's credentials (user ${username}; ${where} answered ${status}): check this mirror's username and password`
  }
}

/** Whether serving stale cached content is the right answer to `error` (the upstream is down or throttling, not authoritative). */
export function isUpstreamOutage(error: unknown): boolean {
  return error instanceof UpstreamUnavailableError || error instanceof UpstreamRateLimitedError
}

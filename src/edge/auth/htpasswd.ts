/**
 * htpasswd files with bcrypt hashes: parsing, verifying, writing.
 *
 * Accepted: `user:$2y$..`, `$2a$`, `$2b$` (Apache `htpasswd -B` writes `$2y$`; bcryptjs reads all three,
 * native bcrypt would not read `$2y$`). Everything else (`$apr1$`, `{SHA}`, `$5$`, `$6$`, crypt, plain)
 * is refused with the line number, so a half-migrated nginx file fails at start instead of locking
 * users out silently (distribution ignores such lines; we prefer a loud start-up error).
 */
import { createHash } from 'node:crypto'
import bcrypt from 'bcryptjs'

/**
 * Default bcrypt cost for `berth htpasswd`: 10. A compare then takes ~60 ms with bcryptjs — slow enough
 * to make offline guessing of a leaked file expensive (Apache's default 5 is 32× cheaper), and the edge
 * caches verified credentials so the cost is paid about once per user per cache TTL, not per request.
 */
export const DEFAULT_BCRYPT_COST = 10

const BCRYPT_HASH = /^\$2[aby]\$(\d{2})\$[./A-Za-z0-9]{53}$/

export class HtpasswdError extends Error {
  override readonly name = 'HtpasswdError'
  constructor(
    message: string,
    readonly source: string,
    readonly line?: number,
  ) {
    super(line === undefined ? `${source}: ${message}` : `${source} line ${line}: ${message}`)
  }
}

/** Names the hash scheme of a refused line, for the error message. */
function describeHash(hash: string): string {
  if (hash.startsWith('$apr1$')) return 'an MD5 ($apr1$) hash'
  if (hash.startsWith('{SHA}')) return 'a SHA-1 ({SHA}) hash'
  if (hash.startsWith('{SSHA}')) return 'a salted SHA-1 ({SSHA}) hash'
  if (hash.startsWith('{PLAIN}')) return 'a plain-text password'
  if (hash.startsWith('$5$')) return 'a SHA-256-crypt ($5$) hash'
  if (hash.startsWith('$6$')) return 'a SHA-512-crypt ($6$) hash'
  if (hash.startsWith('$1$')) return 'an MD5-crypt ($1$) hash'
  if (hash.startsWith('$2')) return 'a malformed bcrypt hash'
  if (/^[./A-Za-z0-9]{13}$/.test(hash)) return 'a DES crypt(3) hash'
  return 'an unsupported hash or a plain-text password'
}

/**
 * Parses htpasswd text into user → bcrypt hash.
 * Blank lines and lines starting with `#` are skipped; CRLF is accepted.
 * @throws HtpasswdError naming the line for a non-bcrypt hash, a line without `user:hash`, or a duplicate user.
 */
export function parseHtpasswd(text: string, source = 'htpasswd'): Map<string, string> {
  const users = new Map<string, string>()
  const lines = text.split('\n')
  for (let index = 0; index < lines.length; index++) {
    const line = (lines[index] ?? '').replace(/\r$/, '').trim()
    const number = index + 1
    if (line === '' || line.startsWith('#')) continue
    const colon = line.indexOf(':')
    if (colon <= 0) throw new HtpasswdError('expected "user:bcrypt-hash"', source, number)
    const user = line.slice(0, colon)
    const hash = line.slice(colon + 1)
    if (!BCRYPT_HASH.test(hash)) {
      throw new HtpasswdError(
        `user "${user}" has ${describeHash(hash)}; only bcrypt ($2y$, $2a$, $2b$) is accepted — recreate it with "berth htpasswd" or "htpasswd -B"`,
        source,
        number,
      )
    }
    if (users.has(user)) throw new HtpasswdError(`user "${user}" appears twice`, source, number)
    users.set(user, hash)
  }
  return users
}

/**
 * bcrypt-hashes a password for an htpasswd line (`$2b$`, read by Apache, nginx-on-glibc-with-bcrypt,
 * distribution and Berth). Synchronous on purpose: it is for the CLI, never a request path.
 * @throws RangeError for an empty password, one longer than bcrypt's 72-byte input, or a cost outside 4..31.
 */
export function hashPassword(password: string, cost = DEFAULT_BCRYPT_COST): string {
  if (password.length === 0) throw new RangeError('the password is empty')
  // bcrypt silently ignores everything after 72 bytes; refuse rather than store a weaker secret.
  if (Buffer.byteLength(password, 'utf8') > 72) throw new RangeError('the password is longer than 72 bytes, which bcrypt cannot use')
  if (!Number.isInteger(cost) || cost < 4 || cost > 31) throw new RangeError(`bcrypt cost must be an integer from 4 to 31, got ${cost}`)
  return bcrypt.hashSync(password, bcrypt.genSaltSync(cost))
}

/** One htpasswd line, `user:$2b$10$...` (no newline). @throws RangeError for a user name with `:` or whitespace. */
export function formatHtpasswdLine(user: string, password: string, cost = DEFAULT_BCRYPT_COST): string {
  if (user.length === 0 || /[:\s]/.test(user)) throw new RangeError(`invalid user name ${JSON.stringify(user)}: it must be non-empty without ":" or spaces`)
  return `${user}:${hashPassword(password, cost)}`
}

export interface CredentialVerifierOptions {
  /** How long a verified (user, password) pair is trusted without bcrypt, default 10 min. */
  successTtlMs?: number
  /** How long a wrong (user, password) pair is remembered as wrong, default 1 min. */
  failureTtlMs?: number
  /** Cache bound (Caddy uses 1000), default 1000. */
  maxEntries?: number
}

/**
 * Verifies Basic credentials against one parsed htpasswd file.
 *
 * bcryptjs blocks the event loop for the whole compare (~60 ms at cost 10, even in its "async" mode),
 * so results are cached, keyed by SHA-256(user, password, stored hash): a changed password or file
 * never hits an old entry. Identical concurrent checks share one compare (singleflight), and compares
 * run one at a time so a burst cannot monopolise the loop for longer than one compare in a row.
 * Unknown users are compared against a dummy hash of the file's typical cost so they take as long
 * as known ones.
 */
export class CredentialVerifier {
  private readonly cache = new Map<string, { ok: boolean; expires: number }>()
  private readonly inflight = new Map<string, Promise<boolean>>()
  private queue: Promise<unknown> = Promise.resolve()
  private queued = 0
  private readonly successTtlMs: number
  private readonly failureTtlMs: number
  private readonly maxEntries: number

  private constructor(
    private readonly users: ReadonlyMap<string, string>,
    private readonly dummyHash: string,
    options: CredentialVerifierOptions,
  ) {
    this.successTtlMs = options.successTtlMs ?? 10 * 60_000
    this.failureTtlMs = options.failureTtlMs ?? 60_000
    this.maxEntries = options.maxEntries ?? 1000
  }

  /** Builds a verifier; makes the dummy hash (one bcrypt hash at the most common cost in the file). */
  static async create(users: ReadonlyMap<string, string>, options: CredentialVerifierOptions = {}): Promise<CredentialVerifier> {
    const costs = new Map<number, number>()
    for (const hash of users.values()) {
      const cost = bcrypt.getRounds(hash)
      costs.set(cost, (costs.get(cost) ?? 0) + 1)
    }
    let cost = DEFAULT_BCRYPT_COST
    let best = 0
    for (const [c, n] of costs) if (n > best) [cost, best] = [c, n]
    const dummyHash = await bcrypt.hash('berth-dummy-password-for-unknown-users', await bcrypt.genSalt(cost))
    return new CredentialVerifier(users, dummyHash, options)
  }

  get userCount(): number {
    return this.users.size
  }

  /** The cached answer for these credentials, or undefined when bcrypt would have to run. Never blocks. */
  cached(user: string, password: string): boolean | undefined {
    const key = this.key(user, password)
    const hit = this.cache.get(key)
    if (!hit) return undefined
    if (hit.expires <= Date.now()) {
      this.cache.delete(key)
      return undefined
    }
    return hit.ok
  }

  /** The compare already running for exactly these credentials, if any (joining it costs no bcrypt work). */
  running(user: string, password: string): Promise<boolean> | undefined {
    return this.inflight.get(this.key(user, password))
  }

  /** Number of compares waiting or running; the edge refuses new uncached checks when this is high. */
  get pending(): number {
    return this.queued
  }

  /** True when the password matches the user's bcrypt hash. Never rejects. */
  verify(user: string, password: string): Promise<boolean> {
    const cached = this.cached(user, password)
    if (cached !== undefined) return Promise.resolve(cached)
    const key = this.key(user, password)
    const running = this.inflight.get(key)
    if (running) return running
    const stored = this.users.get(user)
    this.queued++
    const result = this.queue
      .then(() => new Promise<void>(resolve => setImmediate(resolve))) // let I/O run between compares
      .then(() => bcrypt.compare(password, stored ?? this.dummyHash))
      .then(
        ok => ok && stored !== undefined,
        () => false,
      )
      .then(ok => {
        this.remember(key, ok)
        return ok
      })
      .finally(() => {
        this.queued--
        this.inflight.delete(key)
      })
    this.queue = result
    this.inflight.set(key, result)
    return result
  }

  private key(user: string, password: string): string {
    const stored = this.users.get(user) ?? ''
    return createHash('sha256').update(user).update('\0').update(password).update('\0').update(stored).digest('base64')
  }

  private remember(key: string, ok: boolean): void {
    this.cache.delete(key)
    if (this.cache.size >= this.maxEntries) {
      const oldest = this.cache.keys().next().value
      if (oldest !== undefined) this.cache.delete(oldest)
    }
    this.cache.set(key, { ok, expires: Date.now() + (ok ? this.successTtlMs : this.failureTtlMs) })
  }
}

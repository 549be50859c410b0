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
import { type BcryptPool, sharedBcryptPool } from './bcrypt-pool.js'

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

/** The users of an htpasswd text that can log in, and the lines refused (each an error naming its line). */
export interface HtpasswdContent {
  users: Map<string, string>
  refused: HtpasswdError[]
  /** True when the text has any line that is not blank or a comment: someone meant to require a login. */
  hasUserLines: boolean
}

/**
 * Reads every line of an htpasswd text, keeping the good ones and collecting the bad ones, so a
 * running server applies an edit's valid lines (removals always take effect) and refuses only the
 * bad ones. A user named on more than one line is refused on all of them (which line wins would be
 * a guess). Blank lines and lines starting with `#` are skipped; CRLF is accepted.
 */
export function readHtpasswd(text: string, source = 'htpasswd'): HtpasswdContent {
  const users = new Map<string, string>()
  const refused: HtpasswdError[] = []
  const lineOf = new Map<string, number>()
  const duplicated = new Set<string>()
  let hasUserLines = false
  const lines = text.split('\n')
  for (let index = 0; index < lines.length; index++) {
    const line = (lines[index] ?? '').replace(/\r$/, '').trim()
    const number = index + 1
    if (line === '' || line.startsWith('#')) continue
    hasUserLines = true
    const colon = line.indexOf(':')
    if (colon <= 0) {
      refused.push(new HtpasswdError('expected "user:bcrypt-hash"', source, number))
      continue
    }
    const user = line.slice(0, colon)
    const hash = line.slice(colon + 1)
    if (lineOf.has(user)) {
      refused.push(new HtpasswdError(`user "${user}" appears twice`, source, number))
      duplicated.add(user)
      continue
    }
    lineOf.set(user, number)
    if (!BCRYPT_HASH.test(hash)) {
      refused.push(
        new HtpasswdError(
          `user "${user}" has ${describeHash(hash)}; only bcrypt ($2y$, $2a$, $2b$) is accepted — recreate it with "berth htpasswd" or "htpasswd -B"`,
          source,
          number,
        ),
      )
      continue
    }
    users.set(user, hash)
  }
  for (const user of duplicated) users.delete(user)
  return { users, refused, hasUserLines }
}

/**
 * Parses htpasswd text into user → bcrypt hash, strictly (for start-up and `berth doctor`).
 * @throws HtpasswdError naming the first bad line: a non-bcrypt hash, a line without `user:hash`, or a duplicate user.
 */
export function parseHtpasswd(text: string, source = 'htpasswd'): Map<string, string> {
  const { users, refused } = readHtpasswd(text, source)
  if (refused[0]) throw refused[0]
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
  /** Where compares run, default the process-wide pool (bcrypt-pool.ts). */
  pool?: BcryptPool
}

/**
 * Verifies Basic credentials against one parsed htpasswd file.
 *
 * Compares run in the bcrypt worker pool, queued fairly per client key, so they never block the
 * event loop. Results are cached, keyed by SHA-256(user, password, stored hash): a changed password
 * or file never hits an old entry. Identical concurrent checks share one compare (singleflight).
 *
 * A failed check takes as long whether or not the user exists and whatever the user's cost:
 * unknown users are compared against a dummy hash at the highest cost in the file, and a failure
 * against a cheaper hash is answered no sooner than a compare at that highest cost takes (the
 * median of the last few measured). Successful checks are not delayed.
 */
export class CredentialVerifier {
  private readonly cache = new Map<string, { ok: boolean; expires: number }>()
  private readonly inflight = new Map<string, Promise<boolean>>()
  private readonly successTtlMs: number
  private readonly failureTtlMs: number
  private readonly maxEntries: number

  private constructor(
    private readonly users: ReadonlyMap<string, string>,
    private readonly dummyHash: string,
    private readonly maxCost: number,
    /** The milliseconds the last few compares at maxCost took in a worker, newest last. */
    private readonly slowestCompares: number[],
    private readonly pool: BcryptPool,
    options: CredentialVerifierOptions,
  ) {
    this.successTtlMs = options.successTtlMs ?? 10 * 60_000
    this.failureTtlMs = options.failureTtlMs ?? 60_000
    this.maxEntries = options.maxEntries ?? 1000
  }

  /** Builds a verifier; makes the dummy hash (one bcrypt hash at the highest cost in the file, in a worker). */
  static async create(users: ReadonlyMap<string, string>, options: CredentialVerifierOptions = {}): Promise<CredentialVerifier> {
    let maxCost = 0
    for (const hash of users.values()) maxCost = Math.max(maxCost, bcrypt.getRounds(hash))
    if (maxCost === 0) maxCost = DEFAULT_BCRYPT_COST
    const pool = options.pool ?? sharedBcryptPool()
    const dummy = await pool.hash('', 'berth-dummy-password-for-unknown-users', maxCost)
    // Timed on a compare, not on the hash: the first job of a fresh worker also pays for its JIT.
    const timed = await pool.compare('', 'berth-dummy-password-for-unknown-users', dummy.value)
    return new CredentialVerifier(users, dummy.value, maxCost, [timed.ms], pool, options)
  }

  get userCount(): number {
    return this.users.size
  }

  /** The bcrypt cost of a user's stored hash, undefined for an unknown user. */
  costOf(user: string): number | undefined {
    const stored = this.users.get(user)
    return stored === undefined ? undefined : bcrypt.getRounds(stored)
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

  /** Compares of this client key waiting or running in the pool. */
  pendingFor(client: string): number {
    return this.pool.pendingFor(client)
  }

  /**
   * True when the password matches the user's bcrypt hash. Queued in the pool under `client` (the
   * caller's throttle key) for fairness. Never rejects: a failed worker answers false, uncached.
   */
  verify(user: string, password: string, client = ''): Promise<boolean> {
    const cached = this.cached(user, password)
    if (cached !== undefined) return Promise.resolve(cached)
    const key = this.key(user, password)
    const running = this.inflight.get(key)
    if (running) return running
    const stored = this.users.get(user)
    const hash = stored ?? this.dummyHash
    const cost = bcrypt.getRounds(hash)
    const result = this.pool
      .compare(client, password, hash)
      .then(async ({ value, ms }) => {
        const ok = value && stored !== undefined
        if (cost === this.maxCost) {
          this.slowestCompares.push(ms)
          if (this.slowestCompares.length > 5) this.slowestCompares.shift()
        } else if (!ok) {
          const typical = [...this.slowestCompares].sort((a, b) => a - b)[this.slowestCompares.length >> 1] ?? 0
          await new Promise(resolve => setTimeout(resolve, Math.max(0, typical - ms)))
        }
        this.remember(key, ok)
        return ok
      })
      .catch(() => false)
      .finally(() => this.inflight.delete(key))
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

/**
 * Basic authentication from an htpasswd file, reloaded when the file changes.
 *
 * The file is read whole on every change; its valid lines apply at once (so removing a user always
 * takes effect) and bad lines are refused and logged with their line numbers (those users cannot
 * log in). A file with a bad line is refused at start. A file that has no user lines, or does not
 * exist, means what `whenMissing` says: 'open' lets requests through without credentials (local
 * mode: the server follows the file both ways), 'closed' refuses every request until users are
 * back (HTTPS mode: a removed or emptied file never opens the registry).
 */
import { createHmac, randomBytes } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import type { Logger } from '../../log.js'
import { silentLogger } from '../../log.js'
import { CredentialVerifier, DEFAULT_BCRYPT_COST, readHtpasswd } from './htpasswd.js'
import type { CredentialVerifierOptions } from './htpasswd.js'
import { parseBasicAuthorization } from '../../http/authorization.js'
import { LoginThrottle } from './throttle.js'
import type { LoginThrottleOptions } from './throttle.js'

export { parseBasicAuthorization }

export type AuthResult =
  | { readonly kind: 'open' }
  /** `verified`: the password was checked against the file now (a cached answer is not a new login). */
  | { readonly kind: 'ok'; readonly user: string; readonly verified?: boolean }
  | { readonly kind: 'challenge'; readonly user?: string }
  | { readonly kind: 'throttled'; readonly retryAfterSeconds: number; readonly user?: string }

export interface HtpasswdAccessControllerOptions {
  logger?: Logger
  /** How often the file is stat-ed for changes, default 1000 ms. */
  pollMs?: number
  throttle?: LoginThrottleOptions
  cache?: CredentialVerifierOptions
  /** Uncached bcrypt compares one client address (throttleKey) may have waiting at once before its next one gets 429, default 16. */
  maxPendingPerAddress?: number
  /**
   * What no users means (no file, or a file without user lines), at start and whenever the file
   * changes: 'open' lets every request through without credentials (local mode); 'closed' refuses
   * every request with 401 and logs how to fix it (HTTPS mode). Default 'open'.
   */
  whenMissing?: 'open' | 'closed'
}

/**
 * The throttle key of a client address: IPv4 as is (mapped ::ffff:a.b.c.d included), IPv6 by its /64,
 * since one IPv6 client usually holds a whole /64 and could otherwise rotate addresses to dodge it.
 */
export function throttleKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (mapped?.[1]) return mapped[1]
  if (!address.includes(':')) return address
  const [head = '', tail = ''] = address.toLowerCase().split('%')[0]!.split('::')
  const left = head ? head.split(':') : []
  const right = address.includes('::') ? (tail ? tail.split(':') : []) : []
  const groups = address.includes('::') ? [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right] : left
  return (
    groups
      .slice(0, 4)
      .map(group => group.replace(/^0+(?=.)/, ''))
      .join(':') + '::/64'
  )
}

type State = { readonly kind: 'open' } | { readonly kind: 'closed' } | { readonly kind: 'users'; readonly verifier: CredentialVerifier }

export class HtpasswdAccessController {
  private state: State = { kind: 'open' }
  private fingerprint = ''
  /** A no-users fingerprint seen once, waiting for a second poll before 'open' mode acts on it. */
  private emptySeen: string | undefined
  private timer: NodeJS.Timeout | undefined
  private reloading = false
  private readonly throttle: LoginThrottle
  private readonly logger: Logger
  private readonly maxPendingPerAddress: number
  private readonly whenMissing: 'open' | 'closed'
  /** Keys the throttle's fingerprints of secrets, so they are useless outside this process. */
  private readonly secretKey = randomBytes(32)
  /** Users told this load that their hash is cheaper than the default cost. */
  private readonly cheapHashNoted = new Set<string>()

  private constructor(
    readonly path: string,
    private readonly options: HtpasswdAccessControllerOptions,
  ) {
    this.logger = options.logger ?? silentLogger
    this.throttle = new LoginThrottle(options.throttle)
    this.maxPendingPerAddress = options.maxPendingPerAddress ?? 16
    this.whenMissing = options.whenMissing ?? 'open'
  }

  /**
   * Loads the file (if it exists) and starts watching it.
   * @throws HtpasswdError when the file exists but holds a non-bcrypt or malformed line.
   */
  static async open(path: string, options: HtpasswdAccessControllerOptions = {}): Promise<HtpasswdAccessController> {
    const controller = new HtpasswdAccessController(path, options)
    await controller.load(true)
    controller.timer = setInterval(() => void controller.reload(), options.pollMs ?? 1000)
    controller.timer.unref()
    return controller
  }

  /** True when requests need credentials (users are loaded, or no users in 'closed' mode). */
  get enabled(): boolean {
    return this.state.kind !== 'open'
  }

  /** Whether `user` is in the file as loaded now (a token names a user who must still exist). */
  hasUser(user: string): boolean {
    return this.state.kind === 'users' && this.state.verifier.costOf(user) !== undefined
  }

  /** Decides one request. Never rejects. */
  async check(authorization: string | undefined, remoteAddress: string): Promise<AuthResult> {
    const state = this.state
    if (state.kind === 'open') return { kind: 'open' }
    const credentials = parseBasicAuthorization(authorization)
    // No header is the normal first request of every client (docker login pings /v2/), and a
    // malformed one costs no bcrypt: neither is counted as a failed login.
    if (!credentials) return { kind: 'challenge' }
    const { user, password } = credentials
    if (state.kind === 'closed') return { kind: 'challenge', user }
    const verifier = state.verifier
    const cached = verifier.cached(user, password)
    if (cached === true) return { kind: 'ok', user }
    // Parallel requests with the same credentials (a client pushing layers in parallel, a CI fleet
    // behind one address) share one compare and are charged once, right or wrong.
    const running = verifier.running(user, password)
    if (running !== undefined) return (await running) ? { kind: 'ok', user } : { kind: 'challenge', user }
    // A wrong password seen within the failure TTL: already counted when it failed.
    if (cached === false) return { kind: 'challenge', user }
    const address = throttleKey(remoteAddress)
    const secret = createHmac('sha256', this.secretKey).update(user).update('\0').update(password).digest('base64')
    const wait = this.throttle.admit(address, user, secret)
    if (wait > 0) return { kind: 'throttled', retryAfterSeconds: Math.ceil(wait / 1000), user }
    if (verifier.pendingFor(address) >= this.maxPendingPerAddress) {
      this.throttle.release(address, user, secret)
      return { kind: 'throttled', retryAfterSeconds: 1, user }
    }
    if (!(await verifier.verify(user, password, address))) return { kind: 'challenge', user }
    this.throttle.succeeded(address, user, secret)
    this.noteCheapHash(verifier, user)
    return { kind: 'ok', user, verified: true }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }

  /**
   * The server never rewrites the htpasswd file (it is the operator's, often a read-only mount or
   * managed by other tools, and shared by every instance on S3), so a hash cheaper than the
   * default is not upgraded on login; the log says how to do it, once per user and file version.
   */
  private noteCheapHash(verifier: CredentialVerifier, user: string): void {
    const cost = verifier.costOf(user) ?? DEFAULT_BCRYPT_COST
    if (cost >= DEFAULT_BCRYPT_COST || this.cheapHashNoted.has(user)) return
    this.cheapHashNoted.add(user)
    this.logger.info(
      `the password hash of this user has bcrypt cost ${cost}, below Berth's ${DEFAULT_BCRYPT_COST}; to strengthen it: berth htpasswd add ${user} --file ${this.path}`,
      { user },
    )
  }

  private async reload(): Promise<void> {
    if (this.reloading) return
    this.reloading = true
    try {
      await this.load(false)
    } catch (error) {
      this.logger.error('htpasswd file not reloaded; keeping the users loaded before', { path: this.path, error: (error as Error).message })
    } finally {
      this.reloading = false
    }
  }

  private async load(initial: boolean): Promise<void> {
    let fingerprint = 'missing'
    try {
      const info = await stat(this.path)
      fingerprint = `${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
    }
    if (fingerprint === this.fingerprint) return
    const previous = this.fingerprint
    // Taken before reading, so a file that cannot be read is reported once, not at every poll.
    this.fingerprint = fingerprint
    const content = fingerprint === 'missing' ? undefined : readHtpasswd(await readFile(this.path, 'utf8'), this.path)
    if (initial && content?.refused[0]) throw content.refused[0]
    if (!content?.hasUserLines) {
      // A file rewritten in place (Apache htpasswd truncates it, then writes) is briefly empty: in
      // 'open' mode a login stops being required only when two polls in a row see no users.
      if (this.whenMissing === 'open' && this.state.kind === 'users' && this.emptySeen !== fingerprint) {
        this.emptySeen = fingerprint
        this.fingerprint = previous
        return
      }
      this.emptySeen = undefined
      return this.noUsers(initial, content ? 'the htpasswd file has no users' : 'no htpasswd file')
    }
    this.emptySeen = undefined
    const verifier = await CredentialVerifier.create(content.users, this.options.cache)
    const wasOpen = this.state.kind !== 'users'
    this.state = { kind: 'users', verifier }
    this.cheapHashNoted.clear()
    const fields = { path: this.path, users: content.users.size }
    if (initial) this.logger.info('basic auth enabled', fields)
    else if (wasOpen) this.logger.info('htpasswd file has users: a login is required again', fields)
    else this.logger.info('htpasswd file reloaded', fields)
    if (content.refused.length > 0) {
      // The message keeps its old beginning, which log searches and alerts may match on.
      this.logger.error('htpasswd file not reloaded in full: these lines are refused (their users cannot log in), the other lines apply', {
        path: this.path,
        error: content.refused.map(error => error.message.slice(this.path.length + 1)).join('; '),
      })
    }
  }

  private noUsers(initial: boolean, what: string): void {
    const fields = { path: this.path }
    if (!initial && this.state.kind === this.whenMissing) return
    if (this.whenMissing === 'open') {
      this.state = { kind: 'open' }
      this.logger.warn(
        initial
          ? `${what}: the registry accepts requests without credentials`
          : `${what} any more: the registry now accepts requests without credentials (local mode)`,
        fields,
      )
      return
    }
    this.state = { kind: 'closed' }
    this.logger.error(
      `${what}${initial ? '' : ' any more'}: every request is refused (401) until it has users again; the registry never opens without a login in HTTPS mode. Fix: berth htpasswd add <user> --file ${this.path}`,
      fields,
    )
  }
}

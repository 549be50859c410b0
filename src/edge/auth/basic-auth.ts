/**
 * Basic authentication from an htpasswd file, reloaded when the file changes.
 *
 * No file at start → the registry is open (local mode keeps working as before); a file appearing later
 * switches auth on. A file that later becomes invalid or disappears is logged and the last good user
 * list is kept: a bad edit never opens the registry.
 */
import { readFile, stat } from 'node:fs/promises'
import type { Logger } from '../../log.js'
import { silentLogger } from '../../log.js'
import { CredentialVerifier, parseHtpasswd } from './htpasswd.js'
import type { CredentialVerifierOptions } from './htpasswd.js'
import { LoginThrottle } from './throttle.js'
import type { LoginThrottleOptions } from './throttle.js'

export type AuthResult =
  | { readonly kind: 'open' }
  | { readonly kind: 'ok'; readonly user: string }
  | { readonly kind: 'challenge'; readonly user?: string }
  | { readonly kind: 'throttled'; readonly retryAfterSeconds: number; readonly user?: string }

export interface HtpasswdAccessControllerOptions {
  logger?: Logger
  /** How often the file is stat-ed for changes, default 1000 ms. */
  pollMs?: number
  throttle?: LoginThrottleOptions
  cache?: CredentialVerifierOptions
  /** Uncached bcrypt compares allowed to wait at once before new ones get 429, default 32. */
  maxPendingVerifications?: number
}

/** Decodes `Authorization: Basic base64(user:password)`; undefined when absent or malformed. */
export function parseBasicAuthorization(header: string | undefined): { user: string; password: string } | undefined {
  if (!header) return undefined
  const match = /^\s*basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(header)
  if (!match?.[1]) return undefined
  const decoded = Buffer.from(match[1], 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 0) return undefined
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) }
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
  return groups.slice(0, 4).map(group => group.replace(/^0+(?=.)/, '')).join(':') + '::/64'
}

export class HtpasswdAccessController {
  private verifier: CredentialVerifier | undefined
  private fingerprint = ''
  private timer: NodeJS.Timeout | undefined
  private reloading = false
  private readonly throttle: LoginThrottle
  private readonly logger: Logger
  private readonly maxPending: number

  private constructor(
    readonly path: string,
    private readonly options: HtpasswdAccessControllerOptions,
  ) {
    this.logger = options.logger ?? silentLogger
    this.throttle = new LoginThrottle(options.throttle)
    this.maxPending = options.maxPendingVerifications ?? 32
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

  /** True when a user list is loaded, i.e. requests need credentials. */
  get enabled(): boolean {
    return this.verifier !== undefined
  }

  /** Decides one request. Never rejects. */
  async check(authorization: string | undefined, remoteAddress: string): Promise<AuthResult> {
    const address = throttleKey(remoteAddress)
    const verifier = this.verifier
    if (!verifier) return { kind: 'open' }
    const credentials = parseBasicAuthorization(authorization)
    if (!credentials) {
      // No header is the normal first request of every client (docker login pings /v2/): not a failure.
      if (authorization) this.throttle.fail(address)
      return { kind: 'challenge' }
    }
    const { user, password } = credentials
    const cached = verifier.cached(user, password)
    if (cached === true) return { kind: 'ok', user }
    // Many parallel requests with the same credentials (a client pushing layers in parallel, a CI
    // fleet behind one address) while the cache is cold share one compare: they take no throttle
    // token and do not count against maxPending, else a burst of right passwords got 429.
    const running = verifier.running(user, password)
    if (running !== undefined) return (await running) ? { kind: 'ok', user } : { kind: 'challenge', user }
    const wait = this.throttle.retryAfterMs(address)
    if (wait > 0) return { kind: 'throttled', retryAfterSeconds: Math.ceil(wait / 1000), user }
    if (cached === false) {
      this.throttle.fail(address)
      return { kind: 'challenge', user }
    }
    if (verifier.pending >= this.maxPending) return { kind: 'throttled', retryAfterSeconds: 1, user }
    // The token is taken before the compare, so parallel guesses from one address cannot all slip in.
    if (!this.throttle.take(address)) return { kind: 'throttled', retryAfterSeconds: Math.ceil(this.throttle.retryAfterMs(address) / 1000) || 1, user }
    if (await verifier.verify(user, password)) {
      this.throttle.refund(address)
      return { kind: 'ok', user }
    }
    return { kind: 'challenge', user }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }

  private async reload(): Promise<void> {
    if (this.reloading) return
    this.reloading = true
    try {
      await this.load(false)
    } finally {
      this.reloading = false
    }
  }

  private async load(initial: boolean): Promise<void> {
    let fingerprint: string
    try {
      const info = await stat(this.path)
      fingerprint = `${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
      if (this.verifier && this.fingerprint !== 'missing') {
        this.logger.warn('htpasswd file disappeared; keeping the users loaded before', { path: this.path })
      }
      if (!this.verifier && initial) this.logger.warn('no htpasswd file: the registry accepts requests without credentials', { path: this.path })
      this.fingerprint = 'missing'
      return
    }
    if (fingerprint === this.fingerprint) return
    this.fingerprint = fingerprint
    try {
      const users = parseHtpasswd(await readFile(this.path, 'utf8'), this.path)
      this.verifier = await CredentialVerifier.create(users, this.options.cache)
      this.logger.info(initial ? 'basic auth enabled' : 'htpasswd file reloaded', { path: this.path, users: users.size })
    } catch (error) {
      if (initial) throw error
      this.logger.error('htpasswd file not reloaded; keeping the users loaded before', { path: this.path, error: (error as Error).message })
    }
  }
}

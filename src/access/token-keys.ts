/**
 * The keys that sign Berth's tokens: ECDSA P-256, made by Berth, kept in the CertStore beside the
 * certificates (`token/keys/<kid>.json`, 0600 in a folder; in the bucket with S3, so every instance
 * signs with and accepts the same keys). Layout: cert-store.ts.
 *
 * Rotation: the newest key signs. When it is older than `rotateAfterMs`, whoever notices first (at
 * open, or in `maintain`, run every `maintainEveryMs`) creates the next one under the store's
 * `token-keys` lock, checking again once it holds the lock, so instances starting together make one
 * key. Older keys keep verifying: a key is deleted only `retainMs` after a newer key appeared, and
 * `retainMs` must cover the time another instance may still sign with it (until its next
 * `maintain`) plus a token's lifetime. A token therefore stays valid across a rotation until its own
 * expiry.
 *
 * A `kid` this process does not know (a key another instance just made) triggers one reload of the
 * store, shared by concurrent callers and at most once per `reloadMinIntervalMs`, so a flood of
 * made-up kids costs one listing per interval.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPair, type KeyObject } from 'node:crypto'
import { promisify } from 'node:util'
import { type CertStore, CertStoreNotFoundError, certKeys } from '../edge/tls/cert-store.js'
import { type Logger, silentLogger } from '../log.js'
import { KID_PATTERN } from './jwt.js'

const DAY_MS = 24 * 60 * 60 * 1000

export interface TokenKeysOptions {
  logger?: Logger
  /** Age at which the newest key is replaced, default 30 days. */
  rotateAfterMs?: number
  /** How long a key keeps verifying after a newer one appeared, default 1 day; must exceed `maintainEveryMs` plus the token TTL. */
  retainMs?: number
  /** How often the store is checked for rotation and retired keys, default 1 hour; 0 for never (tests call `maintain`). */
  maintainEveryMs?: number
  /** Least time between two reloads for an unknown kid, default 5 s. */
  reloadMinIntervalMs?: number
  /** The clock, in ms since the epoch. */
  now?: () => number
}

export interface TokenKey {
  readonly kid: string
  /** ms since the epoch. */
  readonly createdAt: number
  readonly privateKey: KeyObject
  readonly publicKey: KeyObject
}

interface StoredKey {
  kid: string
  createdAt: string
  privateKeyPem: string
}

const generateEcKeyPair = promisify(generateKeyPair)

export class TokenKeys {
  readonly #store: CertStore
  readonly #logger: Logger
  readonly #rotateAfterMs: number
  readonly #retainMs: number
  readonly #reloadMinIntervalMs: number
  readonly #now: () => number
  /** Known keys by kid; `#newest` is the one that signs. */
  #keys = new Map<string, TokenKey>()
  #newest: TokenKey | undefined
  /** Key files that could not be read: logged once, not read again (a key file never changes). */
  readonly #unreadable = new Set<string>()
  #lastReload = -Infinity
  #reloading: Promise<void> | undefined
  #maintaining: Promise<void> | undefined
  #timer: NodeJS.Timeout | undefined

  private constructor(store: CertStore, options: TokenKeysOptions) {
    this.#store = store
    this.#logger = options.logger ?? silentLogger
    this.#rotateAfterMs = options.rotateAfterMs ?? 30 * DAY_MS
    this.#retainMs = options.retainMs ?? DAY_MS
    this.#reloadMinIntervalMs = options.reloadMinIntervalMs ?? 5000
    this.#now = options.now ?? Date.now
  }

  /**
   * Loads the keys and makes one when there is none or the newest is due; then keeps them current
   * every `maintainEveryMs`. Rejects when the store cannot be read or written.
   */
  static async open(store: CertStore, options: TokenKeysOptions = {}): Promise<TokenKeys> {
    const keys = new TokenKeys(store, options)
    await keys.maintain()
    const every = options.maintainEveryMs ?? 60 * 60 * 1000
    if (every > 0) {
      keys.#timer = setInterval(() => {
        keys.maintain().catch((error: unknown) => {
          keys.#logger.error('token signing keys not maintained; signing with the current key', { error: (error as Error).message })
        })
      }, every)
      keys.#timer.unref()
    }
    return keys
  }

  /** The key that signs new tokens (the newest). */
  signingKey(): TokenKey {
    if (this.#newest === undefined) throw new Error('no token signing key loaded')
    return this.#newest
  }

  /** The public key for `kid`, after one (rate-limited) reload of the store when it is not known. */
  async publicKey(kid: string): Promise<KeyObject | undefined> {
    const known = this.#keys.get(kid)
    if (known !== undefined) return known.publicKey
    if (!KID_PATTERN.test(kid)) return undefined
    if (this.#reloading === undefined && this.#now() - this.#lastReload < this.#reloadMinIntervalMs) return undefined
    await this.#reload().catch((error: unknown) => {
      this.#logger.warn('token signing keys not reloaded', { error: (error as Error).message })
    })
    return this.#keys.get(kid)?.publicKey
  }

  /** The kids known now, newest first. */
  kids(): string[] {
    return [...this.#keys.values()].sort((a, b) => b.createdAt - a.createdAt).map(key => key.kid)
  }

  /**
   * Reloads the store; creates a key when none is usable or the newest is older than `rotateAfterMs`
   * (or always, with `force`); deletes keys retired more than `retainMs` ago. One run at a time.
   */
  async maintain(options: { force?: boolean } = {}): Promise<void> {
    while (this.#maintaining !== undefined) await this.#maintaining.catch(() => {})
    const run = this.#maintain(options.force ?? false)
    this.#maintaining = run
    try {
      await run
    } finally {
      this.#maintaining = undefined
    }
  }

  /** Makes a new signing key now (`berth token rotate`); tokens signed before stay valid. */
  rotate(): Promise<void> {
    return this.maintain({ force: true })
  }

  close(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  async #maintain(force: boolean): Promise<void> {
    await this.#reload()
    if (!force && !this.#isDue() && this.#retired().length === 0) return
    const unlock = await this.#store.lock(certKeys.tokenKeysLock())
    try {
      // Another instance may have rotated while this one waited for the lock: a listing begun
      // before the lock was taken does not show that.
      await this.#reloading?.catch(() => {})
      await this.#reload()
      if (force || this.#isDue()) await this.#create()
      await this.#retire()
    } finally {
      await unlock()
    }
  }

  #isDue(): boolean {
    return this.#newest === undefined || this.#now() - this.#newest.createdAt >= this.#rotateAfterMs
  }

  async #create(): Promise<void> {
    const { privateKey, publicKey } = await generateEcKeyPair('ec', { namedCurve: 'P-256' })
    const key: TokenKey = { kid: thumbprint(publicKey), createdAt: this.#now(), privateKey, publicKey }
    const stored: StoredKey = {
      kid: key.kid,
      createdAt: new Date(key.createdAt).toISOString(),
      privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    }
    await this.#store.store(certKeys.tokenKey(key.kid), JSON.stringify(stored, null, 2) + '\n')
    this.#add(key)
    this.#logger.info('token signing key created', { kid: key.kid })
  }

  /** The keys whose successor appeared more than `retainMs` ago; never the newest. */
  #retired(): TokenKey[] {
    const byAge = [...this.#keys.values()].sort((a, b) => a.createdAt - b.createdAt)
    return byAge.filter((key, i) => i < byAge.length - 1 && this.#now() - byAge[i + 1]!.createdAt > this.#retainMs)
  }

  async #retire(): Promise<void> {
    for (const key of this.#retired()) {
      await this.#store.delete(certKeys.tokenKey(key.kid))
      this.#keys.delete(key.kid)
      this.#logger.info('token signing key retired', { kid: key.kid })
    }
  }

  /** One reload at a time; concurrent callers share it. */
  #reload(): Promise<void> {
    this.#reloading ??= this.#load().finally(() => {
      this.#lastReload = this.#now()
      this.#reloading = undefined
    })
    return this.#reloading
  }

  async #load(): Promise<void> {
    const files = await this.#store.list(certKeys.tokenKeys())
    const listed = new Set<string>()
    for (const file of files) {
      const kid = /^token\/keys\/([A-Za-z0-9_-]{1,64})\.json$/.exec(file)?.[1]
      if (kid === undefined) continue
      listed.add(kid)
      if (this.#keys.has(kid) || this.#unreadable.has(kid)) continue
      const key = await this.#read(kid)
      if (key !== undefined) this.#add(key)
    }
    // A listing that shows none of the keys in use is not trusted to mean they are gone.
    if (listed.size === 0) return
    for (const kid of this.#keys.keys()) if (!listed.has(kid)) this.#keys.delete(kid)
    this.#newest = undefined
    for (const key of this.#keys.values()) if (this.#newest === undefined || key.createdAt > this.#newest.createdAt) this.#newest = key
  }

  async #read(kid: string): Promise<TokenKey | undefined> {
    try {
      const stored = JSON.parse((await this.#store.load(certKeys.tokenKey(kid))).toString('utf8')) as Partial<StoredKey>
      const createdAt = Date.parse(String(stored.createdAt))
      if (typeof stored.privateKeyPem !== 'string' || !Number.isFinite(createdAt)) throw new Error('missing privateKeyPem or createdAt')
      const privateKey = createPrivateKey(stored.privateKeyPem)
      if (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new Error('not an ECDSA P-256 key')
      const publicKey = createPublicKey(privateKey)
      if (thumbprint(publicKey) !== kid || stored.kid !== kid) throw new Error('the key does not match its kid')
      return { kid, createdAt, privateKey, publicKey }
    } catch (error) {
      // Deleted by a rotation between the listing and the read: not worth a line.
      if (error instanceof CertStoreNotFoundError) return undefined
      this.#unreadable.add(kid)
      this.#logger.error('token signing key unreadable; ignored', { kid, error: (error as Error).message })
      return undefined
    }
  }

  #add(key: TokenKey): void {
    this.#keys.set(key.kid, key)
    if (this.#newest === undefined || key.createdAt >= this.#newest.createdAt) this.#newest = key
  }
}

/** RFC 7638 JWK thumbprint of an EC public key: SHA-256 of `{"crv","kty","x","y"}` in that order, base64url. */
export function thumbprint(publicKey: KeyObject): string {
  const jwk = publicKey.export({ format: 'jwk' })
  const canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y })
  return createHash('sha256').update(canonical).digest('base64url')
}

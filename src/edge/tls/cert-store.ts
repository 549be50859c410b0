/**
 * Where TLS material and the token signing keys live: a key/value port (`CertStore`) over a StorageDriver, with the lock
 * that lets several Berth processes share it and place one order, not two. Two places:
 * `FileCertStore`, a directory (`--certs`, default `./certs`), and, with `--storage s3`, the
 * registry's own bucket under `/berth/certs/` (`new DriverCertStore(driver, CERT_STORE_ROOT)`), so
 * every instance shares one account, one certificate and one order, and any of them answers the
 * CA's HTTP-01 request.
 *
 * Layout (the key builders below are the only code that knows it; modelled on certmagic's KeyBuilder):
 *
 *   certs/
 *     acme/<issuer>/account.key                      ECDSA P-256 account key, 0600
 *     acme/<issuer>/account.json                     { url, contact, directoryUrl, createdAt }
 *     acme/<issuer>/challenges/<token>.json          pending HTTP-01 answer { name, keyAuthorization }, while an order runs
 *     certificates/<issuer>/<name>/<name>.crt        full chain PEM, leaf first
 *     certificates/<issuer>/<name>/<name>.key        certificate key, 0600
 *     certificates/<issuer>/<name>/<name>.json       CertificateMeta: names, dates, ARI, retry state
 *     token/keys/<kid>.json                          token signing key { kid, createdAt, privateKeyPem } (ECDSA P-256, PKCS#8), 0600
 *     locks/<lock>.lock                              the driver's lock record { nonce, host, pid, created, updated }
 *
 * `<kid>` is the key's RFC 7638 JWK thumbprint (base64url), the `kid` of the tokens it signs; a key
 * file is written once and never changed, only deleted when the key retires (access/token-keys.ts).
 *
 * `<issuer>` is the CA directory's host (and port) plus its path, e.g.
 * `acme-v02.api.letsencrypt.org-directory` vs `acme-staging-v02.api.letsencrypt.org-directory`,
 * so a staging certificate never overwrites a production one. `<name>` is the first configured domain.
 *
 * In a directory, folders are 0700 and every file is written 0600 through a temporary file +
 * fsync + rename, so a reader (or a crash) sees the old content or the new one, never half of one.
 */
import { randomUUID } from 'node:crypto'
import { mkdir, open, unlink } from 'node:fs/promises'
import { resolve } from 'node:path'
import { FilesystemDriver } from '../../storage/driver/filesystem.js'
import { ignoreMissing, PathNotFoundError, type StorageDriver } from '../../storage/driver/storage-driver.js'

/** Key/value store for TLS material. Keys use '/', no leading slash, no '.'/'..' segments. */
export interface CertStore {
  /** Rejects with CertStoreNotFoundError when the key does not exist. */
  load(key: string): Promise<Buffer>
  /** Atomic replace; creates parent folders. */
  store(key: string, value: Uint8Array | string): Promise<void>
  /** Deletes a key or a whole prefix; missing keys are not an error. */
  delete(key: string): Promise<void>
  /** Whether the key exists. */
  exists(key: string): Promise<boolean>
  /** Keys of files directly under `prefix` (not recursive). */
  list(prefix: string): Promise<string[]>
  /**
   * Takes the named lock, waiting while another holder (this or another process) has it.
   * Resolves with the unlock function. Rejects with the signal's reason when aborted while waiting.
   */
  lock(name: string, signal?: AbortSignal): Promise<() => Promise<void>>
}

export class CertStoreNotFoundError extends Error {
  override readonly name = 'CertStoreNotFoundError'
  constructor(
    readonly key: string,
    options?: ErrorOptions,
  ) {
    super(`no such entry in the certificate store: ${key}`, options)
  }
}

export interface CertStoreLockOptions {
  /** How often a held lock is rewritten to show it is alive (default 5 s). */
  lockHeartbeatMs?: number
  /** A lock not updated for this long is taken over (default 30 s). */
  lockStaleMs?: number
  /** How often a waiter polls for the lock (default 1 s). */
  lockPollMs?: number
}

const SEGMENT = /^[A-Za-z0-9@._-]+$/

/** Where the certificate store lives in a shared bucket: beside `docker/registry/v2`, which registry:2 never reads. */
export const CERT_STORE_ROOT = '/berth/certs'

/** Makes a string safe as one path segment (certmagic's `[^\w@.-]` → `_` rule). */
export function safeSegment(value: string): string {
  const cleaned = value
    .toLowerCase()
    .replace(/\*/g, 'wildcard_')
    .replace(/[^\w@.-]/g, '_')
  // '.' and '..' are legal characters but not legal segments.
  return /^\.+$/.test(cleaned) || cleaned === '' ? `_${cleaned}` : cleaned
}

/** `<host>[-<port>]<path with / → ->`, e.g. `acme-v02.api.letsencrypt.org-directory`. */
export function issuerKey(directoryUrl: string): string {
  const url = new URL(directoryUrl)
  const host = url.port ? `${url.hostname}-${url.port}` : url.hostname
  const path = url.pathname.replace(/\/+$/, '').replace(/\//g, '-')
  return safeSegment(`${host}${path}`)
}

export const certKeys = {
  accountKey: (issuer: string) => `acme/${issuer}/account.key`,
  accountMeta: (issuer: string) => `acme/${issuer}/account.json`,
  challenges: (issuer: string) => `acme/${issuer}/challenges`,
  /** Tokens are base64url (RFC 8555 §8.1), case matters: used as is, anything else refused. */
  challenge: (issuer: string, token: string) => {
    if (!/^[A-Za-z0-9_-]+$/.test(token)) throw new TypeError('an ACME token must be base64url')
    return `acme/${issuer}/challenges/${token}.json`
  },
  siteFolder: (issuer: string, name: string) => `certificates/${issuer}/${safeSegment(name)}`,
  siteCert: (issuer: string, name: string) => `certificates/${issuer}/${safeSegment(name)}/${safeSegment(name)}.crt`,
  siteKey: (issuer: string, name: string) => `certificates/${issuer}/${safeSegment(name)}/${safeSegment(name)}.key`,
  siteMeta: (issuer: string, name: string) => `certificates/${issuer}/${safeSegment(name)}/${safeSegment(name)}.json`,
  tokenKeys: () => 'token/keys',
  /** A kid is base64url (RFC 7638 thumbprint): used as is, anything else refused. */
  tokenKey: (kid: string) => {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(kid)) throw new TypeError('a token key id must be base64url')
    return `token/keys/${kid}.json`
  },
  /** Lock taken around "check for a current signing key, create one if still needed, retire old ones". */
  tokenKeysLock: () => 'token-keys',
  /** Lock taken around "check storage, order if still needed, store". */
  issueLock: (issuer: string, name: string) => `issue_cert_${issuer}_${safeSegment(name)}`,
}

/** CertStore over the keys under `root` in a driver's tree. */
export class DriverCertStore implements CertStore {
  readonly #driver: StorageDriver
  readonly #root: string
  readonly #options: CertStoreLockOptions

  constructor(driver: StorageDriver, root: string, options: CertStoreLockOptions = {}) {
    this.#driver = driver
    this.#root = root === '/' ? '' : root
    this.#options = options
  }

  #path(key: string): string {
    const segments = key.split('/')
    if (key !== '' && segments.some(s => !SEGMENT.test(s) || /^\.+$/.test(s))) {
      throw new TypeError(`invalid certificate store key: ${JSON.stringify(key)}`)
    }
    return key === '' ? this.#root || '/' : `${this.#root}/${key}`
  }

  async load(key: string): Promise<Buffer> {
    try {
      return await this.#driver.getContent(this.#path(key))
    } catch (error) {
      if (error instanceof PathNotFoundError) throw new CertStoreNotFoundError(key, { cause: error })
      throw error
    }
  }

  async store(key: string, value: Uint8Array | string): Promise<void> {
    await this.#driver.putContent(this.#path(key), typeof value === 'string' ? Buffer.from(value) : value)
  }

  async delete(key: string): Promise<void> {
    await this.#driver.delete(this.#path(key)).catch(ignoreMissing)
  }

  async exists(key: string): Promise<boolean> {
    try {
      return !(await this.#driver.stat(this.#path(key))).isDir
    } catch (error) {
      if (error instanceof PathNotFoundError) return false
      throw error
    }
  }

  async list(prefix: string): Promise<string[]> {
    let children: string[]
    try {
      children = await this.#driver.list(this.#path(prefix))
    } catch (error) {
      if (error instanceof PathNotFoundError) return []
      throw error
    }
    const files = await Promise.all(
      children.map(async child => {
        const info = await this.#driver.stat(child).catch(() => undefined)
        return info !== undefined && !info.isDir ? child.slice(this.#root.length + 1) : undefined
      }),
    )
    return files.filter((key): key is string => key !== undefined).sort()
  }

  async lock(name: string, signal?: AbortSignal): Promise<() => Promise<void>> {
    const held = await this.#driver.lock(this.#path(`locks/${safeSegment(name)}.lock`), {
      waitMs: Infinity,
      staleMs: this.#options.lockStaleMs ?? 30_000,
      ...(signal !== undefined ? { signal } : {}),
      ...(this.#options.lockHeartbeatMs !== undefined ? { heartbeatMs: this.#options.lockHeartbeatMs } : {}),
      ...(this.#options.lockPollMs !== undefined ? { pollMs: this.#options.lockPollMs } : {}),
    })
    return () => held.release()
  }
}

/** CertStore on a local directory (also fine on a shared network filesystem that honours link(2)). */
export class FileCertStore extends DriverCertStore {
  readonly root: string

  constructor(root: string, options: CertStoreLockOptions = {}) {
    super(new FilesystemDriver(resolve(root), { private: true }), '/', options)
    this.root = resolve(root)
  }

  /** Creates the root (0700) and fails early with a clear message when it is not writable. */
  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 })
    const probe = `${this.root}/.probe-${randomUUID()}`
    try {
      const handle = await open(probe, 'wx', 0o600)
      await handle.close()
      await unlink(probe)
    } catch (error) {
      throw new Error(`the certificate folder ${this.root} is not writable (${(error as NodeJS.ErrnoException).code ?? error})`, { cause: error })
    }
  }
}

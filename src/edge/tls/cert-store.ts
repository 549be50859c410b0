/**
 * Where TLS material lives: a key/value store over a directory (`--certs`, default `./certs`),
 * plus the lock that lets several Berth processes share that directory and place one order, not two.
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
 *     locks/<lock>.lock                              O_EXCL lock file { pid, host, created, updated }
 *
 * `<issuer>` is the CA directory's host (and port) plus its path, e.g.
 * `acme-v02.api.letsencrypt.org-directory` vs `acme-staging-v02.api.letsencrypt.org-directory`,
 * so a staging certificate never overwrites a production one. `<name>` is the first configured domain.
 *
 * Folders are created 0700 and every file is written 0600 through a temporary file + fsync + rename,
 * so a reader (or a crash) sees the old content or the new one, never half of one.
 */
import { randomUUID } from 'node:crypto'
import { open, mkdir, readFile, readdir, rename, rm, stat, unlink, link, chmod } from 'node:fs/promises'
import { hostname } from 'node:os'
import { dirname, join, resolve, sep } from 'node:path'

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
  constructor(readonly key: string, options?: ErrorOptions) {
    super(`no such entry in the certificate store: ${key}`, options)
  }
}

export interface FileCertStoreOptions {
  /** How often a held lock's file is rewritten to show it is alive (default 5 s). */
  lockHeartbeatMs?: number
  /** A lock whose file was not updated for this long is taken over (default 30 s). */
  lockStaleMs?: number
  /** How often a waiter polls for the lock (default 1 s). */
  lockPollMs?: number
}

interface LockFile {
  pid: number
  host: string
  nonce: string
  created: number
  updated: number
}

const SEGMENT = /^[A-Za-z0-9@._-]+$/

/** Makes a string safe as one path segment (certmagic's `[^\w@.-]` → `_` rule). */
export function safeSegment(value: string): string {
  const cleaned = value.toLowerCase().replace(/\*/g, 'wildcard_').replace(/[^\w@.-]/g, '_')
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
  /** Lock taken around "check storage, order if still needed, store". */
  issueLock: (issuer: string, name: string) => `issue_cert_${issuer}_${safeSegment(name)}`,
}

/** CertStore on a local directory (also fine on a shared network filesystem that honours O_EXCL). */
export class FileCertStore implements CertStore {
  readonly root: string
  private readonly heartbeatMs: number
  private readonly staleMs: number
  private readonly pollMs: number

  constructor(root: string, options: FileCertStoreOptions = {}) {
    this.root = resolve(root)
    this.heartbeatMs = options.lockHeartbeatMs ?? 5_000
    this.staleMs = options.lockStaleMs ?? 30_000
    this.pollMs = options.lockPollMs ?? 1_000
  }

  /** Creates the root (0700) and fails early with a clear message when it is not writable. */
  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 })
    const probe = join(this.root, `.probe-${randomUUID()}`)
    try {
      const handle = await open(probe, 'wx', 0o600)
      await handle.close()
      await unlink(probe)
    } catch (error) {
      throw new Error(`the certificate folder ${this.root} is not writable (${(error as NodeJS.ErrnoException).code ?? error})`, { cause: error })
    }
  }

  private path(key: string): string {
    const segments = key.split('/')
    if (key.startsWith('/') || segments.some((s) => !SEGMENT.test(s) || /^\.+$/.test(s))) {
      throw new TypeError(`invalid certificate store key: ${JSON.stringify(key)}`)
    }
    const full = join(this.root, ...segments)
    if (!full.startsWith(this.root + sep)) throw new TypeError(`invalid certificate store key: ${JSON.stringify(key)}`)
    return full
  }

  async load(key: string): Promise<Buffer> {
    try {
      return await readFile(this.path(key))
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new CertStoreNotFoundError(key, { cause: error })
      throw error
    }
  }

  async store(key: string, value: Uint8Array | string): Promise<void> {
    const target = this.path(key)
    await mkdir(dirname(target), { recursive: true, mode: 0o700 })
    await writeFileAtomic(target, value)
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { recursive: true, force: true })
  }

  async exists(key: string): Promise<boolean> {
    try {
      await stat(this.path(key))
      return true
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false
      throw error
    }
  }

  async list(prefix: string): Promise<string[]> {
    try {
      const entries = await readdir(this.path(prefix), { withFileTypes: true })
      return entries.filter((e) => e.isFile() && !e.name.endsWith('.tmp')).map((e) => `${prefix}/${e.name}`).sort()
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw error
    }
  }

  async lock(name: string, signal?: AbortSignal): Promise<() => Promise<void>> {
    const lockPath = this.path(`locks/${safeSegment(name)}.lock`)
    await mkdir(dirname(lockPath), { recursive: true, mode: 0o700 })
    const nonce = randomUUID()
    for (;;) {
      signal?.throwIfAborted()
      if (await this.tryCreateLock(lockPath, nonce)) break
      await this.removeIfStale(lockPath)
      await sleep(this.pollMs, signal)
    }
    return this.holdLock(lockPath, nonce)
  }

  private async tryCreateLock(lockPath: string, nonce: string): Promise<boolean> {
    let handle
    try {
      handle = await open(lockPath, 'wx', 0o600)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false
      throw error
    }
    try {
      const now = Date.now()
      const content: LockFile = { pid: process.pid, host: hostname(), nonce, created: now, updated: now }
      await handle.writeFile(JSON.stringify(content))
      await handle.sync()
    } finally {
      await handle.close()
    }
    return true
  }

  /**
   * Takes over a lock whose holder stopped updating it (crashed process). Like certmagic, this is
   * not perfectly atomic; to narrow the race, the stale file is first renamed away, and if what we
   * renamed turns out to be a fresh lock another waiter just created, it is linked back.
   */
  private async removeIfStale(lockPath: string): Promise<void> {
    const seen = await readLock(lockPath)
    if (seen === 'missing') return
    // An unreadable/half-written lock gets the benefit of the doubt until its mtime is stale.
    const updated = seen === 'corrupt' ? await mtimeMs(lockPath) : seen.updated
    if (updated === undefined || Date.now() - updated < this.staleMs) return
    const aside = `${lockPath}.${randomUUID()}.stale`
    try {
      await rename(lockPath, aside)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return
      throw error
    }
    const moved = await readLock(aside)
    if (seen !== 'corrupt' && moved !== 'missing' && moved !== 'corrupt' && moved.nonce !== seen.nonce) {
      await link(aside, lockPath).catch(() => {})
    }
    await unlink(aside).catch(() => {})
  }

  private holdLock(lockPath: string, nonce: string): () => Promise<void> {
    let released = false
    const heartbeat = setInterval(() => {
      void (async () => {
        const current = await readLock(lockPath)
        if (released || current === 'missing' || current === 'corrupt' || current.nonce !== nonce) return
        await writeFileAtomic(lockPath, JSON.stringify({ ...current, updated: Date.now() }))
      })().catch(() => {})
    }, this.heartbeatMs)
    heartbeat.unref()
    return async () => {
      if (released) return
      released = true
      clearInterval(heartbeat)
      const current = await readLock(lockPath)
      // Only remove our own lock: after a takeover (we were considered stale) the file is someone else's.
      if (current !== 'missing' && current !== 'corrupt' && current.nonce === nonce) await unlink(lockPath).catch(() => {})
    }
  }
}

async function readLock(path: string): Promise<LockFile | 'missing' | 'corrupt'> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'missing'
    throw error
  }
  try {
    const parsed = JSON.parse(text) as Partial<LockFile>
    if (typeof parsed.updated !== 'number' || typeof parsed.nonce !== 'string') return 'corrupt'
    return parsed as LockFile
  } catch {
    return 'corrupt'
  }
}

async function mtimeMs(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mtimeMs
  } catch {
    return undefined
  }
}

/** tmp file (0600, in the same folder) → fsync → rename → fsync the folder. */
export async function writeFileAtomic(target: string, value: Uint8Array | string): Promise<void> {
  const temporary = `${target}.${randomUUID()}.tmp`
  const handle = await open(temporary, 'wx', 0o600)
  try {
    await handle.writeFile(value)
    await handle.sync()
  } catch (error) {
    await handle.close()
    await unlink(temporary).catch(() => {})
    throw error
  }
  await handle.close()
  try {
    await rename(temporary, target)
  } catch (error) {
    await unlink(temporary).catch(() => {})
    throw error
  }
  // A umask can't widen 0600, but an older file might have been created wider by hand.
  await chmod(target, 0o600).catch(() => {})
  const folder = await open(dirname(target), 'r').catch(() => undefined)
  if (folder) {
    await folder.sync().catch(() => {})
    await folder.close()
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    if (signal?.aborted) return reject(signal.reason)
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolvePromise()
    }, ms)
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal?.reason)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

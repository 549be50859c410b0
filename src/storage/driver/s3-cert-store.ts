/**
 * The ACME certificate store (the `CertStore` shape of edge/tls/cert-store.ts) kept in the
 * registry's own bucket, so every instance behind a balancer shares one ACME account, one
 * certificate and one order, and any of them can answer the CA's HTTP-01 request (the provider
 * reads pending challenges from the store).
 *
 * Keys live under `/berth/certs/<key>` in the driver's tree: beside `docker/registry/v2`, which
 * registry:2 and Berth's catalog never look outside of. The lock is an object created with
 * `putContentIfAbsent` (S3 `If-None-Match: *`): exactly one instance creates it. Its holder
 * rewrites `updated` every few seconds; a lock not updated for `staleMs` (a crashed holder) is
 * deleted by a waiter after re-reading it, as the filesystem store does. S3 has no conditional
 * delete everywhere (not on Ceph 16), so two waiters taking over the same stale lock at the same
 * moment could both win: the cost is one extra order, never a wrong certificate.
 *
 * Structural on purpose: storage must not import the edge, so the caller (server.ts) supplies the
 * edge's not-found error.
 */
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { parseLockRecord, type LockRecord } from '../lock-record.js'
import { ignoreMissing, PathNotFoundError, StorageDriverError, type StorageDriver } from './storage-driver.js'

export const CERT_STORE_ROOT = '/berth/certs'

export interface DriverCertStoreOptions {
  /** The error `load` rejects with for a missing key (the edge's CertStoreNotFoundError). */
  notFound: (key: string, cause: unknown) => Error
  lockHeartbeatMs?: number
  lockStaleMs?: number
  lockPollMs?: number
}

export class DriverCertStore {
  readonly #driver: StorageDriver & { putContentIfAbsent(path: string, content: Uint8Array): Promise<boolean> }
  readonly #options: DriverCertStoreOptions
  readonly #heartbeatMs: number
  readonly #staleMs: number
  readonly #pollMs: number

  constructor(driver: StorageDriver, options: DriverCertStoreOptions) {
    if (driver.putContentIfAbsent === undefined) {
      throw new StorageDriverError('UNSUPPORTED', `the ${driver.name} driver cannot create objects conditionally, which the shared certificate lock needs`)
    }
    this.#driver = driver as StorageDriver & { putContentIfAbsent(path: string, content: Uint8Array): Promise<boolean> }
    this.#options = options
    this.#heartbeatMs = options.lockHeartbeatMs ?? 5_000
    this.#staleMs = options.lockStaleMs ?? 30_000
    this.#pollMs = options.lockPollMs ?? 1_000
  }

  #path(key: string): string {
    return key === '' ? CERT_STORE_ROOT : `${CERT_STORE_ROOT}/${key}`
  }

  async load(key: string): Promise<Buffer> {
    try {
      return await this.#driver.getContent(this.#path(key))
    } catch (error) {
      if (error instanceof PathNotFoundError) throw this.#options.notFound(key, error)
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
        return info !== undefined && !info.isDir ? child.slice(CERT_STORE_ROOT.length + 1) : undefined
      }),
    )
    return files.filter((key): key is string => key !== undefined).sort()
  }

  async lock(name: string, signal?: AbortSignal): Promise<() => Promise<void>> {
    const path = this.#path(`locks/${name}.lock`)
    const nonce = randomUUID()
    for (;;) {
      signal?.throwIfAborted()
      const now = Date.now()
      const record: LockRecord = { nonce, host: hostname(), pid: process.pid, created: now, updated: now }
      if (await this.#driver.putContentIfAbsent(path, Buffer.from(JSON.stringify(record)))) break
      await this.#removeIfStale(path)
      await sleep(this.#pollMs, signal)
    }
    return this.#hold(path, nonce)
  }

  async #read(path: string): Promise<{ record: LockRecord | undefined; modTime: Date } | 'missing'> {
    try {
      const [content, info] = await Promise.all([this.#driver.getContent(path), this.#driver.stat(path)])
      // A corrupt record (undefined) is judged by the object's time.
      return { record: parseLockRecord(content.toString('utf8')), modTime: info.modTime }
    } catch (error) {
      if (error instanceof PathNotFoundError) return 'missing'
      throw error
    }
  }

  async #removeIfStale(path: string): Promise<void> {
    const seen = await this.#read(path)
    if (seen === 'missing') return
    const updated = seen.record?.updated ?? seen.modTime.getTime()
    if (Date.now() - updated < this.#staleMs) return
    // Re-read just before deleting: only the same stale holder is removed, not a fresh one.
    const again = await this.#read(path)
    if (again === 'missing' || again.record?.nonce !== seen.record?.nonce) return
    await this.#driver.delete(path).catch(ignoreMissing)
  }

  #hold(path: string, nonce: string): () => Promise<void> {
    let released = false
    const heartbeat = setInterval(() => {
      void (async () => {
        const current = await this.#read(path)
        if (released || current === 'missing' || current.record?.nonce !== nonce) return
        await this.#driver.putContent(path, Buffer.from(JSON.stringify({ ...current.record, updated: Date.now() })))
      })().catch(() => {})
    }, this.#heartbeatMs)
    heartbeat.unref()
    return async () => {
      if (released) return
      released = true
      clearInterval(heartbeat)
      const current = await this.#read(path).catch(() => 'missing' as const)
      // Only our own lock: after a takeover (we were judged stale) it belongs to someone else.
      if (current !== 'missing' && current.record?.nonce === nonce) await this.#driver.delete(path).catch(ignoreMissing)
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason)
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal?.reason)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * The one lock of every driver (`StorageDriver.lock`), built on `putContentIfAbsent`, so exactly
 * one process creates the lock object. It holds a record: who holds it (`host`, `pid`, since
 * `created`), whose it is (`nonce`, compared before a holder rewrites or deletes it) and when its
 * holder last proved alive (`updated`, epoch ms, rewritten every `heartbeatMs`).
 *
 * A lock not updated for `staleMs` (a crashed holder) is deleted by a waiter after re-reading it
 * (only if it is still the same record), then created again conditionally. A corrupt record is
 * judged by the object's time. On stores not shared across hosts, a record of this host whose
 * process is gone is stale at once. Not every store has a conditional delete (Ceph 16 has none),
 * so two waiters taking over one stale lock at the same instant could both win: a holder re-reads
 * the lock (`stillHeld`) at every heartbeat, and one that finds it is no longer its own sees
 * `lost` aborted; the overlap is bounded by one heartbeat. Staleness compares the holder's
 * `updated` with this machine's clock, so clocks must agree to well within `staleMs`.
 */
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { ignoreMissing, LockBusyError, PathNotFoundError, type LockOptions, type StorageDriver, type StoreLock } from './storage-driver.js'

interface LockRecord {
  nonce: string
  host: string
  pid: number
  created: number
  updated: number
}

type Seen = { record: LockRecord | undefined; raw: string; modTime: Date }

async function read(driver: StorageDriver, path: string): Promise<Seen | undefined> {
  try {
    const [content, info] = await Promise.all([driver.getContent(path), driver.stat(path)])
    const raw = content.toString('utf8')
    return { record: parseRecord(raw), raw, modTime: info.modTime }
  } catch (error) {
    if (error instanceof PathNotFoundError) return undefined
    throw error
  }
}

function parseRecord(raw: string): LockRecord | undefined {
  try {
    const parsed = JSON.parse(raw) as Partial<LockRecord>
    if (typeof parsed.nonce === 'string' && typeof parsed.updated === 'number') return parsed as LockRecord
  } catch {
    // not JSON: corrupt
  }
  return undefined
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function isStale(driver: StorageDriver, seen: Seen, staleMs: number): boolean {
  const { record } = seen
  if (record !== undefined && !driver.capabilities.sharedAcrossHosts && record.host === hostname() && record.pid !== process.pid && !isAlive(record.pid))
    return true
  return Date.now() - (record?.updated ?? seen.modTime.getTime()) >= staleMs
}

function describe(record: LockRecord | undefined): string | undefined {
  return record === undefined ? undefined : `${record.host}, pid ${record.pid}, since ${new Date(record.created).toISOString()}`
}

export async function takeStoreLock(driver: StorageDriver, path: string, options: LockOptions = {}): Promise<StoreLock> {
  const staleMs = options.staleMs ?? 60_000
  const deadline = Date.now() + (options.waitMs ?? 0)
  const nonce = randomUUID()
  const created = Date.now()
  const record = (): Buffer => Buffer.from(JSON.stringify({ nonce, host: hostname(), pid: process.pid, created, updated: Date.now() } satisfies LockRecord))
  for (;;) {
    options.signal?.throwIfAborted()
    if (await driver.putContentIfAbsent(path, record())) break
    const seen = await read(driver, path)
    if (seen === undefined) continue // released meanwhile
    if (isStale(driver, seen, staleMs)) {
      // Re-read just before deleting: only the same stale holder is removed, not a fresh one.
      const again = await read(driver, path)
      if (again !== undefined && again.raw === seen.raw) await driver.delete(path).catch(ignoreMissing)
      continue
    }
    if (Date.now() >= deadline) throw new LockBusyError(path, describe(seen.record))
    await sleep(Math.min(options.pollMs ?? 1_000, Math.max(1, deadline - Date.now())), undefined, options.signal ? { signal: options.signal } : {}).catch(
      () => {
        throw options.signal?.reason
      },
    )
  }
  return hold(driver, path, nonce, record, options.heartbeatMs ?? 5_000)
}

async function hold(driver: StorageDriver, path: string, nonce: string, record: () => Buffer, heartbeatMs: number): Promise<StoreLock> {
  const lost = new AbortController()
  const stillHeld = async (): Promise<boolean> => {
    const ours = (await read(driver, path))?.record?.nonce === nonce
    if (!ours && !lost.signal.aborted) lost.abort(new LockBusyError(path, 'another process that took it over'))
    return ours
  }
  const taken = await read(driver, path)
  // A takeover racing ours shows up here at the latest.
  if (taken?.record?.nonce !== nonce) throw new LockBusyError(path, describe(taken?.record))
  let released = false
  let beating: Promise<void> | undefined
  const heartbeat = setInterval(() => {
    if (beating !== undefined) return
    beating = (async () => {
      if (released || !(await stillHeld()) || released) return
      await driver.putContent(path, record())
    })()
      .catch(() => {})
      .finally(() => {
        beating = undefined
      })
  }, heartbeatMs)
  heartbeat.unref()
  return {
    storeTime: taken.modTime,
    lost: lost.signal,
    stillHeld,
    async release() {
      if (released) return
      released = true
      clearInterval(heartbeat)
      await beating
      // Only our own lock: after a takeover it belongs to someone else.
      if ((await read(driver, path).catch(() => undefined))?.record?.nonce === nonce) await driver.delete(path).catch(ignoreMissing)
    },
  }
}

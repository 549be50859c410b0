/**
 * The record a lock object in the store holds: the garbage collection lock (gc-lock.ts,
 * `/berth/gc/lock`) and the shared certificate store's locks (driver/s3-cert-store.ts). One
 * format, so whoever reads a lock in a bucket (a person too) finds the same fields: who holds it
 * (`host`, `pid`, since `created`), whose it is (`nonce`, compared before a holder rewrites or
 * deletes it) and when its holder last proved alive (`updated`, epoch ms; staleness is judged on it).
 */
export interface LockRecord {
  nonce: string
  host: string
  pid: number
  created: number
  updated: number
}

/** The record in a lock object's bytes; undefined when they are not one (corrupt: judge the lock by the object's time). */
export function parseLockRecord(raw: string): LockRecord | undefined {
  try {
    const parsed = JSON.parse(raw) as Partial<LockRecord>
    if (typeof parsed.nonce === 'string' && typeof parsed.updated === 'number') return parsed as LockRecord
  } catch {
    // not JSON: corrupt
  }
  return undefined
}

/**
 * bcrypt off the event loop: a few worker threads running bcryptjs, fed fairly per client.
 *
 * The workers are made from an inline code string (`eval: true`) holding bcryptjs's own source
 * (bcryptjs-source.generated.ts), so they need no file on disk: the same code runs under tsx, in the
 * esbuild bundle and inside the single binary, where a worker cannot load a script by path.
 *
 * Fairness: jobs wait in one queue per key (the client's throttle key); a free worker takes the
 * next job round-robin over the keys, so however many jobs one address queues, another address's
 * job waits for at most one job of each other waiting key. Workers are created on demand, do not
 * keep the process alive (unref) and are ended after an idle period.
 */
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { BCRYPTJS_UMD_SOURCE } from './bcryptjs-source.generated.js'

const WORKER_SOURCE = `
'use strict'
const { parentPort } = require('node:worker_threads')
const bcryptModule = { exports: {} }
;(function (module, exports, require) {
${BCRYPTJS_UMD_SOURCE}
})(bcryptModule, bcryptModule.exports, require)
const bcrypt = bcryptModule.exports
parentPort.on('message', job => {
  const started = process.hrtime.bigint()
  try {
    const value = job.op === 'compare' ? bcrypt.compareSync(job.password, job.hash) : bcrypt.hashSync(job.password, job.cost)
    parentPort.postMessage({ id: job.id, value, ms: Number(process.hrtime.bigint() - started) / 1e6 })
  } catch (error) {
    parentPort.postMessage({ id: job.id, error: String((error && error.message) || error) })
  }
})
`

type Operation = { op: 'compare'; password: string; hash: string } | { op: 'hash'; password: string; cost: number }

/** What a worker answers: the result and the milliseconds bcrypt itself took (no queueing). */
export interface BcryptOutcome<T> {
  value: T
  ms: number
}

interface Job {
  id: number
  key: string
  operation: Operation
  resolve: (outcome: BcryptOutcome<unknown>) => void
  reject: (error: Error) => void
}

interface Slot {
  worker: Worker
  job: Job | undefined
}

export interface BcryptPoolOptions {
  /** Worker threads at most; default 1 on a machine with 2 cores or fewer (the event loop keeps one), else 2. */
  size?: number
  /** Workers idle this long are ended (made again on demand), default 30 s. */
  idleMs?: number
}

export class BcryptPool {
  readonly size: number
  private readonly idleMs: number
  private readonly slots: Slot[] = []
  /** Per-key FIFO queues; Map order is the round-robin order (a served key moves to the back). */
  private readonly queues = new Map<string, Job[]>()
  private readonly counts = new Map<string, number>()
  private total = 0
  private nextId = 1
  private idleTimer: NodeJS.Timeout | undefined

  constructor(options: BcryptPoolOptions = {}) {
    this.size = Math.max(1, options.size ?? Math.min(2, availableParallelism() - 1))
    this.idleMs = options.idleMs ?? 30_000
  }

  /** True when the password matches the bcrypt hash. Rejects only when a worker fails (not for a wrong password). */
  compare(key: string, password: string, hash: string): Promise<BcryptOutcome<boolean>> {
    return this.submit(key, { op: 'compare', password, hash }) as Promise<BcryptOutcome<boolean>>
  }

  /** A new bcrypt hash of `password` at `cost`. */
  hash(key: string, password: string, cost: number): Promise<BcryptOutcome<string>> {
    return this.submit(key, { op: 'hash', password, cost }) as Promise<BcryptOutcome<string>>
  }

  /** Jobs of this key waiting or running. */
  pendingFor(key: string): number {
    return this.counts.get(key) ?? 0
  }

  /** Jobs of every key waiting or running. */
  get pending(): number {
    return this.total
  }

  /** Ends the workers; queued and running jobs reject. The pool can be used again afterwards. */
  async close(): Promise<void> {
    if (this.idleTimer) clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    const error = new Error('bcrypt pool closed')
    for (const queue of this.queues.values()) for (const job of queue) this.settle(job, () => job.reject(error))
    this.queues.clear()
    const slots = this.slots.splice(0)
    for (const slot of slots) {
      const job = slot.job
      slot.job = undefined
      if (job) this.settle(job, () => job.reject(error))
    }
    await Promise.all(slots.map(slot => slot.worker.terminate()))
  }

  private submit(key: string, operation: Operation): Promise<BcryptOutcome<unknown>> {
    return new Promise((resolve, reject) => {
      const job: Job = { id: this.nextId++, key, operation, resolve, reject }
      const queue = this.queues.get(key)
      if (queue) queue.push(job)
      else this.queues.set(key, [job])
      this.counts.set(key, (this.counts.get(key) ?? 0) + 1)
      this.total++
      this.dispatch()
    })
  }

  private dispatch(): void {
    for (;;) {
      if (this.queues.size === 0) break
      const slot = this.slots.find(candidate => candidate.job === undefined) ?? (this.slots.length < this.size ? this.spawn() : undefined)
      if (!slot) break
      const [key, queue] = this.queues.entries().next().value as [string, Job[]]
      const job = queue.shift()!
      this.queues.delete(key)
      if (queue.length > 0) this.queues.set(key, queue)
      slot.job = job
      // Referenced while it works, so a caller awaiting a result keeps the process alive.
      slot.worker.ref()
      slot.worker.postMessage({ id: job.id, ...job.operation })
    }
    this.armIdleTimer()
  }

  private spawn(): Slot {
    const worker = new Worker(WORKER_SOURCE, { eval: true, name: 'berth-bcrypt' })
    const slot: Slot = { worker, job: undefined }
    worker.on('message', (message: { id: number; value?: unknown; ms?: number; error?: string }) => {
      const job = slot.job
      if (!job || job.id !== message.id) return
      slot.job = undefined
      worker.unref()
      if (message.error !== undefined) this.settle(job, () => job.reject(new Error(`bcrypt: ${message.error}`)))
      else this.settle(job, () => job.resolve({ value: message.value, ms: message.ms ?? 0 }))
      this.dispatch()
    })
    const fail = (error: Error) => {
      const index = this.slots.indexOf(slot)
      if (index < 0) return
      this.slots.splice(index, 1)
      const job = slot.job
      slot.job = undefined
      if (job) this.settle(job, () => job.reject(error))
      this.dispatch()
    }
    worker.on('error', fail)
    worker.on('exit', code => fail(new Error(`bcrypt worker exited with code ${code}`)))
    // Idle workers never keep the process alive (after the listeners: adding one refs the port again).
    worker.unref()
    this.slots.push(slot)
    return slot
  }

  private settle(job: Job, finish: () => void): void {
    const count = (this.counts.get(job.key) ?? 1) - 1
    if (count > 0) this.counts.set(job.key, count)
    else this.counts.delete(job.key)
    this.total--
    finish()
  }

  private armIdleTimer(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    if (this.total > 0 || this.slots.length === 0) return
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined
      if (this.total > 0) return
      for (const slot of this.slots.splice(0)) void slot.worker.terminate()
    }, this.idleMs)
    this.idleTimer.unref()
  }
}

let shared: BcryptPool | undefined

/** The process-wide pool every verifier uses unless it is given its own. */
export function sharedBcryptPool(): BcryptPool {
  shared ??= new BcryptPool()
  return shared
}

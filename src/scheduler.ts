/**
 * The one home of Berth's background jobs (upload purging, garbage collection), started by the
 * composition root. Each job runs on its own timer, never overlaps itself, and is aborted between two
 * steps of its work when the scheduler stops. Timers never keep the process alive.
 */
import type { Logger } from './log.js'

export interface Job {
  readonly name: string
  readonly intervalMs: number
  /** One run. A rejection is logged, and the job runs again at its next tick. */
  run(signal: AbortSignal): Promise<void>
}

export interface Scheduler {
  /** Runs `name` now unless it is running; resolves when that run is over. */
  runNow(name: string): Promise<void>
  /** Stops every timer and aborts the runs in progress; resolves when they have stopped. */
  stop(): Promise<void>
}

export function startScheduler(jobs: readonly Job[], logger: Logger): Scheduler {
  const abort = new AbortController()
  const running = new Map<string, Promise<void>>()
  const runNow = (job: Job): Promise<void> => {
    const current = running.get(job.name)
    if (current !== undefined || abort.signal.aborted) return current ?? Promise.resolve()
    const run = job
      .run(abort.signal)
      .catch((error: unknown) => {
        if (!abort.signal.aborted) logger.error(`${job.name} failed`, { error: error instanceof Error ? error.message : String(error) })
      })
      .finally(() => running.delete(job.name))
    running.set(job.name, run)
    return run
  }
  const timers = jobs.map(job => {
    if (!Number.isFinite(job.intervalMs) || job.intervalMs <= 0) throw new RangeError(`${job.name}: the interval must be a positive number of milliseconds`)
    const timer = setInterval(() => void runNow(job), job.intervalMs)
    timer.unref()
    return timer
  })
  return {
    runNow(name) {
      const job = jobs.find(candidate => candidate.name === name)
      if (job === undefined) throw new RangeError(`no job named ${name}`)
      return runNow(job)
    },
    async stop() {
      for (const timer of timers) clearInterval(timer)
      abort.abort(new Error('server shutting down'))
      await Promise.allSettled([...running.values()])
    },
  }
}

/**
 * A background job run every `intervalMs` (upload purging, garbage collection). A run never
 * overlaps the previous one: a tick while one is in progress is skipped, and so is `runNow`.
 * `stop` clears the timer, aborts the signal the job was given and resolves when the run in
 * progress has ended. The timer never keeps the process alive. The job handles its own errors.
 */
export interface PeriodicJob<T> {
  /** Runs once now unless a run is in progress or the job stopped; resolves with its result, or undefined when skipped. */
  runNow(): Promise<T | undefined>
  stop(): Promise<void>
}

export function every<T>(intervalMs: number, job: (signal: AbortSignal) => Promise<T | undefined>): PeriodicJob<T> {
  if (!Number.isFinite(intervalMs) || intervalMs <= 0) throw new RangeError('an interval must be a positive number of milliseconds')
  const abort = new AbortController()
  let running: Promise<T | undefined> | undefined
  const runNow = (): Promise<T | undefined> => {
    if (running !== undefined || abort.signal.aborted) return Promise.resolve(undefined)
    running = job(abort.signal).finally(() => {
      running = undefined
    })
    return running
  }
  const timer = setInterval(() => void runNow(), intervalMs)
  timer.unref()
  return {
    runNow,
    async stop() {
      clearInterval(timer)
      abort.abort(new Error('server shutting down'))
      await running
    },
  }
}

/**
 * Background jobs (upload purging, garbage collection, certificate maintenance), started by the
 * composition root. A run never overlaps the previous one: a timer that fires while one is in
 * progress is skipped, and so is `runNow`. `stop` clears the timer, aborts the signal the job was
 * given and resolves when the run in progress has ended. The timer never keeps the process alive.
 * The job handles its own errors.
 */
export interface PeriodicJob<T> {
  /** Runs once now unless a run is in progress or the job stopped; resolves with its result, or undefined when skipped. */
  runNow(): Promise<T | undefined>
  stop(): Promise<void>
}

type Job<T> = (signal: AbortSignal) => Promise<T | undefined>

/** setTimeout's limit: a longer delay would fire at once. */
const MAX_DELAY_MS = 2 ** 31 - 1

/** Runs `job` every `intervalMs`, counted from the start of each tick. */
export function every<T>(intervalMs: number, job: Job<T>): PeriodicJob<T> {
  if (!Number.isFinite(intervalMs) || intervalMs <= 0) throw new RangeError('an interval must be a positive number of milliseconds')
  const timer = setInterval(() => void periodic.runNow(), intervalMs)
  timer.unref()
  const periodic = guarded(job, { clearTimer: () => clearInterval(timer) })
  return periodic
}

/**
 * Runs `job` after `nextDelayMs()`, asked again after each run ends (so the job can name its next
 * time from what the run found), or at once when `runAtStart`. `nextDelayMs` must not throw; delays
 * beyond ~24.8 days are cut to that.
 */
export function scheduled<T>(nextDelayMs: () => number, job: Job<T>, options: { runAtStart?: boolean } = {}): PeriodicJob<T> {
  let timer: NodeJS.Timeout | undefined
  const arm = (delayMs: number): void => {
    clearTimeout(timer)
    timer = setTimeout(() => void periodic.runNow(), Math.min(delayMs, MAX_DELAY_MS))
    timer.unref()
  }
  const periodic = guarded(job, { clearTimer: () => clearTimeout(timer), afterRun: () => arm(nextDelayMs()) })
  arm(options.runAtStart === true ? 0 : nextDelayMs())
  return periodic
}

/** The no-overlap and stop rules both forms share; `afterRun` runs after each run unless stopped. */
function guarded<T>(job: Job<T>, timer: { clearTimer: () => void; afterRun?: () => void }): PeriodicJob<T> {
  const abort = new AbortController()
  let running: Promise<T | undefined> | undefined
  return {
    runNow() {
      if (running !== undefined || abort.signal.aborted) return Promise.resolve(undefined)
      running = job(abort.signal).finally(() => {
        running = undefined
        if (!abort.signal.aborted) timer.afterRun?.()
      })
      return running
    },
    async stop() {
      timer.clearTimer()
      abort.abort(new Error('server shutting down'))
      await running
    },
  }
}

/**
 * Readiness checks, asked on every `/readyz` (edge/steps/health.ts). Each answers from memory, so
 * a probe request does no I/O; a check that needs I/O (storage, the upstream) runs in the
 * background through `CachedCheck` and keeps its last result.
 */
import type { Logger } from './log.js'
import { every, type PeriodicJob } from './scheduler.js'

export interface ReadinessCheck {
  /** Names the check in the `/readyz` body: storage, certificate, upstream, shutdown. */
  readonly name: string
  /**
   * Why the check fails now, in a few fixed words (the body is public: no paths, no error text), or
   * undefined when it passes. Synchronous, no I/O.
   */
  failure(): string | undefined
}

export interface CachedCheckOptions {
  readonly name: string
  /** One attempt: resolves when the thing checked is usable, rejects (with the reason for the log) when not. */
  readonly probe: () => Promise<void>
  /** What `failure()` says after a rejected attempt. */
  readonly failureText: string
  readonly intervalMs: number
  /** An attempt still running after this long fails the check as 'not answering'; no second attempt starts meanwhile. */
  readonly timeoutMs: number
  readonly logger: Logger
}

const NOT_CHECKED = 'not checked yet'
const NOT_ANSWERING = 'not answering'

/**
 * A check whose attempts run every `intervalMs` from `start()` (the first at once) and never
 * overlap. A change of state is logged once: a failure at warn with its cause, a recovery at info.
 */
export class CachedCheck implements ReadinessCheck {
  readonly name: string
  private state: string | undefined = NOT_CHECKED
  private attempt: Promise<void> | undefined
  private job: PeriodicJob<undefined> | undefined

  constructor(private readonly options: CachedCheckOptions) {
    this.name = options.name
  }

  failure(): string | undefined {
    return this.state
  }

  /** Starts the attempts; resolves when the first one has ended (or timed out). Idempotent. */
  start(): Promise<void> {
    this.job ??= every(this.options.intervalMs, () => this.run())
    return this.job.runNow().then(() => undefined)
  }

  /** One attempt now (skipped while one is running); resolves when it has ended or timed out. */
  async runNow(): Promise<void> {
    await (this.job ? this.job.runNow() : this.run())
  }

  stop(): Promise<void> {
    return this.job?.stop() ?? Promise.resolve()
  }

  private async run(): Promise<undefined> {
    if (this.attempt !== undefined) {
      this.set(NOT_ANSWERING, new Error(`the previous check has not ended after ${this.options.timeoutMs} ms`))
      return undefined
    }
    const attempt = this.options.probe().then(
      () => this.set(undefined),
      (error: unknown) => this.set(this.options.failureText, error),
    )
    this.attempt = attempt
    void attempt.finally(() => {
      if (this.attempt === attempt) this.attempt = undefined
    })
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>(resolve => {
      timer = setTimeout(() => {
        this.set(NOT_ANSWERING, new Error(`no answer within ${this.options.timeoutMs} ms`))
        resolve()
      }, this.options.timeoutMs)
      timer.unref()
    })
    await Promise.race([attempt, timeout])
    clearTimeout(timer)
    return undefined
  }

  private set(state: string | undefined, error?: unknown): void {
    const before = this.state
    this.state = state
    if (state === before) return
    const { logger, name } = this.options
    if (state !== undefined) logger.warn(`${name} check failed`, { reason: state, error: error instanceof Error ? error.message : String(error) })
    else if (before !== NOT_CHECKED) logger.info(`${name} check passes again`)
  }
}

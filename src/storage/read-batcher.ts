/**
 * Shares store reads between concurrent requests for the same thing without making any of them
 * staler than a read of its own.
 *
 * The rule: a caller only ever gets the result of a read that *started after it called*. A read
 * starts on the turn of the event loop after its first caller's, so the requests for the same key
 * that one turn delivers (several connections' requests, parsed in one go) share it. While a read
 * for a key is in flight, new callers do not join it (it may have read the store before their
 * request arrived, e.g. before a DELETE they just saw answered); they wait for the next read,
 * which starts as soon as the current one settles and serves all of them. So for every
 * caller the answer reflects the store at some moment between its call and its result, exactly
 * as if it had read alone, and a hot key costs one read per round trip instead of one per
 * request. Nothing is kept once the reads settle: this is not a cache.
 */

interface Batch<T> {
  readonly read: () => Promise<T>
  readonly promise: Promise<T>
  settle(outcome: PromiseSettledResult<T>): void
}

interface KeyState<T> {
  /** Callers that arrived while a read was in flight: served by the next read. */
  next: Batch<T> | undefined
  /** Starts `next` on its own if the read in flight takes too long. */
  timer: NodeJS.Timeout | undefined
}

function newBatch<T>(read: () => Promise<T>): Batch<T> {
  let settle!: (outcome: PromiseSettledResult<T>) => void
  const promise = new Promise<T>((resolve, reject) => {
    settle = outcome => (outcome.status === 'fulfilled' ? resolve(outcome.value) : reject(outcome.reason))
  })
  return { read, promise, settle }
}

/** How long waiting callers wait for a slow read in flight before they get a read of their own (default 1 s). */
export const DEFAULT_MAX_WAIT_MS = 1000

export class ReadBatcher<T> {
  readonly #keys = new Map<string, KeyState<T>>()

  /**
   * @param maxWaitMs a read that hangs (a store request that never answers) must not hold up every
   *   later request for its key: after this long, the callers waiting behind it get a read of their
   *   own, which started after they called like any other.
   */
  constructor(private readonly maxWaitMs = DEFAULT_MAX_WAIT_MS) {}

  /** Keys with a read in flight (for tests). */
  get inFlight(): number {
    return this.#keys.size
  }

  /**
   * `read()`'s result, from a read started at or after this call. Every `read` given for one key
   * must be the same read (only one of a batch's runs).
   */
  run(key: string, read: () => Promise<T>): Promise<T> {
    const state = this.#keys.get(key)
    if (state !== undefined) {
      if (state.next === undefined) {
        state.next = newBatch(read)
        state.timer = setTimeout(() => this.#detach(key, state), this.maxWaitMs)
        state.timer.unref()
      }
      return state.next.promise
    }
    // Nothing in flight: start on the next turn of the event loop, so requests for the same key
    // that this turn delivers (other connections' requests, read in one go) share the read.
    const batch = newBatch(read)
    const pending: KeyState<T> = { next: batch, timer: undefined }
    this.#keys.set(key, pending)
    setImmediate(() => {
      pending.next = undefined
      this.#start(key, batch)
    })
    return batch.promise
  }

  #start(key: string, batch: Batch<T>): void {
    const state: KeyState<T> = { next: undefined, timer: undefined }
    this.#keys.set(key, state)
    let running: Promise<T>
    try {
      running = batch.read()
    } catch (error) {
      running = Promise.reject(error)
    }
    running.then(
      value => this.#finish(key, state, batch, { status: 'fulfilled', value }),
      (reason: unknown) => this.#finish(key, state, batch, { status: 'rejected', reason }),
    )
  }

  /** The read in flight is slow: the waiting batch starts its own; the slow one, when done, serves only its callers. */
  #detach(key: string, state: KeyState<T>): void {
    const next = state.next
    state.next = undefined
    state.timer = undefined
    if (next !== undefined && this.#keys.get(key) === state) this.#start(key, next)
  }

  #finish(key: string, state: KeyState<T>, batch: Batch<T>, outcome: PromiseSettledResult<T>): void {
    if (state.timer !== undefined) clearTimeout(state.timer)
    if (this.#keys.get(key) === state) {
      const next = state.next
      if (next === undefined) this.#keys.delete(key)
      else this.#start(key, next)
    }
    batch.settle(outcome)
  }
}

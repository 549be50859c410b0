/**
 * Shares store reads between concurrent requests for the same thing without making any of them
 * staler than a read of its own.
 *
 * The rule: a caller only ever gets the result of a read that *started after it called*. While a
 * read for a key is in flight, new callers do not join it (it may have read the store before
 * their request arrived, e.g. before a DELETE they just saw answered); they wait for the next
 * read, which starts as soon as the current one settles and serves all of them. So for every
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
}

function newBatch<T>(read: () => Promise<T>): Batch<T> {
  let settle!: (outcome: PromiseSettledResult<T>) => void
  const promise = new Promise<T>((resolve, reject) => {
    settle = outcome => (outcome.status === 'fulfilled' ? resolve(outcome.value) : reject(outcome.reason))
  })
  return { read, promise, settle }
}

export class ReadBatcher<T> {
  readonly #keys = new Map<string, KeyState<T>>()

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
      state.next ??= newBatch(read)
      return state.next.promise
    }
    const batch = newBatch(read)
    this.#start(key, { next: undefined }, batch)
    return batch.promise
  }

  #start(key: string, state: KeyState<T>, batch: Batch<T>): void {
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

  #finish(key: string, state: KeyState<T>, batch: Batch<T>, outcome: PromiseSettledResult<T>): void {
    const next = state.next
    if (next === undefined) this.#keys.delete(key)
    else this.#start(key, { next: undefined }, next)
    batch.settle(outcome)
  }
}

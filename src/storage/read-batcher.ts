/**
 * Shares store reads between concurrent requests for the same thing without making any of them
 * staler than a read of its own.
 *
 * The rule: a caller only ever gets the result of a read that *started after it called*. A read
 * starts on the turn of the event loop after its first caller's, so the requests for the same key
 * that one turn delivers (several connections' requests, parsed in one go) share it. Callers that
 * arrive while reads for the key are in flight never join those (one may have read the store
 * before their request arrived, e.g. before a DELETE they just saw answered): they form the next
 * batch, which starts on the next turn while fewer than `maxInFlight` reads of the key are in
 * flight, else as soon as one settles. So for every caller the answer reflects the store at some
 * moment between its call and its result, exactly as if it had read alone, and a hot key costs
 * at most `maxInFlight` reads per round trip instead of one per request. Nothing is kept once the
 * reads settle: this is not a cache.
 */

interface Batch<T> {
  readonly read: () => Promise<T>
  readonly promise: Promise<T>
  settle(outcome: PromiseSettledResult<T>): void
}

interface KeyState<T> {
  /** Reads of this key in flight. */
  running: number
  /** Callers that arrived after the last read started: served by the next read. */
  next: Batch<T> | undefined
  /** Whether `next` is due to start on the next turn already. */
  scheduled: boolean
  /** Starts `next` on its own if the reads in flight take too long. */
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
   * @param maxInFlight reads of one key at once (default 1): with 2, callers arriving during a read
   *   get theirs on the next turn instead of after it, so they wait about one round trip, not one
   *   and a half, for at most twice the reads.
   */
  constructor(
    private readonly maxWaitMs = DEFAULT_MAX_WAIT_MS,
    private readonly maxInFlight = 1,
  ) {}

  /** Keys with a read in flight or waiting (for tests). */
  get inFlight(): number {
    return this.#keys.size
  }

  /**
   * `read()`'s result, from a read started at or after this call. Every `read` given for one key
   * must be the same read (only one of a batch's runs).
   */
  run(key: string, read: () => Promise<T>): Promise<T> {
    let state = this.#keys.get(key)
    if (state === undefined) {
      state = { running: 0, next: undefined, scheduled: false, timer: undefined }
      this.#keys.set(key, state)
    }
    if (state.next !== undefined) return state.next.promise // not started yet: as fresh as a read of its own
    const batch = newBatch(read)
    state.next = batch
    if (state.running < this.maxInFlight) this.#schedule(key, state)
    else {
      const waiting = state
      waiting.timer = setTimeout(() => this.#detach(key, waiting), this.maxWaitMs)
      waiting.timer.unref()
    }
    return batch.promise
  }

  /** Starts `next` on the next turn, so the callers this turn delivers share it. */
  #schedule(key: string, state: KeyState<T>): void {
    if (state.scheduled) return
    state.scheduled = true
    setImmediate(() => {
      state.scheduled = false
      this.#startNext(key, state)
    })
  }

  /** The reads in flight are slow: the waiting batch starts its own under a fresh state; the slow ones, when done, serve only their callers. */
  #detach(key: string, state: KeyState<T>): void {
    const next = state.next
    state.next = undefined
    state.timer = undefined
    if (next === undefined || this.#keys.get(key) !== state) return
    const fresh: KeyState<T> = { running: 0, next, scheduled: false, timer: undefined }
    this.#keys.set(key, fresh)
    this.#startNext(key, fresh)
  }

  #startNext(key: string, state: KeyState<T>): void {
    const batch = state.next
    if (state.timer !== undefined) clearTimeout(state.timer)
    state.timer = undefined
    if (batch === undefined) return
    state.next = undefined
    state.running++
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
    state.running--
    if (state.next !== undefined) {
      if (!state.scheduled) this.#startNext(key, state)
    } else if (state.running === 0 && !state.scheduled && this.#keys.get(key) === state) this.#keys.delete(key)
    batch.settle(outcome)
  }
}

/**
 * Process-level memory settings for `berth serve` (issue #7's 150 MiB bound, #8's load test).
 *
 * V8 grows its young generation (the "new space" every short-lived object is born in) from 1 MiB
 * per semi-space up to 16 MiB when allocation stays busy, and never gives it back while it does:
 * 32 MiB of resident memory for the two semi-spaces. A registry allocates only small, short-lived
 * objects per request (blob bytes live outside the V8 heap), so a small new space costs little
 * (a scavenge is proportional to what survives, not to the space's size); measured in the load test
 * (50 clients for 40-60 s), the new space reached 32 MiB and was a sixth of the peak RSS.
 *
 * `node --max-semi-space-size` would set the limit, but it is read only when the heap is created:
 * it cannot be set from inside the program, and flags on the `node` command line do not reach the
 * single binary or `npx berth`. What V8 does read at every growth is `--semi-space-growth-factor`,
 * so after each garbage collection this sets it to 1 (no growth) once the new space has reached
 * the cap, and back to V8's default 2 if V8 shrank it below (it does when the process goes idle).
 *
 * A small new space promotes more short-lived objects (those of a request still running at two
 * scavenges) to the old space, where they stay until a full collection. V8 lets the old space grow
 * to up to 4× what was live after the last one before it runs the next: 8 → 33 MiB in the load
 * test. `--heap-growing-percent=50` (read at every full collection) makes that 1.5× (at least 8 MiB
 * more, V8's minimum step): with a live old space of about 9 MiB, a full collection of ~17 MiB every
 * few seconds under load, a few milliseconds each, mostly on V8's helper threads.
 * Load test, 60 s: peak RSS 143-147 MiB and rising with the cap alone, 111 MiB and flat with both.
 */
import { PerformanceObserver } from 'node:perf_hooks'
import v8 from 'node:v8'

/** New space (both semi-spaces) kept at or below this, when it gets there by itself. */
export const YOUNG_GENERATION_CAP_BYTES = 8 * 1024 * 1024

const DEFAULT_GROWTH_FACTOR = 2
/** Old-space growth between full collections, in percent of what was live after the last one. */
export const HEAP_GROWING_PERCENT = 50

function newSpaceBytes(): number {
  return v8.getHeapSpaceStatistics().find(space => space.space_name === 'new_space')?.space_size ?? 0
}

/**
 * Starts keeping the new space at or below `capBytes` and the old space's growth between full
 * collections at HEAP_GROWING_PERCENT; returns a function that undoes both.
 */
export function capYoungGeneration(capBytes = YOUNG_GENERATION_CAP_BYTES): () => void {
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`)
  let capped = false
  const check = (): void => {
    const full = newSpaceBytes() >= capBytes
    if (full === capped) return
    capped = full
    v8.setFlagsFromString(`--semi-space-growth-factor=${full ? 1 : DEFAULT_GROWTH_FACTOR}`)
  }
  check()
  // One entry per garbage collection, delivered soon after it (so the space may grow one step past
  // the cap before the factor takes effect).
  const observer = new PerformanceObserver(check)
  observer.observe({ entryTypes: ['gc'] })
  return () => {
    observer.disconnect()
    v8.setFlagsFromString('--heap-growing-percent=0') // V8's default: its own factor
    if (capped) v8.setFlagsFromString(`--semi-space-growth-factor=${DEFAULT_GROWTH_FACTOR}`)
    capped = false
  }
}

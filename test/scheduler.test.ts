/**
 * The scheduler's next-delay form (`scheduled`): first run at start when asked, the delay asked
 * again after each run, no overlap, and stop. Real timers of a few tens of milliseconds.
 */
import test from 'ava'
import { scheduled } from '../src/scheduler.js'

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

test('runs at start when asked, then after the delay the job names once each run has ended', async t => {
  const runs: number[] = []
  const asked: number[] = []
  const started = Date.now()
  const job = scheduled(
    () => {
      asked.push(runs.length)
      return runs.length === 1 ? 100 : 60_000 // after the first run: soon; after the second: not within this test
    },
    async () => {
      runs.push(Date.now() - started)
      return runs.length
    },
    { runAtStart: true },
  )
  t.teardown(() => job.stop())
  t.deepEqual(asked, [], 'no delay is asked before the first run')
  await until(() => runs.length === 1, 'the first run')
  await until(() => runs.length === 2, 'the second run')
  t.true((runs[1] ?? 0) - (runs[0] ?? 0) >= 95, 'the second run waited the delay named after the first')
  await until(() => asked.length === 2, 'the delay after the second run')
  t.deepEqual(asked, [1, 2], 'the delay is asked after each run')
})

test('without runAtStart the first run waits for the first delay', async t => {
  let runs = 0
  const job = scheduled(
    () => 100,
    async () => {
      runs++
      return undefined
    },
  )
  t.teardown(() => job.stop())
  await sleep(30)
  t.is(runs, 0)
  await until(() => runs === 1, 'the first run')
})

test('never overlaps: runNow during a run is skipped, and the next delay counts from the end of the run', async t => {
  let active = 0
  let most = 0
  let runs = 0
  let release!: () => void
  const job = scheduled(
    () => 100,
    async () => {
      runs++
      active++
      most = Math.max(most, active)
      if (runs === 1) await new Promise<void>(resolve => (release = resolve))
      active--
      return runs
    },
    { runAtStart: true },
  )
  t.teardown(() => job.stop())
  await until(() => runs === 1, 'the first run')
  t.is(await job.runNow(), undefined, 'skipped while the first run is in progress')
  await sleep(150)
  t.is(runs, 1, 'no timer fires while a run is in progress')
  const released = Date.now()
  release()
  await sleep(20)
  t.is(runs, 1, 'the next run waits its delay from the end of the previous one')
  await until(() => runs === 2, 'the second run')
  t.true(Date.now() - released >= 95)
  t.is(most, 1)
})

test('stop aborts the signal of the run in progress, waits for it, and nothing runs after', async t => {
  let runs = 0
  let sawAbort = false
  const job = scheduled(
    () => 10,
    async signal => {
      runs++
      await new Promise(resolve => signal.addEventListener('abort', resolve, { once: true }))
      sawAbort = signal.aborted
      await sleep(20)
      return undefined
    },
    { runAtStart: true },
  )
  await until(() => runs === 1, 'the first run')
  const stopping = Date.now()
  await job.stop()
  t.true(sawAbort)
  t.true(Date.now() - stopping >= 15, 'stop resolved after the run ended')
  await sleep(50)
  t.is(runs, 1)
  t.is(await job.runNow(), undefined)
})

test('a delay beyond the timer limit waits instead of firing at once', async t => {
  let runs = 0
  const job = scheduled(
    () => 40 * 24 * 3600_000,
    async () => {
      runs++
      return undefined
    },
  )
  t.teardown(() => job.stop())
  await sleep(30)
  t.is(runs, 0)
})

/**
 * The young-generation cap `berth serve` sets on its own process (src/process-memory.ts): with it,
 * V8's new space stops growing at the cap (or one step past it) under a busy allocation pattern that
 * grows it to 32 MiB without. Each case runs in a fresh node process, since the setting is per process.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import test from 'ava'
import { REPO_ROOT } from '../helpers/berth.js'
import { YOUNG_GENERATION_CAP_BYTES } from '../../src/process-memory.js'

const run = promisify(execFile)

// Objects that survive a scavenge or two (a ring of the last 100 000), which is what makes V8 grow
// the space; allocated in small batches across event-loop turns, as a server's requests are.
const SCRIPT = `
import v8 from 'node:v8'
import { capYoungGeneration } from './src/process-memory.ts'
const cap = process.argv.includes('cap') ? capYoungGeneration() : undefined
const ring = new Array(100_000)
let peak = 0
let n = 0
for (let batch = 0; batch < 3000; batch++) {
  for (let i = 0; i < 1000; i++) ring[n++ % ring.length] = { batch, i, text: 'x' + i, list: [i, i + 1] }
  await new Promise(resolve => setImmediate(resolve))
  peak = Math.max(peak, v8.getHeapSpaceStatistics().find(s => s.space_name === 'new_space').space_size)
}
cap?.()
console.log(peak)
`

async function peakNewSpace(withCap: boolean): Promise<number> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', SCRIPT, ...(withCap ? ['cap'] : [])], { cwd: REPO_ROOT })
  return Number(stdout.trim())
}

test("serve keeps V8's new space at its cap; without the cap the same allocations grow it past", async t => {
  const [capped, uncapped] = await Promise.all([peakNewSpace(true), peakNewSpace(false)])
  const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(0)
  t.log(`peak new space: ${mib(capped)} MiB with the ${mib(YOUNG_GENERATION_CAP_BYTES)} MiB cap, ${mib(uncapped)} MiB without`)
  // The cap is applied after each garbage collection, when V8 reports it, so the space may grow one
  // step (x2) past it first (src/process-memory.ts): 1 run in 8 did with 3 busy loops on 2 cores.
  const oneStepPast = 2 * YOUNG_GENERATION_CAP_BYTES
  t.true(uncapped > oneStepPast, 'the allocation pattern does not grow the new space past one step: the test proves nothing')
  t.true(capped <= oneStepPast, `new space grew to ${mib(capped)} MiB`)
})

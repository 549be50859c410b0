/**
 * A large layer streams through Berth: pushed with skopeo and pulled back intact, while the server's
 * peak memory (VmHWM of the Berth process) grows by far less than the layer. A server that buffered a
 * blob, in the edge's proxy or in the engine, would grow by at least the layer's size.
 */
import test from 'ava'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { startLocalBerth, type Berth } from '../helpers/berth.js'
import { fileDigest, OciLayout } from '../helpers/images.js'
import { makeTempDir, removeDir } from '../helpers/procs.js'
import { copy, type RegistryAccess } from '../helpers/skopeo.js'

const MiB = 1024 * 1024
const LAYER = 256 * MiB
/** Allowed peak growth: well under the layer. Buffering it once would take all of it. */
const MAX_GROWTH = 100 * MiB
const plainHttp: RegistryAccess = { tlsVerify: false }

let work: string | undefined
let berth: Berth | undefined

test.after.always(async () => {
  await berth?.stop()
  if (work) await removeDir(work)
})

/** Peak resident set size of a process, in bytes (Linux /proc). */
async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(status)
  if (!match?.[1]) throw new Error(`no VmHWM in /proc/${pid}/status`)
  return Number(match[1]) * 1024
}

test(`a ${LAYER / MiB} MiB layer goes in and out intact, and Berth's memory does not grow with it`, async t => {
  work = await makeTempDir('e2e-large-layer')
  const layout = await OciLayout.create(path.join(work, 'layout'))
  const [started, image] = await Promise.all([startLocalBerth({ datadir: path.join(work, 'datadir') }), layout.addImage({ tag: 'big', layers: [LAYER] })])
  berth = started
  const pid = berth.pid
  if (pid === undefined) {
    t.log('the engine runs in this process: memory is not measured')
  }
  // Warm up the code paths (and the JIT) with a small image, then take the baseline.
  const small = await layout.addImage({ tag: 'small', layers: [64 * 1024] })
  await copy(layout.ref('small'), `docker://${berth.hostPort}/large/warmup:latest`, { dest: plainHttp })
  t.truthy(small)
  const before = pid === undefined ? 0 : await peakRss(pid)

  const remote = `docker://${berth.hostPort}/large/layer:latest`
  await copy(layout.ref('big'), remote, { dest: plainHttp }, { timeoutMs: 150_000 })
  const out = await OciLayout.create(path.join(work, 'out'))
  await copy(remote, out.ref('big'), { src: plainHttp }, { timeoutMs: 150_000 })

  const layer = image.layers[0]!
  t.is(await fileDigest(out.blobPath(layer.digest)), layer.digest, 'the layer came back intact')
  if (pid !== undefined) {
    const after = await peakRss(pid)
    t.log(
      `Berth peak RSS ${(before / MiB).toFixed(0)} MiB → ${(after / MiB).toFixed(0)} MiB for a ${(layer.size / MiB).toFixed(0)} MiB layer pushed and pulled`,
    )
    t.true(after - before < MAX_GROWTH, `peak RSS grew by ${((after - before) / MiB).toFixed(0)} MiB`)
  }
})

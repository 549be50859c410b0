/**
 * Manifests with many descriptors (issue #20, finding 5): several clients PUT ~4 MiB manifests
 * at once, some at the descriptor limit (10,000 layers, all one stored blob: accepted) and some
 * far over it (26,000: refused with MANIFEST_INVALID), while another client keeps reading a
 * manifest. That client's GETs must stay fast and the server's RSS must stay bounded.
 *
 * Quick mode: 8 at once, 2 rounds. Full mode: 8 at once, 10 rounds.
 */
import { randomBytes } from 'node:crypto'
import test from 'ava'
import { startBerth } from '../helpers/berth.js'
import { request } from '../helpers/http.js'
import { OCI_MANIFEST, pushBlob, pushImage, rssKiB, size, tempDir } from './common.js'

const AT_ONCE = 8
const ROUNDS = size(2, 10)
/** The slowest GET of a small manifest allowed while the large PUTs run. */
const GET_BOUND_MS = 1000
/** How far RSS may rise above its level before the PUTs (8 × 4 MiB bodies, parsed). */
const RSS_GROWTH_BOUND_MIB = 120

function largeManifest(config: { digest: string; size: number }, layer: string, count: number, padding: number): Buffer {
  const extra = padding > 0 ? { annotations: { pad: 'x'.repeat(padding) } } : {}
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: Array.from({ length: count }, () => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer, size: 1000, ...extra })),
    }),
  )
}

test(`${AT_ONCE} large-descriptor manifest PUTs at once, ${ROUNDS} rounds: another client's GETs stay under ${GET_BOUND_MS} ms, RSS bounded`, async t => {
  t.timeout(300_000)
  const dir = await tempDir(t)
  const berth = await startBerth({ datadir: `${dir}/datadir`, args: ['--log-level', 'warn'] })
  t.teardown(() => berth.stop())
  const url = berth.url
  const pid = berth.pid!
  await pushImage(url, 'reader', 'v1', [randomBytes(1000)])
  const config = Buffer.from('{"architecture":"amd64","os":"linux"}')
  const configDigest = await pushBlob(url, 'flood', config)
  const layer = await pushBlob(url, 'flood', randomBytes(1000))
  const atLimit = largeManifest({ digest: configDigest, size: config.byteLength }, layer, 10_000, 220)
  const overLimit = largeManifest({ digest: configDigest, size: config.byteLength }, layer, 26_000, 0)
  t.true(atLimit.byteLength < 4 * 1024 * 1024 && atLimit.byteLength > 3.5 * 1024 * 1024, `${atLimit.byteLength}`)
  t.true(overLimit.byteLength < 4 * 1024 * 1024, `${overLimit.byteLength}`)

  // Settle, then take the level the growth is measured from.
  for (let i = 0; i < 20; i++) await request(url, '/v2/reader/manifests/v1', { headers: { Accept: OCI_MANIFEST } })
  const before = (await rssKiB(pid)).rss
  let peak = before
  const sampler = setInterval(() => {
    void rssKiB(pid).then(
      ({ rss }) => (peak = Math.max(peak, rss)),
      () => {},
    )
  }, 50)
  t.teardown(() => clearInterval(sampler))

  let flooding = true
  const latencies: number[] = []
  const reader = (async () => {
    while (flooding) {
      const started = performance.now()
      const get = await request(url, '/v2/reader/manifests/v1', { headers: { Accept: OCI_MANIFEST } })
      latencies.push(performance.now() - started)
      if (get.status !== 200) throw new Error(`reader GET: ${get.status}`)
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  })()

  const statuses: number[] = []
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const puts = Array.from({ length: AT_ONCE }, (_, i) => {
        const body = i % 2 === 0 ? atLimit : overLimit
        return request(url, `/v2/flood/manifests/r${round}-${i}`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body })
      })
      for (const put of await Promise.all(puts)) statuses.push(put.status)
    }
  } finally {
    flooding = false
  }
  await reader
  clearInterval(sampler)
  peak = Math.max(peak, (await rssKiB(pid)).rss)

  const growthMiB = (peak - before) / 1024
  const slowest = Math.max(...latencies)
  t.log(
    `RSS ${Math.round(before / 1024)} MiB before, peak ${Math.round(peak / 1024)} MiB (+${growthMiB.toFixed(0)}); ${latencies.length} GETs, slowest ${slowest.toFixed(0)} ms`,
  )
  t.deepEqual(
    [...new Set(statuses)].sort((a, b) => a - b),
    [201, 400],
    'at the limit accepted, over it refused',
  )
  t.true(slowest < GET_BOUND_MS, `slowest GET ${slowest.toFixed(0)} ms`)
  t.true(growthMiB < RSS_GROWTH_BOUND_MIB, `RSS grew ${growthMiB.toFixed(0)} MiB`)
})

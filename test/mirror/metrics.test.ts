/**
 * The mirror's metrics (`berth_mirror_*` in metrics/registry-metrics.ts), fed by a mirror in this
 * process: hits and misses of manifests and blobs, 20 clients of one blob (20 misses, one upstream
 * GET), a stale serve and the upstream errors behind it, 429 and 401 by reason.
 */
import test from 'ava'
import { RegistryMetrics } from '../../src/metrics/registry-metrics.js'
import { request } from '../helpers/http.js'
import { DOCKER_MANIFEST, imageManifest, OCI_MANIFEST, putManifest } from '../registry/fixtures.js'
import { startMirror, startUpstream } from './fixtures.js'

const ACCEPT = { Accept: `${OCI_MANIFEST}, ${DOCKER_MANIFEST}` }

function value(text: string, series: string): number {
  const line = text.split('\n').find(l => l.startsWith(`${series} `))
  if (line === undefined) throw new Error(`no series ${series}`)
  return Number(line.slice(series.length + 1))
}

test('hits, misses, stale serves and upstream errors by prefix and reason', async t => {
  const upstream = await startUpstream(t)
  const image = await imageManifest(upstream.direct, 'library/app')
  t.is((await putManifest(upstream.direct, 'library/app', '1', image.manifest, OCI_MANIFEST)).status, 201)
  const metrics = new RegistryMetrics({ processMetrics: false })
  const observer = metrics.watchMirror(['up.test', 'other.test'])
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url }], observer })
  const scrape = async () => metrics.registry.metrics()
  const series = (kind: string, result: string) => `berth_mirror_cache_requests_total{prefix="up.test",kind="${kind}",result="${result}"}`

  const before = await scrape()
  t.is(value(before, 'berth_mirror_stale_serves_total{prefix="other.test"}'), 0, 'every series is there from the start')
  t.is(value(before, series('manifest', 'miss')), 0)

  await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
  await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
  const layer = image.layers[0]!.digest
  await Promise.all(Array.from({ length: 20 }, () => request(mirror.url, `/v2/up.test/library/app/blobs/${layer}`)))
  await request(mirror.url, `/v2/up.test/library/app/blobs/${layer}`)
  let text = await scrape()
  t.is(value(text, series('manifest', 'miss')), 1)
  t.is(value(text, series('manifest', 'hit')), 1)
  t.is(upstream.count('GET blob'), 1)
  t.is(value(text, series('blob', 'miss')) + value(text, series('blob', 'hit')), 21)
  t.true(value(text, series('blob', 'hit')) >= 1, 'the request after the download is a hit')

  upstream.mode = '503'
  mirror.clock += 3_600_000
  t.is((await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })).status, 200)
  t.is((await request(mirror.url, '/v2/up.test/library/app/manifests/2', { headers: ACCEPT })).status, 502)
  upstream.mode = '429'
  t.is((await request(mirror.url, '/v2/up.test/library/app/manifests/3', { headers: ACCEPT })).status, 429)
  upstream.mode = 'ok'
  upstream.auth = { kind: 'basic', user: 'u', password: 'p' }
  t.is((await request(mirror.url, '/v2/up.test/library/app/manifests/4', { headers: ACCEPT })).status, 403)
  text = await scrape()
  t.is(value(text, 'berth_mirror_stale_serves_total{prefix="up.test"}'), 1)
  t.is(value(text, 'berth_mirror_upstream_errors_total{prefix="up.test",reason="unavailable"}'), 2, 'the tag check of :1 and the miss of :2')
  t.is(value(text, 'berth_mirror_upstream_errors_total{prefix="up.test",reason="rate_limited"}'), 1)
  t.is(value(text, 'berth_mirror_upstream_errors_total{prefix="up.test",reason="denied"}'), 1)
})

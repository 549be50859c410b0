import test from 'ava'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { startEdge } from '../../src/edge/edge.js'
import { SelfSignedCertificateProvider } from '../../src/edge/tls/self-signed.js'
import { RegistryMetrics } from '../../src/metrics/registry-metrics.js'
import { HTTPS_TEST_EDGE } from '../helpers/edge.js'
import { startUpstream } from '../edge/upstream-fixture.js'

async function samples(metrics: RegistryMetrics): Promise<Map<string, number>> {
  const { body } = await metrics.exposition()
  const map = new Map<string, number>()
  for (const line of body.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    map.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return map
}

test('port 80 is counted: redirects and ACME answers by their own handler, never by the registry route they name', async t => {
  const certsDir = await mkdtemp(path.join(tmpdir(), 'berth-port80-'))
  const upstream = await startUpstream()
  const metrics = new RegistryMetrics({ processMetrics: false })
  const edge = await startEdge({
    ...HTTPS_TEST_EDGE,
    certificate: new SelfSignedCertificateProvider({ certsDir, names: [] }),
    upstream: { url: upstream.url },
    metrics,
  })
  t.teardown(async () => {
    await edge.close()
    await upstream.close()
    await rm(certsDir, { recursive: true, force: true })
  })
  const port80 = edge.urls.http!
  const ask = async (method: string, target: string, body?: string): Promise<number> => {
    const answer = await fetch(port80 + target, { method, redirect: 'manual', ...(body !== undefined ? { body } : {}) })
    await answer.arrayBuffer()
    return answer.status
  }
  t.is(await ask('GET', '/v2/a/manifests/latest'), 301)
  t.is(await ask('HEAD', '/v2/'), 301)
  t.is(await ask('PATCH', '/v2/a/blobs/uploads/0f8e', 'some bytes'), 308)
  t.is(await ask('GET', '/.well-known/acme-challenge/token_1'), 404)
  t.is(await ask('GET', '/livez'), 200)

  const expected = new Map([
    ['registry_http_requests_total{code="301",handler="redirect",method="GET"}', 1],
    ['registry_http_requests_total{code="301",handler="redirect",method="HEAD"}', 1],
    ['registry_http_requests_total{code="308",handler="redirect",method="PATCH"}', 1],
    ['registry_http_requests_total{code="404",handler="acme_challenge",method="GET"}', 1],
    ['registry_http_requests_total{code="200",handler="other",method="GET"}', 1],
  ])
  let s = await samples(metrics)
  for (let wait = 0; wait < 50 && [...expected].some(([key, value]) => s.get(key) !== value); wait++) {
    await sleep(20)
    s = await samples(metrics)
  }
  for (const [key, value] of expected) t.is(s.get(key), value, key)
  const routes = [...s.keys()].filter(key => key.startsWith('registry_http_requests_total'))
  t.false(
    routes.some(key => /handler="(manifest|base|blob_upload_chunk)"/.test(key)),
    routes.join('\n'),
  )
  t.is(s.get('registry_http_in_flight_requests{handler="redirect"}'), 0)
  t.is(s.get('berth_blob_uploads_in_progress'), 0)
  t.is(s.get('berth_blob_upload_bytes_total'), 0, 'a redirected PATCH is no upload')
})

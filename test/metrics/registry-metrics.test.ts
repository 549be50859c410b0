import test from 'ava'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { parseListenAddress } from '../../src/config/values.js'
import type { Exchange } from '../../src/http/exchange.js'
import { silentLogger } from '../../src/log.js'
import { startMetricsListener } from '../../src/metrics/listener.js'
import { RegistryMetrics } from '../../src/metrics/registry-metrics.js'

/** The fields `record` reads, as an engine-handled (or edge-refused) exchange would have them. */
function exchange(fields: { method: string; path: string; status: number; route?: string; repository?: string; received?: number; sent?: number }): Exchange {
  return {
    req: { method: fields.method },
    res: { statusCode: fields.status },
    path: fields.path,
    route: fields.route,
    repository: fields.repository,
    meter: { received: fields.received ?? 0, sent: fields.sent ?? 0 },
  } as unknown as Exchange
}

/** `name{labels} value` lines of the exposition, as a map. */
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

test('requests are counted by code, handler (distribution names) and method; bytes and latency recorded', async t => {
  const metrics = new RegistryMetrics({ processMetrics: false })
  metrics.record(exchange({ method: 'GET', path: '/v2/a/manifests/1', route: 'manifest', repository: 'a', status: 200, sent: 500 }), 0.002)
  metrics.record(exchange({ method: 'GET', path: '/v2/a/manifests/1', route: 'manifest', repository: 'a', status: 200, sent: 500 }), 0.004)
  metrics.record(exchange({ method: 'PATCH', path: '/v2/a/blobs/uploads/x', route: 'upload', status: 202, received: 1000 }), 0.1)
  metrics.record(exchange({ method: 'POST', path: '/v2/a/blobs/uploads/', route: 'upload-start', status: 202 }), 0.001)
  const s = await samples(metrics)
  t.is(s.get('registry_http_requests_total{code="200",handler="manifest",method="GET"}'), 2)
  t.is(s.get('registry_http_requests_total{code="202",handler="blob_upload_chunk",method="PATCH"}'), 1)
  t.is(s.get('registry_http_requests_total{code="202",handler="blob_upload",method="POST"}'), 1)
  t.is(s.get('registry_http_request_duration_seconds_count{handler="manifest",method="GET"}'), 2)
  t.is(s.get('registry_http_request_duration_seconds_bucket{le="0.0025",handler="manifest",method="GET"}'), 1)
  t.is(s.get('registry_http_response_size_bytes_sum{handler="manifest"}'), 1000)
  t.is(s.get('registry_http_request_size_bytes_sum{handler="blob_upload_chunk"}'), 1000)
  t.is(s.get('berth_blob_upload_bytes_total'), 1000)
  t.is(s.get('berth_manifest_pulls_total'), 2)
  t.is(s.get('berth_manifest_pushes_total'), 0)
})

test('requests the engine did not route are named from the path, never labelled with it', async t => {
  const metrics = new RegistryMetrics({ processMetrics: false })
  metrics.record(exchange({ method: 'GET', path: '/v2/', status: 401 }), 0.001)
  metrics.record(exchange({ method: 'PUT', path: '/v2/secret/name/manifests/v1', status: 401 }), 0.001)
  metrics.record(exchange({ method: 'GET', path: '/some/random/path', status: 404 }), 0.001)
  metrics.record(exchange({ method: 'BREW', path: '/v2/', status: 405 }), 0.001)
  const s = await samples(metrics)
  t.is(s.get('registry_http_requests_total{code="401",handler="base",method="GET"}'), 1)
  t.is(s.get('registry_http_requests_total{code="401",handler="manifest",method="PUT"}'), 1)
  t.is(s.get('registry_http_requests_total{code="404",handler="other",method="GET"}'), 1)
  t.is(s.get('registry_http_requests_total{code="405",handler="base",method="other"}'), 1)
  const { body } = await metrics.exposition()
  t.false(body.includes('secret') || body.includes('random') || body.includes('BREW'))
  t.is(s.get('berth_manifest_pushes_total'), 0, 'a refused PUT is not a push')
})

test('repository labels are opt-in and bounded', async t => {
  const off = new RegistryMetrics({ processMetrics: false })
  off.record(exchange({ method: 'PUT', path: '/v2/a/manifests/1', route: 'manifest', repository: 'a', status: 201 }), 0.01)
  t.is((await samples(off)).get('berth_manifest_pushes_total'), 1)

  const on = new RegistryMetrics({ processMetrics: false, repositoryLabels: true, maxRepositories: 2 })
  for (const repository of ['a', 'b', 'c', 'd', 'a'])
    on.record(exchange({ method: 'PUT', path: `/v2/${repository}/manifests/1`, route: 'manifest', repository, status: 201 }), 0.01)
  on.record(exchange({ method: 'GET', path: '/v2/b/manifests/1', route: 'manifest', repository: 'b', status: 200 }), 0.01)
  on.record(exchange({ method: 'HEAD', path: '/v2/b/manifests/1', route: 'manifest', repository: 'b', status: 200 }), 0.01)
  const s = await samples(on)
  t.is(s.get('berth_manifest_pushes_total{repository="a"}'), 2)
  t.is(s.get('berth_manifest_pushes_total{repository="b"}'), 1)
  t.is(s.get('berth_manifest_pushes_total{repository="_other"}'), 2)
  t.is(s.get('berth_manifest_pushes_total{repository="c"}'), undefined)
  t.is(s.get('berth_manifest_pulls_total{repository="b"}'), 1, 'HEAD is not a pull')
})

test('logins, garbage collection, purges, certificate and ACME state', async t => {
  const now = Date.parse('2026-12-01T00:00:00Z')
  const metrics = new RegistryMetrics({ processMetrics: false, now: () => now })
  metrics.loginFailed()
  metrics.loginFailed()
  metrics.loginThrottled()
  metrics.accessDenied('denied')
  metrics.accessDenied('anonymous')
  metrics.accessDenied('anonymous')
  metrics.gcCompleted({ bytesFreed: 4096, startedAt: new Date(now), finishedAt: new Date(now + 2500) })
  metrics.uploadsPurgedCount(3)
  metrics.uploadsPurgedCount(0)
  metrics.quotaRefused({ quota: 'ci/**', stage: 'push' })
  metrics.quotaRefused({ quota: 'ci/**', stage: 'push' })
  metrics.quotaRefused({ quota: '**', stage: 'upload' })
  let notAfter: Date | undefined = new Date(now + 20 * 86400_000)
  metrics.watchCertificate({ current: () => (notAfter === undefined ? undefined : { notAfter }) })
  metrics.watchAcme({ status: () => ({ certificate: { renewalAt: '2026-12-10T00:00:00Z' } }) })
  metrics.acmeOrder('issued')
  metrics.watchDisk(process.cwd())
  let s = await samples(metrics)
  t.is(s.get('berth_auth_failed_logins_total'), 2)
  t.is(s.get('berth_auth_throttled_requests_total'), 1)
  t.is(s.get('berth_access_denied_requests_total{reason="denied"}'), 1)
  t.is(s.get('berth_access_denied_requests_total{reason="anonymous"}'), 2)
  t.is(s.get('berth_gc_runs_total'), 1)
  t.is(s.get('berth_gc_duration_seconds_sum'), 2.5)
  t.is(s.get('berth_gc_freed_bytes_total'), 4096)
  t.is(s.get('berth_uploads_purged_total'), 3)
  t.is(s.get('berth_quota_refusals_total{quota="ci/**",stage="push"}'), 2)
  t.is(s.get('berth_quota_refusals_total{quota="**",stage="upload"}'), 1)
  t.is(s.get('berth_tls_certificate_expiry_seconds'), 20 * 86400)
  t.is(s.get('berth_tls_certificate_not_after_timestamp_seconds'), (now + 20 * 86400_000) / 1000)
  t.is(s.get('berth_acme_next_renewal_timestamp_seconds'), Date.parse('2026-12-10T00:00:00Z') / 1000)
  t.is(s.get('berth_acme_orders_total{result="issued"}'), 1)
  t.is(s.get('berth_acme_orders_total{result="failed"}'), 0)
  t.true(s.get('berth_storage_free_bytes')! > 0)
  t.true(s.get('berth_storage_size_bytes')! >= s.get('berth_storage_free_bytes')!)
  notAfter = undefined
  s = await samples(metrics)
  t.is(s.get('berth_tls_certificate_expiry_seconds'), 0, 'no certificate served reads as expired')
})

test('repositories and, with repository labels, their sizes come from the index at scrape time', async t => {
  const index = {
    listRepositories: (query: { limit?: number }) =>
      Promise.resolve({
        total: 3,
        items: [
          { name: 'big/app', size: 3000 },
          { name: 'mid/app', size: 2000 },
          { name: 'small/app', size: 1000 },
        ].slice(0, query.limit ?? 3),
      }),
  }
  const plain = new RegistryMetrics({ processMetrics: false })
  plain.watchRepositories(index)
  const s = await samples(plain)
  t.is(s.get('berth_repositories'), 3)
  t.false(
    [...s.keys()].some(key => key.startsWith('berth_repository_size_bytes')),
    'no per-repository series without repository labels',
  )
  const labelled = new RegistryMetrics({ processMetrics: false, repositoryLabels: true, maxRepositories: 2 })
  labelled.watchRepositories(index)
  const l = await samples(labelled)
  t.is(l.get('berth_repository_size_bytes{repository="big/app"}'), 3000)
  t.is(l.get('berth_repository_size_bytes{repository="mid/app"}'), 2000)
  t.is(l.get('berth_repository_size_bytes{repository="small/app"}'), undefined, 'only the largest maxRepositories')
  const stuck = new RegistryMetrics({ processMetrics: false })
  stuck.watchRepositories({ listRepositories: () => new Promise(() => {}) })
  t.is((await samples(stuck)).get('berth_repositories'), 0, 'a scrape does not wait for an index still loading')
})

test('the step counts uploads in progress until the response closes', async t => {
  const metrics = new RegistryMetrics({ processMetrics: false })
  let release!: () => void
  const server = http.createServer((req, res) => {
    const path = req.url ?? '/'
    const ex = { req, res, path, route: undefined, repository: undefined, meter: { received: 0, sent: 0 } } as unknown as Exchange
    void metrics.step(ex, async () => {
      if (req.method === 'PATCH') await new Promise<void>(resolve => (release = resolve))
      res.writeHead(202).end()
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const port = (server.address() as AddressInfo).port
  const patch = fetch(`http://127.0.0.1:${port}/v2/a/blobs/uploads/u1`, { method: 'PATCH', body: 'x' })
  while ((await samples(metrics)).get('berth_blob_uploads_in_progress') !== 1) await new Promise(resolve => setTimeout(resolve, 5))
  release()
  t.is((await patch).status, 202)
  while ((await samples(metrics)).get('berth_blob_uploads_in_progress') !== 0) await new Promise(resolve => setTimeout(resolve, 5))
  t.is((await samples(metrics)).get('registry_http_requests_total{code="202",handler="blob_upload_chunk",method="PATCH"}'), 1)
})

test('the listener serves GET /metrics in the text format and 404 elsewhere', async t => {
  const metrics = new RegistryMetrics()
  const listener = await startMetricsListener(metrics, { port: 0, host: '127.0.0.1' }, silentLogger)
  t.teardown(() => listener.close())
  const response = await fetch(`${listener.url}/metrics`)
  t.is(response.status, 200)
  t.regex(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
  const body = await response.text()
  t.regex(body, /^# HELP registry_http_requests_total /m)
  t.regex(body, /^nodejs_eventloop_lag_seconds /m)
  t.regex(body, /^process_resident_memory_bytes /m)
  t.regex(body, /^nodejs_heap_size_used_bytes /m)
  t.is((await fetch(`${listener.url}/v2/`)).status, 404)
  t.is((await fetch(`${listener.url}/metrics`, { method: 'POST' })).status, 404)
})

test('listen addresses: a bare port is loopback; host:port and [v6]:port as given', t => {
  t.deepEqual(parseListenAddress('9100'), { port: 9100, host: '127.0.0.1' })
  t.deepEqual(parseListenAddress('0.0.0.0:9100'), { port: 9100, host: '0.0.0.0' })
  t.deepEqual(parseListenAddress('[::1]:9100'), { port: 9100, host: '::1' })
  t.deepEqual(parseListenAddress('localhost:9100'), { port: 9100, host: 'localhost' })
})

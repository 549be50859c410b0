/**
 * Metrics as an operator sees them: Berth in HTTPS mode (test PKI, one htpasswd user) with
 * `--metrics-listen`, a real Prometheus 2.42 (Debian's `prometheus`) on loopback scraping it every
 * second, skopeo pushing and pulling an image. Prometheus's query API must then show the push, the
 * blob bytes both ways, the failed login, storage driver timings and the certificate's time to expiry; `promtool check
 * metrics` must accept the raw output. The shipped alert rules pass `promtool check rules`, and every
 * query of the shipped Grafana dashboard is accepted by that Prometheus.
 */
import test from 'ava'
import { X509Certificate } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import https from 'node:https'
import path from 'node:path'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { REPO_ROOT, startBerth, type Berth } from '../helpers/berth.js'
import { OciLayout } from '../helpers/images.js'
import { freePort, makeTempDir, removeDir, run, startDaemon, waitFor, type Daemon } from '../helpers/procs.js'
import { copy } from '../helpers/skopeo.js'
import { createTestPki, type TestPki } from '../helpers/tls.js'

const PROMETHEUS = '/usr/bin/prometheus'
const PROMTOOL = '/usr/bin/promtool'

let work: string | undefined
let berth: Berth | undefined
let prometheus: Daemon | undefined

test.after.always(async () => {
  await prometheus?.stop()
  await berth?.stop()
  if (work) await removeDir(work)
})

async function startPrometheus(dir: string, target: string): Promise<{ daemon: Daemon; url: string }> {
  const port = await freePort()
  const config = path.join(dir, 'prometheus.yml')
  await writeFile(
    config,
    ['global:', '  scrape_interval: 1s', 'scrape_configs:', '  - job_name: berth', '    static_configs:', `      - targets: ['${target}']`, ''].join('\n'),
  )
  const daemon = startDaemon('prometheus', PROMETHEUS, [
    `--config.file=${config}`,
    `--storage.tsdb.path=${path.join(dir, 'tsdb')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ])
  const url = `http://127.0.0.1:${port}`
  await waitFor('prometheus to be ready', async () => (await fetch(`${url}/-/ready`).catch(() => undefined))?.status === 200, { timeoutMs: 60_000 })
  return { daemon, url }
}

/** The value of an instant query that returns one sample; undefined while it returns none. */
async function queryOne(prometheusUrl: string, query: string): Promise<number | undefined> {
  const response = await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(query)}`)
  const json = (await response.json()) as { status: string; data: { result: { value: [number, string] }[] } }
  if (json.status !== 'success' || json.data.result.length === 0) return undefined
  return Number(json.data.result[0]!.value[1])
}

/** Waits until Prometheus has scraped a value that satisfies `ok`, and returns it. */
function scraped(prometheusUrl: string, query: string, ok: (value: number) => boolean): Promise<number> {
  return waitFor(
    `Prometheus to show ${query}`,
    async () => {
      const value = await queryOne(prometheusUrl, query)
      return value !== undefined && ok(value) ? value : undefined
    },
    { timeoutMs: 30_000 },
  )
}

function getV2(url: string, pki: TestPki, credentials: string): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const request = https.get(`${url}/v2/`, { ca: pki.ca.cert, auth: credentials }, response => {
      response.resume()
      resolve(response.statusCode)
    })
    request.on('error', reject)
  })
}

test('a real Prometheus scrapes the push, the bytes, a failed login and the certificate expiry', async t => {
  work = await makeTempDir('e2e-metrics')
  const pki = await createTestPki(path.join(work, 'pki'))
  const htpasswd = path.join(work, 'htpasswd')
  await writeFile(htpasswd, `alice:${hashPassword('wonderland', 5)}\n`)
  const metricsPort = await freePort()
  const metricsTarget = `127.0.0.1:${metricsPort}`
  berth = await startBerth({
    datadir: path.join(work, 'datadir'),
    https: { domain: 'localhost', certFile: pki.certPath, keyFile: pki.keyPath, htpasswd },
    args: ['--metrics-listen', metricsTarget],
  })
  const started = await startPrometheus(work, metricsTarget)
  prometheus = started.daemon
  const promUrl = started.url
  await scraped(promUrl, 'up{job="berth"}', value => value === 1)

  const source = await OciLayout.create(path.join(work, 'source'))
  const image = await source.addImage({ tag: 'v1', layers: [1024 * 1024, 3000] })
  const blobBytes = image.blobs.reduce((sum, blob) => sum + blob.size, 0)
  const access = { certDir: pki.certDir, creds: 'alice:wonderland' }
  const remote = `docker://localhost:${berth.port}/metrics/app:v1`
  await copy(source.ref('v1'), remote, { dest: access })
  const out = await OciLayout.create(path.join(work, 'out'))
  await copy(remote, out.ref('v1'), { src: access })
  t.is(await getV2(berth.url, pki, 'alice:wrong'), 401)

  t.is(await scraped(promUrl, 'berth_manifest_pushes_total', value => value >= 1), 1, 'one manifest pushed')
  t.true((await scraped(promUrl, 'berth_manifest_pulls_total', value => value >= 1)) >= 1)
  t.is(await scraped(promUrl, 'berth_blob_upload_bytes_total', value => value >= blobBytes), blobBytes, 'upload bytes are the blobs pushed')
  t.is(
    await scraped(promUrl, 'sum(registry_http_response_size_bytes_sum{handler="blob"})', value => value >= blobBytes),
    blobBytes,
    'blob bytes sent are the blobs pulled',
  )
  t.is(await scraped(promUrl, 'sum(registry_http_requests_total{handler="manifest",method="PUT",code="201"})', value => value >= 1), 1)
  t.is(await scraped(promUrl, 'berth_auth_failed_logins_total', value => value >= 1), 1)
  t.true(
    (await scraped(promUrl, 'sum(registry_storage_action_seconds_count{driver="filesystem",action="PutContent"})', value => value >= 1)) >= 1,
    'storage driver calls are timed',
  )
  t.true((await scraped(promUrl, 'sum(registry_storage_action_seconds_count{driver="filesystem",action="Reader"})', value => value >= 1)) >= 1)

  const leaf = new X509Certificate(await readFile(pki.certPath))
  const expectedExpiry = (Date.parse(leaf.validTo) - Date.now()) / 1000
  const expiry = await scraped(promUrl, 'berth_tls_certificate_expiry_seconds', value => value > 0)
  t.true(Math.abs(expiry - expectedExpiry) < 120, `certificate expiry ${expiry} s, expected about ${expectedExpiry} s`)
  t.true((await scraped(promUrl, 'berth_storage_free_bytes', value => value > 0)) > 0)
  t.true((await scraped(promUrl, 'nodejs_heap_size_used_bytes', value => value > 0)) > 0)

  const raw = await (await fetch(`http://${metricsTarget}/metrics`)).text()
  const check = await run(PROMTOOL, ['check', 'metrics'], { input: raw, allowFailure: true })
  t.is(check.exitCode, 0, `promtool check metrics: ${check.stdout}${check.stderr}`)
  t.is((await fetch(`http://${metricsTarget}/v2/`)).status, 404, 'the metrics listener serves nothing else')

  const rules = await run(PROMTOOL, ['check', 'rules', path.join(REPO_ROOT, 'src', 'ops', 'berth-alerts.yml')], { allowFailure: true })
  t.is(rules.exitCode, 0, `promtool check rules: ${rules.stdout}${rules.stderr}`)
  const dashboard = JSON.parse(await readFile(path.join(REPO_ROOT, 'src', 'ops', 'grafana-dashboard.json'), 'utf8')) as {
    panels: { title: string; targets: { expr: string }[] }[]
  }
  for (const panel of dashboard.panels) {
    for (const { expr } of panel.targets) {
      const query = expr.replaceAll('$job', '.+').replaceAll('$__rate_interval', '1m').replaceAll('$__range', '1h')
      const response = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(query)}`)
      t.is(response.status, 200, `dashboard panel "${panel.title}": ${query}: ${await response.text()}`)
    }
  }
})

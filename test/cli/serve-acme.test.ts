/**
 * `berth serve --acme` from the command line against Debian's pebble (a real ACME server, validation
 * on): the CLI wiring of the ACME provider, the HTTP-01 answers on --http-port, the certificate
 * under --certs, and the start-up lines a user reads.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { request } from 'node:https'
import path from 'node:path'
import test from 'ava'
import { issuerKey } from '../../src/edge/tls/cert-store.js'
import { MAIN } from '../helpers/berth.js'
import { startPebble, type Pebble } from '../helpers/pebble.js'
import { freePort, makeTempDir, removeDir, startDaemon, waitFor, type Daemon } from '../helpers/procs.js'

let pebble: Pebble | undefined
let berth: Daemon | undefined
let work: string | undefined

test.after.always(async () => {
  await berth?.stop()
  await pebble?.dispose()
  if (work) await removeDir(work)
})

function getV2(port: number, ca: string): Promise<{ status: number; issuer: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', servername: 'localhost', port, path: '/v2/', ca, timeout: 5000 }, response => {
      response.resume()
      const certificate = (response.socket as import('node:tls').TLSSocket).getPeerCertificate()
      resolve({ status: response.statusCode ?? 0, issuer: String(certificate.issuer?.CN ?? '') })
    })
    req.on('error', reject)
    req.end()
  })
}

test('berth serve --acme gets a certificate from an ACME CA and serves it', async t => {
  work = await makeTempDir('cli-acme')
  const httpPort = await freePort()
  const httpsPort = await freePort()
  pebble = await startPebble({ httpPort })
  const directoryCa = path.join(work, 'pebble-listener.pem')
  await writeFile(directoryCa, pebble.listenerCa)

  let output = ''
  berth = startDaemon(
    'berth-acme',
    process.execPath,
    [
      '--import',
      'tsx',
      MAIN,
      'serve',
      '--domain',
      'localhost',
      '--acme',
      '--acme-agree-tos',
      '--acme-email',
      'ops@example.com',
      '--acme-directory',
      pebble.directoryUrl,
      '--host',
      '127.0.0.1',
      '--https-port',
      String(httpsPort),
      '--http-port',
      String(httpPort),
      '--datadir',
      path.join(work, 'datadir'),
      '--certs',
      path.join(work, 'certs'),
      '--allow-anonymous', // about certificates: the probes are anonymous
    ],
    { env: { NODE_EXTRA_CA_CERTS: directoryCa }, onOutput: text => (output += text) },
  )
  await waitFor('start-up summary', async () => output.includes('Berth registry is running'), { timeoutMs: 90_000, daemon: berth })
  t.regex(output, /certificate +ACME https:\/\/127\.0\.0\.1:\d+\/dir/)
  t.regex(output, new RegExp(`log in|push +docker tag <image> localhost:${httpsPort}/<name>`))

  const root = await pebble.rootCertificate()
  const served = await waitFor('the ACME certificate to be served', async () => getV2(httpsPort, root).catch(() => undefined), {
    timeoutMs: 60_000,
    intervalMs: 500,
    daemon: berth,
  })
  t.is(served.status, 200, 'HTTPS /v2/ answers with a certificate that chains to the ACME root')
  t.regex(served.issuer, /Pebble/i)
  t.is(pebble.orderCount(), 1)
  const stored = await readFile(path.join(work, 'certs', 'certificates', issuerKey(pebble.directoryUrl), 'localhost', 'localhost.crt'), 'utf8')
  t.regex(stored, /^-----BEGIN CERTIFICATE-----/, 'the chain is kept under --certs')
})

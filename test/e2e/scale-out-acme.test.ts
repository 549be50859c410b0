/**
 * Two `berth serve --acme --storage s3` instances on one bucket, started at the same moment, behind
 * a round-robin balancer on the port the ACME CA (Debian's pebble, validation on) sends HTTP-01
 * requests to: the certificate store and its lock live in the bucket, so there is one order, and
 * both instances serve the same certificate, whichever of them the CA's validation reached.
 */
import { type X509Certificate } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import http from 'node:http'
import { request } from 'node:https'
import path from 'node:path'
import type { TLSSocket } from 'node:tls'
import anyTest, { type TestFn } from 'ava'
import { MAIN } from '../helpers/berth.js'
import { startS3, uniquePrefix } from '../helpers/ceph.js'
import { startPebble } from '../helpers/pebble.js'
import { freePort, makeTempDir, removeDir, startDaemon, waitFor, type Daemon } from '../helpers/procs.js'
import { forward, stopAfterAll } from '../helpers/scale-out.js'

const test = anyTest as TestFn
/** Stops whatever did start, newest first, also when the test failed halfway. */
const started = stopAfterAll(test)

/** The serial number of the certificate served on `port` (for `localhost`), once it chains to `ca`. */
function servedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', servername: 'localhost', port, path: '/v2/', ca, timeout: 5000 }, response => {
      response.resume()
      const certificate = (response.socket as TLSSocket).getPeerX509Certificate() as X509Certificate | undefined
      if (certificate === undefined) reject(new Error('no certificate'))
      else resolve(certificate.serialNumber)
    })
    req.on('error', reject)
    req.end()
  })
}

function get(port: number, pathname: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: pathname, agent: false }, response => {
        let body = ''
        response.on('data', chunk => (body += chunk))
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }))
      })
      .on('error', reject)
  })
}

async function getOnceListening(port: number, pathname: string): Promise<{ status: number; body: string }> {
  for (let attempt = 0; ; attempt++) {
    const result = await get(port, pathname).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ECONNREFUSED') return { status: 0, body: '' }
      return undefined
    })
    // Refused: not listening yet. Once listening, its first answer counts: a token it does not hold
    // is looked up in the bucket, where the order stored it before the CA was told to validate.
    if (result !== undefined) return result
    if (attempt >= 50) return result ?? { status: 0, body: '' }
    await new Promise(resolve => setTimeout(resolve, 200))
  }
}

/**
 * Round robin per request over the instances' HTTP ports. A CA validation request
 * (`/.well-known/acme-challenge/<token>`) is put to every instance, and which of them could
 * answer is recorded: the test then knows the instance that did not place the order answered too.
 */
async function startBalancer(
  port: number,
  targets: number[],
  answers: { instance: number; status: number }[],
): Promise<{ server: http.Server; settled: () => Promise<unknown> }> {
  let next = 0
  const probes: Promise<unknown>[] = []
  const server = http.createServer((req, res) => {
    if (req.url?.startsWith('/.well-known/acme-challenge/')) {
      // The CA gets the first 200 at once. An instance that is still starting (the other one came
      // up first and ordered at once, on a busy machine) is asked once it listens, in the
      // background: the question is whether it can answer from the bucket, not how fast it started.
      let answered = false
      const reply = (status: number, body: string) => {
        if (answered) return
        answered = true
        res.writeHead(status, { 'content-type': 'text/plain' })
        res.end(body)
      }
      const all = targets.map((target, instance) =>
        getOnceListening(target, req.url as string).then(result => {
          answers.push({ instance, status: result.status })
          if (result.status === 200) reply(200, result.body)
        }),
      )
      probes.push(...all)
      void Promise.all(all).then(() => reply(404, ''))
      return
    }
    forward(req, res, { host: '127.0.0.1', port: targets[next++ % targets.length] as number })
  })
  await new Promise<void>(resolve => server.listen(port, '127.0.0.1', resolve))
  return { server, settled: () => Promise.all(probes) }
}

test('two instances on one bucket place one ACME order and serve the same certificate', async t => {
  const s3 = await startS3()
  started.push(() => s3.stop())
  const work = await makeTempDir('scale-out-acme')
  started.push(() => removeDir(work))
  const validationPort = await freePort()
  const pebble = await startPebble({ httpPort: validationPort })
  started.push(() => pebble.dispose())
  const directoryCa = path.join(work, 'pebble-listener.pem')
  await writeFile(directoryCa, pebble.listenerCa)

  const prefix = uniquePrefix('acme')
  const instances: { https: number; http: number; daemon: Daemon; output: () => string }[] = []
  for (let i = 0; i < 2; i++) {
    const httpsPort = await freePort()
    const httpPort = await freePort()
    const daemon = startDaemon(
      `berth-acme-${i}`,
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
        path.join(work, `datadir-${i}`),
        '--certs',
        path.join(work, `certs-${i}`),
        '--storage',
        's3',
        '--s3-endpoint',
        s3.endpoint,
        '--s3-bucket',
        s3.bucket,
        '--s3-prefix',
        prefix,
        '--allow-anonymous', // about the shared certificate: the probes are anonymous
      ],
      { env: { ...s3.env, NODE_EXTRA_CA_CERTS: directoryCa } },
    )
    started.push(() => daemon.stop())
    instances.push({ https: httpsPort, http: httpPort, daemon, output: () => daemon.output() })
  }
  const answers: { instance: number; status: number }[] = []
  const balancer = await startBalancer(
    validationPort,
    instances.map(i => i.http),
    answers,
  )
  started.push(
    () =>
      new Promise(resolve => {
        balancer.server.closeAllConnections()
        balancer.server.close(resolve)
      }),
  )

  const root = await pebble.rootCertificate()
  const serials: string[] = []
  for (const instance of instances) {
    serials.push(
      await waitFor(`the ACME certificate on :${instance.https}`, async () => servedSerial(instance.https, root).catch(() => undefined), {
        timeoutMs: 90_000,
        intervalMs: 500,
        daemon: instance.daemon,
      }),
    )
  }
  t.is(serials[0], serials[1], 'both instances serve the same certificate')
  t.is(pebble.orderCount(), 1, 'one order for the two instances')
  // The instance that placed the order logged "certificate stored"; the other one answered the
  // CA's challenge from the bucket all the same.
  const orderers = instances.map((instance, i) => (instance.output().includes('certificate stored') ? i : -1)).filter(i => i >= 0)
  t.is(orderers.length, 1, 'one instance ordered and stored the certificate')
  const other = 1 - (orderers[0] as number)
  await balancer.settled()
  t.true(
    answers.some(a => a.instance === other && a.status === 200),
    `instance ${other} answered the challenge too: ${JSON.stringify(answers)}`,
  )
})

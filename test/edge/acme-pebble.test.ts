/**
 * Automatic HTTPS against a real ACME server: Debian's pebble on loopback, validation on.
 * The edge (startEdge) answers pebble's HTTP-01 requests on its HTTP port; the served chain must
 * verify against pebble's root. Serial: the tests share one pebble and count its orders.
 */
import test from 'ava'
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { X509Certificate } from 'node:crypto'
import type { TLSSocket } from 'node:tls'
import { startEdge, type Edge } from '../../src/edge/edge.js'
import { EDGE_DEFAULTS } from '../helpers/edge.js'
import { createLogger, type Logger } from '../../src/log.js'
import { AcmeCertificateProvider, type AcmeProviderOptions, type CertificateMeta } from '../../src/edge/tls/acme-provider.js'
import { AcmeError } from '../../src/edge/tls/acme-options.js'
import { certKeys, issuerKey } from '../../src/edge/tls/cert-store.js'
import { freePort, startAcmeFront, startPebble, type Pebble } from '../helpers/pebble.js'
import { ariCertId } from '../../src/edge/tls/acme-ari.js'

let pebble: Pebble
let httpPort: number
let upstream: Server
let upstreamUrl: string
const dirs: string[] = []

test.before(async () => {
  httpPort = await freePort()
  pebble = await startPebble({ httpPort })
  upstream = createServer((req, res) => {
    res.setHeader('content-type', 'text/plain')
    res.end(`upstream saw ${req.method} ${req.url}`)
  })
  await new Promise<void>(resolve => upstream.listen(0, '127.0.0.1', resolve))
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`
})

test.after.always(async () => {
  await pebble?.dispose()
  await new Promise(resolve => upstream?.close(resolve))
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

async function tempCerts(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-acme-'))
  dirs.push(dir)
  return join(dir, 'certs')
}

function collectingLogger(lines: string[]): Logger {
  return createLogger({
    level: 'debug',
    write: line => {
      lines.push(line)
      if (process.env['BERTH_TEST_LOG']) process.stderr.write(line + '\n')
    },
  })
}

function providerOptions(certsDir: string, logger: Logger, extra: Partial<AcmeProviderOptions> = {}): AcmeProviderOptions {
  return {
    domains: ['localhost'],
    directory: pebble.directoryUrl,
    email: 'me@example.com',
    agreeTos: true,
    certsDir,
    logger,
    httpPort,
    caCertificates: pebble.listenerCa,
    pollMinMs: 100,
    pollMaxMs: 500,
    lockOptions: { lockPollMs: 100, lockHeartbeatMs: 500, lockStaleMs: 5_000 },
    ...extra,
  }
}

async function edgeWith(provider: AcmeCertificateProvider, logger: Logger): Promise<Edge> {
  return startEdge({
    ...EDGE_DEFAULTS,
    mode: 'https',
    host: '127.0.0.1',
    httpPort,
    httpsPort: 0,
    domains: ['localhost'],
    certificate: provider,
    challenges: provider.challenges,
    upstream: { url: upstreamUrl },
    logger,
  })
}

interface Fetched {
  status: number
  body: string
  fingerprint: string
  localPort: number
}

/** GET over HTTPS to the edge as `localhost`, trusting only `ca`. */
function get(httpsUrl: string, ca: string, agent?: HttpsAgent): Promise<Fetched> {
  const url = new URL(httpsUrl)
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: url.port,
        path: '/v2/',
        servername: 'localhost',
        headers: { host: `localhost:${url.port}` },
        ca,
        ...(agent ? { agent } : { agent: false }),
      },
      res => {
        let body = ''
        // Read the socket now: a keep-alive agent takes it back once the body ends.
        const socket = res.socket as TLSSocket
        const fingerprint = socket.getPeerCertificate().fingerprint256
        const localPort = socket.localPort ?? 0
        res.setEncoding('utf8').on('data', (c: string) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, fingerprint, localPort }))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

async function readMeta(certsDir: string, directoryUrl = pebble.directoryUrl): Promise<CertificateMeta> {
  return JSON.parse(await readFile(join(certsDir, certKeys.siteMeta(issuerKey(directoryUrl), 'localhost')), 'utf8')) as CertificateMeta
}

function fingerprintOf(pem: string): string {
  return new X509Certificate(pem).fingerprint256
}

async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 50))
  }
}

test.serial(
  "issues a certificate over HTTP-01 through the edge, serves a chain that verifies against pebble's root, and reuses it after a restart",
  async t => {
    const certsDir = await tempCerts()
    const lines: string[] = []
    const logger = collectingLogger(lines)
    const ordersBefore = pebble.orderCount()
    const provider = new AcmeCertificateProvider(providerOptions(certsDir, logger))
    const edge = await edgeWith(provider, logger)
    t.teardown(() => edge.close())

    const started = Date.now()
    const certificate = await provider.ready()
    t.log(`issued in ${Date.now() - started} ms`)
    t.deepEqual(certificate.names, ['localhost'])
    t.is(pebble.orderCount(), ordersBefore + 1)
    // Give the edge's onChange a tick, then a client that trusts only pebble's root must accept the chain.
    const root = await pebble.rootCertificate()
    await waitFor(async () => (await get(edge.urls.https!, root).catch(() => undefined))?.status === 200, 30_000, 'HTTPS to come up')
    const response = await get(edge.urls.https!, root)
    t.is(response.status, 200)
    t.is(response.body, 'upstream saw GET /v2/')
    t.is(response.fingerprint, fingerprintOf(certificate.cert))
    // A client with some other CA must fail: the chain really is pebble's.
    await t.throwsAsync(get(edge.urls.https!, pebble.listenerCa))

    // What the user reads in the log, in order.
    const issuance = lines.filter(line =>
      /HTTPS is not up yet|ACME account registered|ACME order placed|self-check|challenge answered|validated by the CA|certificate stored|certificate obtained/.test(
        line,
      ),
    )
    t.log(issuance.join('\n'))
    for (const pattern of [
      /HTTPS is not up yet/,
      /ACME account registered/,
      /ACME order placed/,
      /self-check of the HTTP-01 challenge passed/,
      /ACME challenge answered on the HTTP port/,
      /ACME challenge validated by the CA/,
      /certificate stored/,
      /nextRenewal=/,
    ]) {
      t.true(
        lines.some(line => pattern.test(line)),
        `log has ${pattern}`,
      )
    }
    t.false(
      lines.some(line => /BEGIN .*PRIVATE KEY/.test(line)),
      'no key material in the log',
    )

    // Layout and permissions: CA host in the path, folders 0700, keys 0600.
    const issuer = issuerKey(pebble.directoryUrl)
    t.regex(issuer, /^127\.0\.0\.1-\d+-dir$/)
    for (const [key, mode] of [
      [certKeys.accountKey(issuer), 0o600],
      [certKeys.siteKey(issuer, 'localhost'), 0o600],
      [certKeys.siteCert(issuer, 'localhost'), 0o600],
      [certKeys.siteFolder(issuer, 'localhost'), 0o700],
      ['acme', 0o700],
    ] as const) {
      t.is((await stat(join(certsDir, key))).mode & 0o777, mode, key)
    }
    const meta = await readMeta(certsDir)
    t.deepEqual(meta.names, ['localhost'])
    t.is(meta.retry, undefined)

    // Restart: a second provider on the same folder serves the stored certificate at once, no new order.
    await edge.close()
    const ordersAfterIssue = pebble.orderCount()
    const restartLines: string[] = []
    const again = new AcmeCertificateProvider(providerOptions(certsDir, collectingLogger(restartLines)))
    const edge2 = await edgeWith(again, collectingLogger(restartLines))
    t.teardown(() => edge2.close())
    t.is(again.current()?.cert, certificate.cert)
    const afterRestart = await get(edge2.urls.https!, root)
    t.is(afterRestart.fingerprint, response.fingerprint)
    await new Promise(r => setTimeout(r, 500)) // let the maintenance loop run once
    t.is(pebble.orderCount(), ordersAfterIssue, 'a restart with a valid stored certificate places no order')
    t.true(restartLines.some(line => /certificate loaded from storage/.test(line)))
  },
)

test.serial('forced renewal swaps the certificate for new connections while a keep-alive connection keeps working', async t => {
  const certsDir = await tempCerts()
  const logger = createLogger({ level: 'error', write: () => {} })
  const provider = new AcmeCertificateProvider(providerOptions(certsDir, logger))
  const edge = await edgeWith(provider, logger)
  t.teardown(() => edge.close())
  const first = await provider.ready()
  const root = await pebble.rootCertificate()
  await waitFor(async () => (await get(edge.urls.https!, root).catch(() => undefined))?.status === 200, 30_000, 'HTTPS to come up')

  const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const before = await get(edge.urls.https!, root, agent)
  t.is(before.fingerprint, fingerprintOf(first.cert))

  const changed = new Promise(resolve => provider.onChange(resolve))
  const renewed = await provider.renew()
  await changed
  t.not(fingerprintOf(renewed.cert), fingerprintOf(first.cert))

  // The open connection is the same socket and still works (it keeps the certificate it shook hands with).
  const sameSocket = await get(edge.urls.https!, root, agent)
  t.is(sameSocket.status, 200)
  t.is(sameSocket.localPort, before.localPort, 'the keep-alive connection was not dropped')
  t.is(sameSocket.fingerprint, before.fingerprint)
  // A new connection gets the new certificate.
  const fresh = await get(edge.urls.https!, root)
  t.is(fresh.fingerprint, fingerprintOf(renewed.cert))
})

test.serial('renews by itself when the clock reaches the last third of the lifetime', async t => {
  const certsDir = await tempCerts()
  const lines: string[] = []
  const logger = collectingLogger(lines)
  let offset = 0
  const provider = new AcmeCertificateProvider(providerOptions(certsDir, logger, { clock: { now: () => Date.now() + offset }, checkIntervalMs: 200 }))
  const edge = await edgeWith(provider, logger)
  t.teardown(() => edge.close())
  const first = await provider.ready()
  const orders = pebble.orderCount()
  await new Promise(r => setTimeout(r, 600))
  t.is(pebble.orderCount(), orders, 'nothing happens while the certificate is young')

  // Pebble 2.4 issues 5-year certificates: jump to 3/4 of the lifetime.
  const leaf = new X509Certificate(first.cert)
  const notBefore = Date.parse(leaf.validFrom)
  const notAfter = Date.parse(leaf.validTo)
  const changed = new Promise<{ cert: string }>(resolve => provider.onChange(resolve))
  offset = notBefore + (notAfter - notBefore) * 0.75 - Date.now()
  const renewed = await changed
  t.not(fingerprintOf(renewed.cert), fingerprintOf(first.cert))
  t.is(pebble.orderCount(), orders + 1)
  t.true(lines.some(line => /certificate renewal is due .*reason=lifetime/.test(line)))
  const root = await pebble.rootCertificate()
  await waitFor(async () => (await get(edge.urls.https!, root)).fingerprint === fingerprintOf(renewed.cert), 30_000, 'the renewed certificate to be served')
})

test.serial('CA down: the old certificate stays served, retries back off and the backoff survives a restart', async t => {
  const certsDir = await tempCerts()
  const lines: string[] = []
  const logger = collectingLogger(lines)
  // The second delay is an hour of the restarted provider's (injected) clock: the test moves that clock
  // on once pebble is back, so no wall-clock race decides whether the retry finds pebble up.
  const retryDelaysMs = [1_500, 3_600_000, 7_200_000]
  const provider = new AcmeCertificateProvider(providerOptions(certsDir, logger, { retryDelaysMs }))
  const edge = await edgeWith(provider, logger)
  t.teardown(() => edge.close())
  const first = await provider.ready()
  const root = await pebble.rootCertificate()
  await waitFor(async () => (await get(edge.urls.https!, root).catch(() => undefined))?.status === 200, 30_000, 'HTTPS to come up')

  await pebble.stop()
  t.teardown(async () => {
    if (!/Listening on/.test(pebble.log().split('Starting Pebble').pop() ?? '')) await pebble.restart()
  })
  const renewStarted = Date.now()
  const error = await t.throwsAsync(provider.renew(), { instanceOf: AcmeError })
  const renewEnded = Date.now()
  t.is(error?.code, 'CA_UNREACHABLE')
  t.regex(error?.message ?? '', /cannot reach the ACME server at https:\/\/127\.0\.0\.1:\d+\/dir: ECONNREFUSED/)
  t.is(provider.current()?.cert, first.cert, 'the old certificate is still current')
  t.is((await get(edge.urls.https!, root)).fingerprint, fingerprintOf(first.cert), 'and still served')
  const meta = await readMeta(certsDir)
  t.is(meta.retry?.failures, 1)
  const lastAttempt = Date.parse(meta.retry!.lastAttemptAt)
  const nextAttempt = Date.parse(meta.retry!.nextAttemptAt)
  // The first delay, counted from the failure, which happened inside the renew() call.
  t.true(
    lastAttempt >= renewStarted && nextAttempt - 1_500 >= lastAttempt && nextAttempt - 1_500 <= renewEnded,
    `next attempt ${meta.retry!.nextAttemptAt} is 1.5 s after the failure`,
  )
  t.true(lines.some(line => /ERROR could not obtain a certificate: cannot reach the ACME server.*still serving the current certificate/.test(line)))

  // A restarted Berth (clock says renewal is due) honours the persisted retry time instead of hammering the CA.
  await edge.close()
  const leaf = new X509Certificate(first.cert)
  const dueOffset = Date.parse(leaf.validFrom) + (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) * 0.75 - Date.now()
  const restartLines: string[] = []
  let shift = dueOffset
  const restarted = new AcmeCertificateProvider(
    providerOptions(certsDir, collectingLogger(restartLines), { retryDelaysMs, clock: { now: () => Date.now() + shift }, checkIntervalMs: 100 }),
  )
  // Once renewed, go back to real time, or the new certificate would be "due" too.
  restarted.onChange(() => {
    shift = 0
  })
  const edge2 = await edgeWith(restarted, collectingLogger(restartLines))
  t.teardown(() => edge2.close())
  t.is(restarted.current()?.cert, first.cert)
  // The shifted clock is years past nextAttemptAt, so it tries again: pebble is down → second failure, longer wait.
  await waitFor(async () => (await readMeta(certsDir)).retry?.failures === 2, 30_000, 'a second failure')
  const secondSeenAt = Date.now() + shift
  const second = await readMeta(certsDir)
  const secondNext = Date.parse(second.retry!.nextAttemptAt)
  const secondFailedAt = secondNext - retryDelaysMs[1]!
  t.true(
    secondFailedAt >= Date.parse(second.retry!.lastAttemptAt) && secondFailedAt <= secondSeenAt,
    `second wait is the second delay (next attempt ${second.retry!.nextAttemptAt})`,
  )
  const failures = () => restartLines.filter(line => /could not obtain a certificate/.test(line)).length
  const failuresLogged = failures()
  // The loop keeps looking (every 100 ms) and holds off until the retry time.
  const from = restartLines.length
  await waitFor(
    () => restartLines.slice(from).filter(line => /certificate renewal is waiting for its retry time/.test(line)).length >= 3,
    30_000,
    'the loop to hold off three times',
  )
  t.is(failures(), failuresLogged, 'no attempt before the retry time')
  t.is((await readMeta(certsDir)).retry?.failures, 2)

  // Pebble comes back (new root, no accounts), the clock reaches the retry time: the retry succeeds by itself.
  await pebble.restart()
  t.is(failures(), failuresLogged, 'still no attempt before the retry time')
  const changed = new Promise<{ cert: string }>(resolve => restarted.onChange(resolve))
  shift += retryDelaysMs[1]!
  const renewed = await changed
  t.not(fingerprintOf(renewed.cert), fingerprintOf(first.cert))
  t.true(Date.parse((await readMeta(certsDir)).obtainedAt!) >= secondNext, 'the successful attempt started at the retry time, not before')
  t.is((await readMeta(certsDir)).retry, undefined, 'retry state cleared after success')
  t.true(restartLines.some(line => /does not know our ACME account any more/.test(line)))
})

test.serial('two providers sharing one certs folder place one order; the one holding the HTTP port answers for the other', async t => {
  const certsDir = await tempCerts()
  const linesA: string[] = []
  const linesB: string[] = []
  const orders = pebble.orderCount()
  // B has no listener at all: whatever it orders, only A (behind the edge, on pebble's port) can answer.
  const b = new AcmeCertificateProvider(providerOptions(certsDir, collectingLogger(linesB)))
  t.teardown(() => b.stop())
  await b.start()
  await waitFor(
    async () => (await readdir(join(certsDir, 'locks')).catch(() => [])).some(name => name.startsWith('issue_cert')),
    30_000,
    'B to take the issue lock',
  )
  const a = new AcmeCertificateProvider(providerOptions(certsDir, collectingLogger(linesA)))
  const edge = await edgeWith(a, collectingLogger(linesA))
  t.teardown(() => edge.close())
  const [fromA, fromB] = await Promise.all([a.ready(), b.ready()])
  t.is(fromA.cert, fromB.cert)
  t.is(pebble.orderCount(), orders + 1, 'one order between them')
  t.true(
    linesB.some(line => /ACME order placed/.test(line)),
    'B ordered',
  )
  t.false(
    linesA.some(line => /ACME order placed/.test(line)),
    'A did not',
  )
  t.true(
    linesA.some(line => /ACME challenge answered on the HTTP port/.test(line)),
    "A answered B's challenge from the shared store",
  )
  t.true(linesA.some(line => /certificate renewed by another Berth process/.test(line)))
  t.deepEqual(await readdir(join(certsDir, 'acme', issuerKey(pebble.directoryUrl), 'challenges')), [], 'shared challenges are cleaned up')
})

test.serial('a closed HTTP port is reported in words a user can act on', async t => {
  const certsDir = await tempCerts()
  const lines: string[] = []
  // No edge at all: nothing listens on the HTTP port pebble validates against.
  const provider = new AcmeCertificateProvider(providerOptions(certsDir, collectingLogger(lines), { retryDelaysMs: [60_000] }))
  t.teardown(() => provider.stop())
  await provider.start()
  await waitFor(() => lines.some(line => /could not obtain a certificate/.test(line)), 60_000, 'the failure')
  const failure = lines.find(line => /could not obtain a certificate/.test(line)) ?? ''
  t.log(failure)
  t.regex(failure, /the CA could not validate localhost over HTTP-01/)
  t.regex(failure, /nothing answered on port \d+/)
  t.regex(failure, /open that port in the firewall/)
  t.regex(failure, /HTTPS stays down until a certificate is obtained/)
  t.true(lines.some(line => /WARN .*HTTPS is not up yet/.test(line)))
})

test.serial("ARI: when the CA's suggested window is already open, Berth renews (sending replaces) and keeps the new window", async t => {
  const certsDir = await tempCerts()
  const lines: string[] = []
  const logger = collectingLogger(lines)
  let firstCertId: string | undefined
  const hour = 3_600_000
  const front = await startAcmeFront(pebble, {
    renewalInfo: certId => {
      firstCertId ??= certId
      const now = Date.now()
      // The first certificate is to be replaced now (as before a mass revocation); its successor in a month.
      const [start, end] = certId === firstCertId ? [now - 2 * hour, now - hour] : [now + 720 * hour, now + 744 * hour]
      return {
        status: 200,
        body: { suggestedWindow: { start: new Date(start).toISOString(), end: new Date(end).toISOString() }, explanationURL: 'https://ca.example/incident' },
        headers: { 'retry-after': '21600' },
      }
    },
  })
  t.teardown(() => front.close())
  const provider = new AcmeCertificateProvider(providerOptions(certsDir, logger, { directory: front.directoryUrl, checkIntervalMs: 200 }))
  const changes: string[] = []
  provider.onChange(certificate => changes.push(certificate.cert))
  const edge = await edgeWith(provider, logger)
  t.teardown(() => edge.close())
  const first = await provider.ready()
  await waitFor(() => changes.length >= 2, 30_000, 'the ARI-driven renewal')
  const renewed = changes[1] as string
  t.is(front.renewalInfoRequests[0], ariCertId(first.cert), 'asked about the served certificate by its RFC 9773 certID')
  t.not(fingerprintOf(renewed), fingerprintOf(first.cert))
  t.true(lines.some(line => /certificate renewal is due .*reason=ari/.test(line)))
  t.true(lines.some(line => /CA renewal window \(ARI\) updated .*explanation=https:\/\/ca\.example\/incident/.test(line)))
  await waitFor(async () => (await readMeta(certsDir, front.directoryUrl)).ari?.certId === ariCertId(renewed), 30_000, 'the new window to be stored')
  const meta = await readMeta(certsDir, front.directoryUrl)
  t.true(Date.parse(meta.ari!.selectedAt) > Date.now() + 700 * hour, 'the successor renews inside its own window')
  await new Promise(r => setTimeout(r, 600))
  t.is(changes.length, 2, 'no renewal loop')
})

test.serial('a rate limit (429 + Retry-After) is honoured: no retry inside acme-client, next attempt after Retry-After', async t => {
  const certsDir = await tempCerts()
  const lines: string[] = []
  const front = await startAcmeFront(pebble, {
    newOrder: () => ({
      status: 429,
      body: {
        type: 'urn:ietf:params:acme:error:rateLimited',
        detail: 'too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s',
      },
      headers: { 'retry-after': '3600' },
    }),
  })
  t.teardown(() => front.close())
  const provider = new AcmeCertificateProvider(providerOptions(certsDir, collectingLogger(lines), { directory: front.directoryUrl }))
  t.teardown(() => provider.stop())
  await provider.start()
  await waitFor(() => lines.some(line => /could not obtain a certificate/.test(line)), 30_000, 'the failure')
  const failureSeenAt = Date.now()
  t.true(lines.some(line => /ERROR could not obtain a certificate: the CA rate-limited us: too many certificates/.test(line)))
  const meta = await readMeta(certsDir, front.directoryUrl)
  // The CA's hour counted from the failure (between the attempt's start and our seeing the failure), not the 1-minute first step.
  const failedAt = Date.parse(meta.retry!.nextAttemptAt) - 3_600_000
  t.true(failedAt >= Date.parse(meta.retry!.lastAttemptAt) && failedAt <= failureSeenAt, `waits the CA's hour: ${JSON.stringify(meta.retry)}`)
  await new Promise(r => setTimeout(r, 300))
  t.is(front.newOrderRequests, 1, 'one request: acme-client did not sleep-and-retry on its own')
})

test.serial('adding a --domain keeps serving the stored certificate until one with every name is obtained', async t => {
  const certsDir = await tempCerts()
  const logger = createLogger({ level: 'error', write: () => {} })
  const first = new AcmeCertificateProvider(providerOptions(certsDir, logger))
  const edge = await edgeWith(first, logger)
  const original = await first.ready()
  await edge.close()

  const lines: string[] = []
  // The new name cannot be validated here (it does not resolve), so the new order fails and the old certificate stays.
  const widened = new AcmeCertificateProvider(
    providerOptions(certsDir, collectingLogger(lines), { domains: ['localhost', 'berth-nowhere.invalid'], retryDelaysMs: [60_000] }),
  )
  const edge2 = await startEdge({
    ...EDGE_DEFAULTS,
    mode: 'https',
    host: '127.0.0.1',
    httpPort,
    httpsPort: 0,
    domains: ['localhost', 'berth-nowhere.invalid'],
    certificate: widened,
    challenges: widened.challenges,
    upstream: { url: upstreamUrl },
    logger: collectingLogger(lines),
  })
  t.teardown(() => edge2.close())
  t.is(widened.current()?.cert, original.cert, 'served at once')
  t.true(
    lines.some(line => /the stored certificate does not cover berth-nowhere\.invalid: serving it until a new certificate for all names is obtained/.test(line)),
  )
  await waitFor(() => lines.some(line => /could not obtain a certificate/.test(line)), 60_000, 'the order for both names to fail')
  t.true(lines.some(line => /still serving the current certificate/.test(line)))
  t.is(widened.current()?.cert, original.cert)
  const root = await pebble.rootCertificate()
  t.is((await get(edge2.urls.https!, root)).fingerprint, fingerprintOf(original.cert))
})

test.serial("a clock hours off from the CA's is reported", async t => {
  const certsDir = await tempCerts()
  const lines: string[] = []
  const front = await startAcmeFront(pebble, { directoryHeaders: { date: new Date(Date.now() - 3 * 3_600_000).toUTCString() } })
  t.teardown(() => front.close())
  const provider = new AcmeCertificateProvider(providerOptions(certsDir, collectingLogger(lines), { directory: front.directoryUrl }))
  const edge = await edgeWith(provider, collectingLogger(lines))
  t.teardown(() => edge.close())
  await provider.ready()
  t.true(lines.some(line => /WARN  this machine's clock is 180 minutes ahead of the CA's; fix the time \(NTP\)/.test(line)))
})

test.serial('a name that does not resolve is reported as a DNS problem', async t => {
  const certsDir = await tempCerts()
  const lines: string[] = []
  const provider = new AcmeCertificateProvider(
    providerOptions(certsDir, collectingLogger(lines), { domains: ['berth-nowhere.invalid'], retryDelaysMs: [60_000] }),
  )
  t.teardown(() => provider.stop())
  await provider.start()
  await waitFor(() => lines.some(line => /could not obtain a certificate/.test(line)), 60_000, 'the failure')
  const failure = lines.find(line => /could not obtain a certificate/.test(line)) ?? ''
  t.log(failure)
  t.regex(failure, /berth-nowhere\.invalid does not resolve/)
  t.regex(failure, /Create an A\/AAAA record pointing berth-nowhere\.invalid at this server/)
})

test.serial('external account binding (--acme-eab-kid/--acme-eab-hmac): refused without it, issued with it', async t => {
  const eabHttpPort = await freePort()
  const kid = 'kid-1'
  const hmacKey = 'zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W'
  const eabPebble = await startPebble({ httpPort: eabHttpPort, eab: { [kid]: hmacKey } })
  t.teardown(() => eabPebble.dispose())
  const options = (certsDir: string, lines: string[], extra: Partial<AcmeProviderOptions>): AcmeProviderOptions => ({
    ...providerOptions(certsDir, collectingLogger(lines)),
    directory: eabPebble.directoryUrl,
    caCertificates: eabPebble.listenerCa,
    httpPort: eabHttpPort,
    ...extra,
  })

  const withoutLines: string[] = []
  const without = new AcmeCertificateProvider(options(await tempCerts(), withoutLines, { retryDelaysMs: [60_000] }))
  t.teardown(() => without.stop())
  await without.start()
  await waitFor(() => withoutLines.some(line => /could not obtain a certificate/.test(line)), 30_000, 'the refusal')
  const refusal = withoutLines.find(line => /could not obtain a certificate/.test(line)) ?? ''
  t.log(refusal)
  t.regex(refusal, /registering the ACME account failed: .*This CA requires external account binding: pass --acme-eab-kid and --acme-eab-hmac/)
  await without.stop()

  const lines: string[] = []
  const provider = new AcmeCertificateProvider(options(await tempCerts(), lines, { eab: { kid, hmacKey } }))
  const edge = await startEdge({
    ...EDGE_DEFAULTS,
    mode: 'https',
    host: '127.0.0.1',
    httpPort: eabHttpPort,
    httpsPort: 0,
    domains: ['localhost'],
    certificate: provider,
    challenges: provider.challenges,
    upstream: { url: upstreamUrl },
    logger: collectingLogger(lines),
  })
  t.teardown(() => edge.close())
  const certificate = await provider.ready()
  t.deepEqual(certificate.names, ['localhost'])
  t.true(lines.some(line => /ACME account registered/.test(line)))
  t.false(
    lines.some(line => line.includes(hmacKey)),
    'the HMAC key never reaches the log',
  )
})

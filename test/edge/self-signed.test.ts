import test from 'ava'
import { X509Certificate } from 'node:crypto'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startEdge } from '../../src/edge/edge.js'
import { HTTPS_TEST_EDGE } from '../helpers/edge.js'
import { SelfSignedCertificateProvider } from '../../src/edge/tls/self-signed.js'
import { curl } from './curl.js'
import { startUpstream } from './upstream-fixture.js'

test('--self-signed: a local CA and server certificate are made once (0700/0600), reused, and re-issued from the same CA when names change', async t => {
  const certsDir = await mkdtemp(path.join(tmpdir(), 'berth-selfsigned-'))
  t.teardown(() => rm(certsDir, { recursive: true, force: true }))
  const first = new SelfSignedCertificateProvider({ certsDir, names: ['registry.test', '127.0.0.1', '::1'] })
  await first.start()
  t.is(first.caPath, path.join(certsDir, 'local-ca', 'ca.crt'))
  t.is((await stat(path.join(certsDir, 'local-ca'))).mode & 0o777, 0o700)
  t.is((await stat(path.join(certsDir, 'local-ca', 'ca.key'))).mode & 0o777, 0o600)
  t.is((await stat(path.join(certsDir, 'local-ca', 'server.key'))).mode & 0o777, 0o600)
  t.regex(first.dockerHint('registry.test:8443'), /\/etc\/docker\/certs\.d\/registry\.test:8443\/ca\.crt/)
  t.true(first.dockerHint('x').includes(first.caPath))
  const cert = first.current()!
  t.deepEqual(cert.names, ['registry.test', '127.0.0.1', '0:0:0:0:0:0:0:1'])
  const ca = new X509Certificate(await readFile(first.caPath))
  t.true(new X509Certificate(cert.cert).checkIssued(ca))
  t.true(ca.ca)

  const again = new SelfSignedCertificateProvider({ certsDir, names: ['registry.test', '127.0.0.1', '::1'] })
  await again.start()
  t.is(again.current()!.cert, cert.cert, 'reused, not re-made')

  const renamed = new SelfSignedCertificateProvider({ certsDir, names: ['other.test'] })
  await renamed.start()
  t.not(renamed.current()!.cert, cert.cert)
  t.true(new X509Certificate(renamed.current()!.cert).checkIssued(ca), 'same CA, so clients keep trusting it')
  t.is(new X509Certificate(await readFile(renamed.caPath)).fingerprint256, ca.fingerprint256)
})

test('the edge serves the self-signed certificate and curl trusts it with the printed CA', async t => {
  const certsDir = await mkdtemp(path.join(tmpdir(), 'berth-selfsigned-'))
  const upstream = await startUpstream()
  const provider = new SelfSignedCertificateProvider({ certsDir, names: [] })
  const edge = await startEdge({
    ...HTTPS_TEST_EDGE,
    certificate: provider,
    upstream: { url: upstream.url },
  })
  t.teardown(async () => {
    await edge.close()
    await upstream.close()
    await rm(certsDir, { recursive: true, force: true })
  })
  const port = new URL(edge.urls.https!).port
  t.is((await curl(['--cacert', provider.caPath, `https://localhost:${port}/v2/`])).status, 200)
  t.is((await curl(['--cacert', provider.caPath, `https://127.0.0.1:${port}/v2/`])).status, 200)
  t.not((await curl([`https://127.0.0.1:${port}/v2/`])).exitCode, 0, 'not trusted without the CA')
})

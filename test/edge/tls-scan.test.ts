/** The HTTPS listener's TLS surface as a scanner sees it (Debian's sslscan): Mozilla "intermediate". */
import test from 'ava'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startEdge } from '../../src/edge/edge.js'
import { HTTPS_TEST_EDGE } from '../helpers/edge.js'
import { FileCertificateProvider } from '../../src/edge/tls/file-source.js'
import { createTestPki } from '../helpers/tls.js'
import { startUpstream } from './upstream-fixture.js'

test('sslscan: TLS 1.2 and 1.3 only, ECDHE with AEAD ciphers only, no compression, no insecure renegotiation', async t => {
  const dir = await mkdtemp(path.join(tmpdir(), 'berth-sslscan-'))
  const pki = await createTestPki(dir)
  const upstream = await startUpstream()
  const edge = await startEdge({
    ...HTTPS_TEST_EDGE,
    certificate: new FileCertificateProvider({ certPath: pki.certPath, keyPath: pki.keyPath }),
    upstream: { url: upstream.url },
  })
  t.teardown(async () => {
    await edge.close()
    await upstream.close()
    await rm(dir, { recursive: true, force: true })
  })
  const xml = path.join(dir, 'scan.xml')
  await new Promise<void>((resolve, reject) =>
    execFile('sslscan', ['--no-colour', `--xml=${xml}`, edge.urls.https!.replace('https://', '')], error => (error ? reject(error) : resolve())),
  )
  const report = await readFile(xml, 'utf8')
  const protocols = Object.fromEntries(
    [...report.matchAll(/<protocol type="(\w+)" version="([\d.]+)" enabled="(\d)"/g)].map(m => [`${m[1]}${m[2]}`, m[3] === '1']),
  )
  t.deepEqual(protocols, { ssl2: false, ssl3: false, 'tls1.0': false, 'tls1.1': false, 'tls1.2': true, 'tls1.3': true })
  const ciphers = [...report.matchAll(/<cipher [^>]*sslversion="(TLSv[\d.]+)"[^>]*cipher="([\w-]+)"/g)].map(m => `${m[1]} ${m[2]}`).sort()
  t.deepEqual(ciphers, [
    'TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256',
    'TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384',
    'TLSv1.2 ECDHE-RSA-CHACHA20-POLY1305',
    'TLSv1.3 TLS_AES_128_GCM_SHA256',
    'TLSv1.3 TLS_AES_256_GCM_SHA384',
    'TLSv1.3 TLS_CHACHA20_POLY1305_SHA256',
  ])
  t.notRegex(report, /<compression supported="1"/)
  t.notRegex(report, /<renegotiation supported="1" secure="0"/)
})

/**
 * `berth serve --upstream`: the edge alone, in front of an existing registry:2 (Debian's
 * docker-registry), replacing only nginx. No engine is started; images land in registry:2's store.
 */
import { access, copyFile, mkdir } from 'node:fs/promises'
import path from 'node:path'
import test from 'ava'
import { MAIN } from '../helpers/berth.js'
import { OciLayout } from '../helpers/images.js'
import { freePort, makeTempDir, removeDir, run, startDaemon, waitFor, type Daemon } from '../helpers/procs.js'
import { startRegistry2, type Registry2 } from '../helpers/registry2.js'
import { copy, inspectRaw } from '../helpers/skopeo.js'

let registry: Registry2 | undefined
let berth: Daemon | undefined
let work: string | undefined

test.after.always(async () => {
  await berth?.stop()
  await registry?.stop()
  if (work) await removeDir(work)
})

test('serve --upstream fronts a registry:2 with TLS and basic auth, starting no engine', async t => {
  work = await makeTempDir('cli-upstream')
  registry = await startRegistry2({ rootDirectory: path.join(work, 'registry2') })
  const htpasswd = path.join(work, 'htpasswd')
  await run('htpasswd', ['-cbB', htpasswd, 'front', 'front-secret'])
  const httpsPort = await freePort()
  const httpPort = await freePort()
  let output = ''
  berth = startDaemon(
    'berth-upstream',
    process.execPath,
    [
      '--import',
      'tsx',
      MAIN,
      'serve',
      '--upstream',
      registry.url,
      '--self-signed',
      '--domain',
      'localhost',
      '--host',
      '127.0.0.1',
      '--https-port',
      String(httpsPort),
      '--http-port',
      String(httpPort),
      '--htpasswd',
      htpasswd,
      '--certs',
      path.join(work, 'certs'),
      '--datadir',
      path.join(work, 'datadir'),
    ],
    { onOutput: text => (output += text) },
  )
  await waitFor('berth to listen', async () => output.includes('Berth registry is running'), { timeoutMs: 90_000, daemon: berth })
  t.regex(output, new RegExp(`storing +nothing here: fronting ${registry.url.replace(/\./g, '\\.')}`))
  t.regex(output, /users +.*htpasswd \(1 user\)/)

  const certDir = path.join(work, 'client-certs')
  await mkdir(certDir)
  await copyFile(path.join(work, 'certs', 'local-ca', 'ca.crt'), path.join(certDir, 'ca.crt'))
  const source = await OciLayout.create(path.join(work, 'source'))
  const image = await source.addImage({ tag: 'v1', layers: [256 * 1024] })
  const creds = { certDir, creds: 'front:front-secret' }
  await copy(source.ref('v1'), `docker://localhost:${httpsPort}/fronted/app:v1`, { dest: creds })
  t.true((await inspectRaw(`docker://${registry.hostPort}/fronted/app:v1`, { tlsVerify: false })).equals(image.manifestBytes), 'registry:2 has the image')
  await t.throwsAsync(access(path.join(work, 'datadir', 'data')), undefined, 'Berth stored nothing itself')
})

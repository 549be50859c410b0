/**
 * The test kit checks itself: the images it builds are what real tools accept, the private dockerd
 * really is private (the machine's /etc is never touched), and failures carry their output.
 */
import test from 'ava'
import { createHash } from 'node:crypto'
import { readFile, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { gunzipSync } from 'node:zlib'
import { REPO_ROOT } from '../helpers/berth.js'
import { DOCKER_TLS_NAME, startDockerd } from '../helpers/dockerd.js'
import { OciLayout } from '../helpers/images.js'
import { CommandError, makeTempDir, removeDir, run } from '../helpers/procs.js'
import { startRegistry2 } from '../helpers/registry2.js'
import { copy, skopeo } from '../helpers/skopeo.js'
import { createTestPki } from '../helpers/tls.js'

test("OCI layouts: real gzip'd tar layers with exact digests and diff ids, accepted by skopeo", async t => {
  const dir = await makeTempDir('kit-images')
  t.teardown(() => removeDir(dir))
  const layout = await OciLayout.create(path.join(dir, 'layout'))
  const image = await layout.addImage({ tag: 'check', layers: [70_000, 0] })

  for (const layer of image.layers) {
    const bytes = await layout.readBlob(layer.digest)
    t.is(bytes.length, layer.size)
    t.is('sha256:' + createHash('sha256').update(bytes).digest('hex'), layer.digest)
    t.is('sha256:' + createHash('sha256').update(gunzipSync(bytes)).digest('hex'), layer.diffId)
  }
  const listing = await run('tar', ['-tvzf', layout.blobPath(image.layers[0]!.digest)])
  t.regex(listing.stdout, /\s70000\s.*layer-[0-9a-f]+\.bin/, 'tar lists one file of the requested size')

  const config = JSON.parse((await layout.readBlob(image.config.digest)).toString('utf8')) as { rootfs: { diff_ids: string[] } }
  t.deepEqual(
    config.rootfs.diff_ids,
    image.layers.map(layer => layer.diffId),
  )

  const inspected = JSON.parse((await skopeo(['inspect', layout.ref('check')])).stdout) as { Digest: string; Layers: string[] }
  t.is(inspected.Digest, image.manifest.digest)
  t.deepEqual(
    inspected.Layers,
    image.layers.map(layer => layer.digest),
  )
})

test('the private dockerd resolves berth.test to ::1 and keeps /etc/hosts and /etc/docker of the machine untouched', async t => {
  const hostsBefore = await readFile('/etc/hosts', 'utf8')
  const certsBefore = await stat('/etc/docker/certs.d').then(
    () => true,
    () => false,
  )
  const dockerd = await startDockerd({ baseImage: false, hosts: { 'extra.test': '::1' } })
  t.teardown(() => dockerd.stop())
  await dockerd.addCa(`${DOCKER_TLS_NAME}:4443`, '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n')

  const inside = await dockerd.inNamespace('getent', ['hosts', DOCKER_TLS_NAME])
  t.regex(inside.stdout, /^::1\s+berth\.test/)
  t.regex((await dockerd.inNamespace('getent', ['hosts', 'extra.test'])).stdout, /^::1\s+extra\.test/)
  const certs = await dockerd.inNamespace('ls', ['/etc/docker/certs.d'])
  t.is(certs.stdout.trim(), `${DOCKER_TLS_NAME}:4443`)

  t.is(await readFile('/etc/hosts', 'utf8'), hostsBefore, 'the real /etc/hosts is unchanged')
  t.is(
    await stat('/etc/docker/certs.d').then(
      () => true,
      () => false,
    ),
    certsBefore,
    'no certs.d appeared in the real /etc/docker',
  )
  const version = await dockerd.docker(['version', '--format', '{{.Server.Version}}'])
  t.regex(version.stdout, /^20\.10\./, "Debian's dockerd answers on the private socket")
})

test('a failing command throws CommandError carrying its stderr', async t => {
  const error = await t.throwsAsync(run('sh', ['-c', 'echo out; echo broken >&2; exit 3']), { instanceOf: CommandError })
  t.is(error?.result.exitCode, 3)
  t.regex(error?.message ?? '', /broken/)
  const tolerated = await run('sh', ['-c', 'exit 4'], { allowFailure: true })
  t.is(tolerated.exitCode, 4)
})

test('ensure-packages finds every package present and is fast: one dpkg-query, no apt-get', async t => {
  // "Fast" is what it does, not a stopwatch: a shim dpkg-query counts the calls (and runs the real one),
  // a shim apt-get records any install attempt and fails.
  const dir = await makeTempDir('kit-ensure')
  t.teardown(() => removeDir(dir))
  const bin = path.join(dir, 'bin')
  const calls = path.join(dir, 'calls')
  const realDpkgQuery = (await run('sh', ['-c', 'command -v dpkg-query'])).stdout.trim()
  await run('mkdir', ['-p', bin])
  await writeFile(path.join(bin, 'dpkg-query'), `#!/bin/sh\necho dpkg-query >> '${calls}'\nexec '${realDpkgQuery}' "$@"\n`, { mode: 0o755 })
  await writeFile(path.join(bin, 'apt-get'), `#!/bin/sh\necho "apt-get $*" >> '${calls}'\nexit 1\n`, { mode: 0o755 })
  const result = await run(process.execPath, [path.join(REPO_ROOT, 'test/setup/ensure-packages.mjs')], {
    env: { ...process.env, PATH: `${bin}:${process.env['PATH'] ?? ''}` },
    allowFailure: true,
  })
  t.is(result.exitCode, 0, result.stderr)
  t.is(result.stdout, '', 'nothing to install, nothing said')
  t.is(await readFile(calls, 'utf8'), 'dpkg-query\n', 'one dpkg-query call and no apt-get')
})

test('docker-registry with htpasswd and TLS: wrong password refused, right one with the CA accepted', async t => {
  const dir = await makeTempDir('kit-registry2')
  t.teardown(() => removeDir(dir))
  const pki = await createTestPki(path.join(dir, 'pki'))
  const htpasswd = path.join(dir, 'htpasswd')
  await writeFile(htpasswd, (await run('htpasswd', ['-Bbn', 'kit', 'kit-secret'])).stdout)
  const registry = await startRegistry2({ rootDirectory: path.join(dir, 'data'), htpasswd, tls: { certificate: pki.certPath, key: pki.keyPath } })
  t.teardown(() => registry.stop())
  t.regex(registry.url, /^https:\/\/127\.0\.0\.1:\d+$/)

  const layout = await OciLayout.create(path.join(dir, 'layout'))
  await layout.addImage({ tag: 'v1', layers: [1000] })
  const target = `docker://${registry.hostPort}/kit/image:v1`
  const refused = await t.throwsAsync(copy(layout.ref('v1'), target, { dest: { certDir: pki.certDir, creds: 'kit:wrong' } }))
  t.regex(refused?.message ?? '', /unauthorized|authentication required/i)
  const untrusted = await t.throwsAsync(copy(layout.ref('v1'), target, { dest: { creds: 'kit:kit-secret' } }))
  t.regex(untrusted?.message ?? '', /x509|certificate/i)
  await copy(layout.ref('v1'), target, { dest: { certDir: pki.certDir, creds: 'kit:kit-secret' } })
  t.pass()
})

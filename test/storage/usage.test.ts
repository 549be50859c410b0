/**
 * `berth du` numbers (storage/usage.ts) and upload purging (storage/purge-uploads.ts) on pushes
 * made over HTTP, and the `gc`/`du` commands run in-process through the CLI.
 */
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { PassThrough } from 'node:stream'
import { join } from 'node:path'
import test from 'ava'
import { runCli } from '../../src/cli/program.js'
import { purgeUploads, findStaleUploads } from '../../src/storage/purge-uploads.js'
import { diskUsage, formatBytes } from '../../src/storage/usage.js'
import { request } from '../helpers/http.js'
import { imageManifest, OCI_MANIFEST, pushBlob, putManifest, startFilesystemApp } from '../registry/fixtures.js'

test('du: bytes per repository, unique vs shared, unreferenced and uploads, total counts shared blobs once', async t => {
  const running = await startFilesystemApp(t)
  const image = await imageManifest(running.server, 'a', { layers: 2 })
  t.is((await putManifest(running.server, 'a', 'v1', image.manifest, OCI_MANIFEST)).status, 201)
  // b mounts a's first layer and has one of its own
  const shared = image.layers[0]!
  t.is((await request(running.server, `/v2/b/blobs/uploads/?mount=${shared.digest}&from=a`, { method: 'POST' })).status, 201)
  const own = randomBytes(700)
  await pushBlob(running.server, 'b', own)
  // an unfinished upload of 300 bytes in b
  const start = await request(running.server, '/v2/b/blobs/uploads/', { method: 'POST' })
  t.is(
    (
      await request(running.server, String(start.headers.location), {
        method: 'PATCH',
        body: randomBytes(300),
        headers: { 'Content-Type': 'application/octet-stream' },
      })
    ).status,
    202,
  )

  const report = await diskUsage(running.driver)
  const aBytes = image.manifest.byteLength + image.config.size + image.layers.reduce((s, l) => s + l.size, 0)
  t.deepEqual(report.repositories, [
    { name: 'a', cached: false, blobs: 4, manifests: 1, bytes: aBytes, uniqueBytes: aBytes - shared.size, sharedBytes: shared.size, uploadBytes: 0 },
    { name: 'b', cached: false, blobs: 2, manifests: 0, bytes: shared.size + 700, uniqueBytes: 700, sharedBytes: shared.size, uploadBytes: 300 },
  ])
  t.is(report.blobs, 5)
  t.is(report.bytes, aBytes + 700)
  t.is(report.sharedBytes, shared.size)
  t.is(report.unreferencedBlobs, 0)
  t.is(report.uploadBytes, 300)
  t.is(formatBytes(1536), '1.50 KiB')
  t.is(formatBytes(12), '12 B')
})

test('upload purge: uploads started before the cut-off (by startedat, as registry:2) go, newer ones and ones without startedat stay', async t => {
  const running = await startFilesystemApp(t)
  const ids: string[] = []
  for (let i = 0; i < 3; i++) {
    const start = await request(running.server, '/v2/app/blobs/uploads/', { method: 'POST' })
    const location = String(start.headers.location)
    await request(running.server, location, { method: 'PATCH', body: randomBytes(100 * (i + 1)), headers: { 'Content-Type': 'application/octet-stream' } })
    ids.push(location.split('/').pop()!.split('?')[0]!)
  }
  const uploads = join(running.root!, 'docker/registry/v2/repositories/app/_uploads')
  await writeFile(join(uploads, ids[0]!, 'startedat'), '2020-01-01T00:00:00Z') // written like registry:2 does
  const olderThan = new Date(Date.now() - 7 * 24 * 3600_000)
  t.deepEqual(
    (await findStaleUploads(running.driver, olderThan)).map(u => [u.id, u.size]),
    [[ids[0], 100]],
  )
  const dry = await purgeUploads(running.driver, running.app.store.uploads, { olderThan, dryRun: true })
  t.is(dry.bytesFreed, 100)
  t.is((await request(running.server, `/v2/app/blobs/uploads/${ids[0]}`)).status, 204, 'a dry run keeps it')
  const real = await purgeUploads(running.driver, running.app.store.uploads, { olderThan })
  t.is(real.uploads.length, 1)
  t.is((await request(running.server, `/v2/app/blobs/uploads/${ids[0]}`)).status, 404)
  t.is((await request(running.server, `/v2/app/blobs/uploads/${ids[1]}`)).status, 204)
})

function captureIo(cwd: string) {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let out = ''
  let err = ''
  stdout.on('data', chunk => (out += String(chunk)))
  stderr.on('data', chunk => (err += String(chunk)))
  return { io: { stdout, stderr, stdin: new PassThrough(), env: {}, cwd }, out: () => out, err: () => err }
}

test('CLI: berth gc --dry-run lists and sums, berth gc deletes, berth du prints the table; bad input is a usage error', async t => {
  const running = await startFilesystemApp(t)
  const orphan = await pushBlob(running.server, 'app', randomBytes(2048))
  const datadir = join(running.root!, '..')
  const cwd = join(datadir, '..')

  const dry = captureIo(cwd)
  t.is(await runCli(['node', 'berth', 'gc', '--datadir', datadir, '--dry-run', '--grace', '0'], dry.io), 0)
  t.regex(dry.out(), new RegExp(`would delete blob ${orphan} \\(2\\.00 KiB\\)`))
  t.regex(dry.out(), /dry run: would delete 1 blob \(2\.00 KiB\), 0 manifests, 1 layer link, 0 unfinished uploads \(0 B\): 2\.00 KiB would be freed/)

  const real = captureIo(cwd)
  t.is(await runCli(['node', 'berth', 'gc', '--datadir', datadir, '--grace', '0'], real.io), 0)
  t.regex(real.out(), /^deleted 1 blob \(2\.00 KiB\), 0 manifests, 1 layer link/m)
  t.is((await request(running.server, `/v2/app/blobs/${orphan}`, { method: 'HEAD' })).status, 404)

  const du = captureIo(cwd)
  t.is(await runCli(['node', 'berth', 'du', '--datadir', datadir], du.io), 0)
  t.regex(du.out(), /^REPOSITORY/)
  t.regex(du.out(), /stored: +0 B in 0 blobs/)

  const bad = captureIo(cwd)
  t.is(await runCli(['node', 'berth', 'gc', '--datadir', datadir, '--grace', 'soon'], bad.io), 2)
  t.regex(bad.err(), /"soon" is not a duration/)
  const missing = captureIo(cwd)
  t.is(await runCli(['node', 'berth', 'du', '--datadir', join(cwd, 'nope')], missing.io), 2)
  t.regex(missing.err(), /no registry data at/)
})

test('CLI: berth gc says why it freed nothing: untagged manifests (rerun with --delete-untagged), blobs within the grace period', async t => {
  const running = await startFilesystemApp(t)
  const image = await imageManifest(running.server, 'app', { layers: 2 })
  t.is((await putManifest(running.server, 'app', 'v1', image.manifest, OCI_MANIFEST)).status, 201)
  t.is((await request(running.server, '/v2/app/manifests/v1', { method: 'DELETE' })).status, 202)
  await pushBlob(running.server, 'app', randomBytes(1024))
  const datadir = join(running.root!, '..')
  const cwd = join(datadir, '..')
  const imageBytes = image.manifest.byteLength + image.config.size + image.layers.reduce((sum, layer) => sum + layer.size, 0)

  const young = captureIo(cwd)
  t.is(await runCli(['node', 'berth', 'gc', '--datadir', datadir], young.io), 0)
  t.regex(young.out(), /^nothing freed yet: 1 unreferenced blob is younger than the 1h grace period .*: a run 1h after the last push frees it$/m)

  t.is(await runCli(['node', 'berth', 'gc', '--datadir', datadir, '--grace', '0'], captureIo(cwd).io), 0)
  const untagged = captureIo(cwd)
  t.is(await runCli(['node', 'berth', 'gc', '--datadir', datadir, '--grace', '0'], untagged.io), 0)
  t.regex(
    untagged.out(),
    new RegExp(`^nothing freed: 1 untagged manifest \\(${formatBytes(imageBytes).replace('.', '\\.')}\\) holds the space: rerun with --delete-untagged$`, 'm'),
  )
  t.notRegex(untagged.out(), /younger than/)

  const deleted = captureIo(cwd)
  t.is(await runCli(['node', 'berth', 'gc', '--datadir', datadir, '--grace', '0', '--delete-untagged'], deleted.io), 0)
  t.regex(deleted.out(), new RegExp(`^deleted 4 blobs \\(${formatBytes(imageBytes).replace('.', '\\.')}\\), 1 manifest`, 'm'))
  t.notRegex(deleted.out(), /nothing/)
})

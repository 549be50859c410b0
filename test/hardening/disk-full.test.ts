/**
 * Disk full (issue #8): the data folder on a 64 MiB tmpfs the test mounts. A push that does not
 * fit fails with a clear error, nothing partial becomes visible, pulls keep being served, and once
 * space is freed the same push works. Needs root (mount); skipped otherwise.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'ava'
import { startBerth } from '../helpers/berth.js'
import { request } from '../helpers/http.js'
import { run } from '../helpers/procs.js'
import { OCI_MANIFEST, pushBlob, pushImage, sha256, tempDir } from './common.js'

const isRoot = process.getuid?.() === 0

let output = (): string => ''

/** Names the step whose request failed (a reset says little on its own), with the server's last output. */
function step<T>(label: string, promise: Promise<T>): Promise<T> {
  return promise.catch((error: Error) => {
    throw new Error(`${label}: ${error.message}\nserver output:\n${output().slice(-1500)}`, { cause: error })
  })
}

async function visibleRepositories(data: string): Promise<string[]> {
  return readdir(join(data, 'docker/registry/v2/repositories')).catch(() => [])
}

;(isRoot ? test : test.skip)('a push that does not fit fails clearly, leaves nothing visible, pulls go on, and works once space is freed', async t => {
  t.timeout(170_000)
  const dir = await tempDir(t, 'berth-diskfull-')
  const mountpoint = join(dir, 'small')
  await mkdir(mountpoint)
  await run('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', mountpoint])
  t.teardown(async () => {
    await run('umount', ['-l', mountpoint]).catch(() => undefined)
  })
  const datadir = join(mountpoint, 'datadir')
  const berth = await startBerth({ datadir })
  t.teardown(() => berth.stop())
  output = () => berth.output()

  // An image that fits, to be pulled while the disk is full.
  const kept = randomBytes(8 * 1024 * 1024)
  const image = await step('first push', pushImage(berth.url, 'keep/me', 'v1', [kept]))
  // Fill most of what is left.
  const filler = join(mountpoint, 'filler')
  await writeFile(filler, Buffer.alloc(40 * 1024 * 1024))

  // A 30 MiB layer no longer fits: monolithic, and chunked (the failure comes in a PATCH).
  const big = randomBytes(30 * 1024 * 1024)
  const digest = sha256(big)
  const start = await step('POST', request(berth.url, '/v2/big/one/blobs/uploads/', { method: 'POST' }))
  t.is(start.status, 202)
  const put = await step(
    'monolithic PUT on a full disk',
    request(berth.url, `${String(start.headers.location)}?digest=${digest}`, { method: 'PUT', body: big }),
  )
  t.true(put.status >= 500 && put.status !== 502, `monolithic PUT on a full disk: ${put.status}`)
  t.regex(put.body.toString(), /space|full|storage/i, `the error says why: ${put.body.toString()}`)
  const start2 = await step('POST 2', request(berth.url, '/v2/big/one/blobs/uploads/', { method: 'POST' }))
  const patch = await step('PATCH on a full disk', request(berth.url, String(start2.headers.location), { method: 'PATCH', body: big }))
  t.true(patch.status >= 500 && patch.status !== 502, `PATCH on a full disk: ${patch.status}`)
  t.regex(patch.body.toString(), /space|full|storage/i, `the error says why: ${patch.body.toString()}`)
  // A manifest that fits in a page still cannot be half-written: PUT it while 0 bytes are left.
  const spare = join(mountpoint, 'spare')
  await writeFile(spare, Buffer.alloc(0))
  await run('sh', ['-c', `dd if=/dev/zero of=${spare} bs=64k 2>/dev/null || true`])
  const manifest = await step(
    'manifest PUT on a full disk',
    request(berth.url, '/v2/keep/me/manifests/v2', {
      method: 'PUT',
      headers: { 'Content-Type': OCI_MANIFEST },
      body: (await request(berth.url, '/v2/keep/me/manifests/v1')).body,
    }),
  )
  t.true(manifest.status === 201 || manifest.status >= 500, `manifest PUT on a full disk: ${manifest.status}`)
  const tagsWhileFull = await request(berth.url, '/v2/keep/me/tags/list')
  t.is(tagsWhileFull.status, 200)
  if (manifest.status !== 201) t.deepEqual(tagsWhileFull.json.tags, ['v1'], 'a failed tag write is not visible')
  await rm(spare)

  const { stdout: leftover } = await run('du', ['-sk', join(datadir, 'data/docker/registry/v2/repositories/big/one/_uploads')]).catch(() => ({ stdout: '0' }))
  t.log(`partial upload data left by the two failed uploads: ${leftover.split('\t')[0]} KiB`)
  // Nothing partial is visible: the big blob is unknown, its repository has no layer link.
  t.is((await request(berth.url, `/v2/big/one/blobs/${digest}`, { method: 'HEAD' })).status, 404)
  t.is((await request(berth.url, `/v2/keep/me/blobs/${digest}`, { method: 'HEAD' })).status, 404)
  // Pulls keep working while the disk is full.
  const pulled = await request(berth.url, `/v2/keep/me/blobs/${image.layers[0]}`)
  t.is(pulled.status, 200)
  t.true(pulled.body.equals(kept))
  t.is((await request(berth.url, '/v2/keep/me/manifests/v1')).status, 200)

  // Space freed: the same push now works and the blob is exact.
  await rm(filler)
  const again = await step('push after freeing space', pushBlob(berth.url, 'big/one', big))
  t.is(again, digest)
  const back = await request(berth.url, `/v2/big/one/blobs/${digest}`)
  t.is(sha256(back.body), digest)
  t.true((await visibleRepositories(join(datadir, 'data'))).includes('big'))
  t.log(`full disk: monolithic PUT → ${put.status}, PATCH → ${patch.status}, manifest PUT → ${manifest.status}; pulls served; push after freeing space → 201`)
})

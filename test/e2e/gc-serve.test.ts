/**
 * `berth serve --gc-interval`: garbage collection on a timer inside the running server. A blob
 * nobody references and nobody touched for over an hour goes; a blob pushed just now and a tagged
 * image stay, and the image pulls byte for byte.
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { readdir, utimes } from 'node:fs/promises'
import path from 'node:path'
import { startBerth } from '../helpers/berth.js'
import { request } from '../helpers/http.js'
import { makeTempDir, removeDir, waitFor } from '../helpers/procs.js'
import { imageManifest, OCI_MANIFEST, pushBlob, putManifest, sha256 } from '../registry/fixtures.js'

async function age(dir: string): Promise<void> {
  const when = new Date(Date.now() - 2 * 3600_000)
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    // The server's GC may take a file we just aged before the loop is done: that is fine.
    if (entry.isFile()) await utimes(path.join(entry.parentPath, entry.name), when, when).catch(() => {})
  }
}

test('serve --gc-interval frees an old unreferenced blob while serving; tagged images keep pulling', async t => {
  const work = await makeTempDir('e2e-gc-serve')
  t.teardown(() => removeDir(work))
  const datadir = path.join(work, 'datadir')
  const berth = await startBerth({ datadir, args: ['--gc-interval', '1s'], timeoutMs: 90_000 })
  t.teardown(() => berth.stop())

  const image = await imageManifest(berth.url, 'app', { layers: 2 })
  t.is((await putManifest(berth.url, 'app', 'v1', image.manifest, OCI_MANIFEST)).status, 201)
  const orphan = await pushBlob(berth.url, 'app', randomBytes(4096))
  const recent = randomBytes(1024)
  await age(path.join(datadir, 'data'))
  const recentDigest = await pushBlob(berth.url, 'app', recent) // pushed now: inside the grace period

  await waitFor('the orphan blob to be collected', async () => (await request(berth.url, `/v2/app/blobs/${orphan}`, { method: 'HEAD' })).status === 404, {
    timeoutMs: 60_000,
    intervalMs: 250,
  })
  // The run logs when it is done, which can reach us (through the child's stdout) after its delete did.
  await waitFor('the GC run to log that it is done', async () => /garbage collection done/.test(berth.output()), { intervalMs: 100 })
  t.regex(berth.output(), /garbage collection done/)
  t.is((await request(berth.url, `/v2/app/blobs/${recentDigest}`, { method: 'HEAD' })).status, 200, 'a recent blob stays')
  const manifest = await request(berth.url, '/v2/app/manifests/v1', { headers: { Accept: OCI_MANIFEST } })
  t.is(manifest.status, 200)
  for (const blob of [image.config, ...image.layers]) {
    const response = await request(berth.url, `/v2/app/blobs/${blob.digest}`)
    t.is(response.status, 200)
    t.is(sha256(response.body), blob.digest)
  }
})

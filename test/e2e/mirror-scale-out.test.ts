/**
 * The pull-through mirror on several instances: two `berth serve --local --storage s3 … --mirror
 * hub.test=<upstream>` processes share one bucket of a real S3 server (single-node Ceph RGW); the
 * upstream is Debian's docker-registry behind a counting proxy (the upstream blob GETs are counted
 * there). What a user relies on:
 * - an image pulled through instance A is cached in the bucket (`_mirror` marker included), and a
 *   pull of the same tag through instance B is served from the bucket: no upstream blob GET;
 * - the single-fetch rule holds per instance: clients of one uncached blob spread over both
 *   instances cause at most one upstream GET per instance, and all get the right bytes.
 */
import { createHash } from 'node:crypto'
import http from 'node:http'
import path from 'node:path'
import anyTest, { type TestFn } from 'ava'
import { mirrorMarkerPath } from '../../src/storage/paths.js'
import { startBerth, type Berth } from '../helpers/berth.js'
import { startS3, uniquePrefix, type S3Server } from '../helpers/ceph.js'
import { countingProxy, type CountingProxy } from '../helpers/counting-proxy.js'
import { request } from '../helpers/http.js'
import { OciLayout, type BuiltImage } from '../helpers/images.js'
import { makeTempDir, removeDir } from '../helpers/procs.js'
import { startRegistry2 } from '../helpers/registry2.js'
import { s3DriverFor } from '../helpers/s3.js'
import { plainHttp, pullChecker, s3StorageArgs, stopAfterAll } from '../helpers/scale-out.js'
import { copy, inspectRaw } from '../helpers/skopeo.js'

interface Context {
  s3: S3Server
  prefix: string
  work: string
  proxy: CountingProxy
  a: Berth
  b: Berth
  app: BuiltImage
  big: BuiltImage
  upstreamHostPort: string
}

const test = anyTest as TestFn
let ctx: Context | undefined
const started = stopAfterAll(test)

test.before(async () => {
  const s3Starting = startS3()
  s3Starting.then(s3 => started.push(() => s3.stop())).catch(() => {})
  const work = await makeTempDir('mirror-scale-out')
  started.push(() => removeDir(work))
  const registry = await startRegistry2({ rootDirectory: path.join(work, 'upstream') })
  started.push(() => registry.stop())
  const proxy = await countingProxy(registry.url)
  started.push(() => proxy.close())
  const layout = await OciLayout.create(path.join(work, 'layout'))
  const app = await layout.addImage({ tag: 'app', layers: [3 * 1024 * 1024, 64 * 1024] })
  const big = await layout.addImage({ tag: 'big', layers: [24 * 1024 * 1024] })
  await copy(layout.ref('app'), `docker://${registry.hostPort}/library/app:1`, { dest: plainHttp })
  await copy(layout.ref('big'), `docker://${registry.hostPort}/library/big:1`, { dest: plainHttp })
  const s3 = await s3Starting
  const prefix = uniquePrefix('mirror-scale-out')
  const args = [...s3StorageArgs(s3, prefix), '--mirror', `hub.test=${proxy.url}`]
  const [a, b] = await Promise.all(
    ['a', 'b'].map(async name => {
      const berth = await startBerth({ datadir: path.join(work, `datadir-${name}`), args, env: s3.env })
      started.push(() => berth.stop())
      return berth
    }),
  )
  ctx = { s3, prefix, work, proxy, a: a!, b: b!, app, big, upstreamHostPort: registry.hostPort }
})

function env(): Context {
  if (ctx === undefined) throw new Error('setup failed')
  return ctx
}

const pullAndCheck = pullChecker(() => env().work)

test.serial('a pull through A caches in the bucket; the same tag through B needs no upstream blob GET', async t => {
  const { a, b, app, proxy, s3, prefix, upstreamHostPort } = env()
  t.true((await inspectRaw(`docker://${upstreamHostPort}/library/app:1`, plainHttp)).equals(app.manifestBytes))
  await pullAndCheck(t, `docker://${a.hostPort}/hub.test/library/app:1`, app)
  const blobGets = () => app.blobs.reduce((sum, blob) => sum + proxy.count('GET', `/blobs/${blob.digest}`), 0)
  t.is(blobGets(), app.blobs.length, 'A fetched each blob once')
  const manifestGets = proxy.count('GET', '/v2/library/app/manifests/1') + proxy.count('GET', `/manifests/${app.manifest.digest}`)

  const marker = await s3DriverFor(s3, prefix).stat(mirrorMarkerPath('hub.test/library/app'))
  t.false(marker.isDir, 'the _mirror marker is an object in the bucket')

  await pullAndCheck(t, `docker://${b.hostPort}/hub.test/library/app:1`, app)
  t.is(blobGets(), app.blobs.length, 'B read every blob from the bucket')
  t.is(proxy.count('GET', '/v2/library/app/manifests/1') + proxy.count('GET', `/manifests/${app.manifest.digest}`), manifestGets, 'and the manifest too')
  // B checks the tag itself (the TTL is per instance), with a HEAD.
  t.log(`upstream tag HEADs: ${proxy.count('HEAD', '/v2/library/app/manifests/1')}, manifest GETs: ${manifestGets}`)
  t.true((await inspectRaw(`docker://${b.hostPort}/hub.test/library/app:1`, plainHttp)).equals(app.manifestBytes), 'digest identical through B')
})

test.serial('clients of one uncached blob on both instances: at most one upstream GET per instance', async t => {
  const { a, b, big, proxy } = env()
  for (const berth of [a, b]) t.is((await request(berth.url, '/v2/hub.test/library/big/manifests/1')).status, 200)
  const layer = big.layers[0]!.digest
  const digests = await Promise.all(Array.from({ length: 8 }, (_, i) => sha256Of(`${(i % 2 === 0 ? a : b).url}/v2/hub.test/library/big/blobs/${layer}`)))
  for (const digest of digests) t.is(digest, layer)
  const gets = proxy.count('GET', `/blobs/${layer}`)
  t.true(gets >= 1 && gets <= 2, `upstream GETs of the layer: ${gets}`)
  t.log(`8 clients on two instances, upstream GETs of the 24 MiB layer: ${gets}`)
  // Cached now: more pulls through either instance fetch nothing.
  for (const berth of [a, b]) t.is(await sha256Of(`${berth.url}/v2/hub.test/library/big/blobs/${layer}`), layer)
  t.is(proxy.count('GET', `/blobs/${layer}`), gets)
})

function sha256Of(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, response => {
        if (response.statusCode !== 200) {
          response.resume()
          return reject(new Error(`${url}: ${response.statusCode}`))
        }
        const hash = createHash('sha256')
        response.on('data', chunk => hash.update(chunk as Buffer))
        response.on('end', () => resolve(`sha256:${hash.digest('hex')}`))
        response.on('error', reject)
      })
      .on('error', reject)
  })
}

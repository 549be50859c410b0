/**
 * The manifest hot path keeps bytes by digest in process (storage/manifest-cache.ts) and lets
 * concurrent requests for one reference share a store read (storage/read-batcher.ts). What users
 * rely on, whatever served the previous request: a manifest deleted through the API, by garbage
 * collection or by another engine on the same store is 404 at once; a tag moved elsewhere is
 * followed at once; a digest is only served in repositories that hold it; memory stays bounded.
 *
 * "Another engine" is a second app with its own driver client on the same store: the same folder
 * (BERTH_TEST_DRIVER=filesystem), the same bucket prefix (s3), or the same in-memory store.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import test, { type ExecutionContext } from 'ava'
import type { RegistryAppOptions } from '../../src/registry/app.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import type { StorageDriver } from '../../src/storage/driver/storage-driver.js'
import { collectGarbage } from '../../src/storage/gc.js'
import { ManifestCache } from '../../src/storage/manifest-cache.js'
import { ReadBatcher } from '../../src/storage/read-batcher.js'
import { uniquePrefix } from '../helpers/ceph.js'
import { request, type HttpResponse } from '../helpers/http.js'
import { s3DriverFor, s3ForFile } from '../helpers/s3.js'
import { imageManifest, OCI_MANIFEST, putManifest, startApp, tempRoot, type PushedImage, type Running } from './fixtures.js'

const kind = process.env['BERTH_TEST_DRIVER']
const s3 = kind === 's3' ? s3ForFile(test) : undefined

/** Two drivers on one store, each its own client, as two Berth processes would have. */
async function sharedStore(t: ExecutionContext): Promise<[StorageDriver, StorageDriver]> {
  if (s3 !== undefined) {
    const prefix = uniquePrefix('manifest-cache')
    return [s3DriverFor(await s3, prefix), s3DriverFor(await s3, prefix)]
  }
  if (kind === 'filesystem') {
    const root = await tempRoot(t)
    return [new FilesystemDriver(root), new FilesystemDriver(root)]
  }
  const memory = new InMemoryDriver()
  return [memory, memory]
}

/** Two engines (apps, each with its own cache) on one store. */
async function twoEngines(t: ExecutionContext, options: Partial<RegistryAppOptions> = {}): Promise<[Running, Running]> {
  const [a, b] = await sharedStore(t)
  return [await startApp(t, { ...options, driver: a }), await startApp(t, { ...options, driver: b })]
}

const get = (running: Running, name: string, reference: string, method = 'GET'): Promise<HttpResponse> =>
  request(running.server, `/v2/${name}/manifests/${reference}`, { method, headers: { Accept: OCI_MANIFEST } })

/** Pushes an image under `tag` and GETs it until it is in the engine's cache (so later answers could come from there). */
async function pushAndServe(t: ExecutionContext, running: Running, name: string, tag: string): Promise<PushedImage> {
  const image = await imageManifest(running.server, name)
  t.is((await putManifest(running.server, name, tag, image.manifest, OCI_MANIFEST)).status, 201)
  for (const reference of [tag, image.digest]) {
    const response = await get(running, name, reference)
    t.is(response.status, 200)
    t.deepEqual(response.body, image.manifest)
  }
  t.truthy(running.app.store.manifests.cache.get(image.digest), 'the bytes are cached before the change')
  return image
}

async function assertGone(t: ExecutionContext, running: Running, name: string, references: string[]): Promise<void> {
  for (const reference of references) {
    for (const method of ['GET', 'HEAD']) {
      const response = await get(running, name, reference, method)
      t.is(response.status, 404, `${method} ${name}:${reference}`)
      if (method === 'GET') t.is(response.json?.errors?.[0]?.code, 'MANIFEST_UNKNOWN')
    }
  }
}

test('a manifest deleted through the API is 404 at once, by digest and by tag, though it was just served', async t => {
  const [engine] = await twoEngines(t)
  const image = await pushAndServe(t, engine, 'app', 'v1')
  t.is((await request(engine.server, `/v2/app/manifests/${image.digest}`, { method: 'DELETE' })).status, 202)
  await assertGone(t, engine, 'app', ['v1', image.digest])
})

test('a manifest deleted by another engine on the same store is 404 at once on this one', async t => {
  const [serving, deleting] = await twoEngines(t)
  const image = await pushAndServe(t, serving, 'app', 'v1')
  t.is((await request(deleting.server, `/v2/app/manifests/${image.digest}`, { method: 'DELETE' })).status, 202)
  await assertGone(t, serving, 'app', ['v1', image.digest])
})

test('a tag deleted by another engine is 404 here, and the manifest stays reachable by digest', async t => {
  const [serving, deleting] = await twoEngines(t)
  const image = await pushAndServe(t, serving, 'app', 'v1')
  t.is((await request(deleting.server, '/v2/app/manifests/v1', { method: 'DELETE' })).status, 202)
  await assertGone(t, serving, 'app', ['v1'])
  t.deepEqual((await get(serving, 'app', image.digest)).body, image.manifest)
})

test('a tag moved by another engine is followed at once; the old manifest stays reachable by digest', async t => {
  const [serving, pushing] = await twoEngines(t)
  const first = await pushAndServe(t, serving, 'app', 'latest')
  const second = await imageManifest(pushing.server, 'app')
  t.is((await putManifest(pushing.server, 'app', 'latest', second.manifest, OCI_MANIFEST)).status, 201)
  for (const method of ['GET', 'HEAD']) {
    const moved = await get(serving, 'app', 'latest', method)
    t.is(moved.status, 200)
    t.is(moved.headers['docker-content-digest'], second.digest, method)
  }
  t.deepEqual((await get(serving, 'app', 'latest')).body, second.manifest)
  t.deepEqual((await get(serving, 'app', first.digest)).body, first.manifest)
})

test('a manifest garbage-collected through another driver client is 404 at once, though it was just served', async t => {
  const [serving, other] = await twoEngines(t)
  const image = await pushAndServe(t, serving, 'app', 'v1')
  t.is((await request(other.server, '/v2/app/manifests/v1', { method: 'DELETE' })).status, 202) // untagged now
  await sleep(1100) // S3 keeps times in whole seconds: the run must start after the push
  const report = await collectGarbage(other.driver, { deleteUntagged: true, gracePeriodMs: 0 })
  t.true(
    report.blobs.some(blob => blob.digest === image.digest),
    'the collector deleted the manifest',
  )
  await assertGone(t, serving, 'app', [image.digest])
})

test('a cached digest is served only in repositories that hold it', async t => {
  const [engine] = await twoEngines(t)
  const image = await pushAndServe(t, engine, 'team/a', 'v1')
  await assertGone(t, engine, 'team/b', [image.digest])
})

/** `driver` whose stat takes `ms` longer after looking: a revision check in flight holds an old answer for that long. */
function slowStat(driver: StorageDriver, ms: number): StorageDriver {
  return new Proxy(driver, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown
      if (typeof value !== 'function') return value
      if (property !== 'stat') return (value as (...a: unknown[]) => unknown).bind(target) // private fields need the real object
      return async (...args: unknown[]) => {
        const result = (await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args)) as unknown
        await sleep(ms)
        return result
      }
    },
  })
}

test('GETs that start after a DELETE was answered are 404 even while earlier GETs of the same tag are in flight', async t => {
  const [a, b] = await sharedStore(t)
  const serving = await startApp(t, { driver: slowStat(a, 30) })
  const deleting = await startApp(t, { driver: b })
  for (let round = 0; round < 5; round++) {
    const image = await pushAndServe(t, serving, 'app', `r${round}`)
    let stop = false
    const background: Promise<void>[] = []
    for (let i = 0; i < 8; i++) {
      background.push(
        (async () => {
          while (!stop) await get(serving, 'app', `r${round}`, 'HEAD')
        })(),
      )
    }
    await sleep(20)
    t.is((await request(deleting.server, `/v2/app/manifests/${image.digest}`, { method: 'DELETE' })).status, 202)
    const after = await Promise.all(Array.from({ length: 8 }, () => get(serving, 'app', `r${round}`, 'HEAD')))
    stop = true
    await Promise.all(background)
    t.deepEqual(
      after.map(response => response.status),
      Array(8).fill(404),
      `round ${round}`,
    )
  }
})

test('the cache stays within its bound while every manifest is still served byte for byte', async t => {
  const maxBytes = 16 * 1024
  const [engine] = await twoEngines(t, { manifestCache: { maxBytes, maxEntryBytes: 4096 } })
  const images: PushedImage[] = []
  for (let i = 0; i < 12; i++) {
    // ~1.6 KiB manifests with 6 layers; 12 of them with bookkeeping exceed 16 KiB.
    const image = await imageManifest(engine.server, 'app', { layers: 6 })
    t.is((await putManifest(engine.server, 'app', `t${i}`, image.manifest, OCI_MANIFEST)).status, 201)
    images.push(image)
  }
  t.true(images.reduce((sum, image) => sum + image.manifest.byteLength, 0) > maxBytes, 'more bytes were pushed than the cache holds')
  for (let pass = 0; pass < 2; pass++) {
    for (const [i, image] of images.entries()) {
      t.deepEqual((await get(engine, 'app', `t${i}`)).body, image.manifest)
      t.true(engine.app.store.manifests.cache.bytes <= maxBytes)
    }
  }
  const cache = engine.app.store.manifests.cache
  t.true(cache.size > 0 && cache.size < images.length, `${cache.size} entries`)
  t.truthy(cache.get(images.at(-1)!.digest), 'the most recently served is kept')
  t.is(cache.get(images[0]!.digest), undefined, 'the least recently served went first')
})

test('ManifestCache: least recently used goes first, large entries are not kept, the bound holds', t => {
  const cache = new ManifestCache({ maxBytes: 4000, maxEntryBytes: 1000 })
  const entry = (size: number) => ({ content: Buffer.alloc(size, 1), mediaType: OCI_MANIFEST })
  cache.set('sha256:a', entry(900))
  cache.set('sha256:b', entry(900))
  cache.set('sha256:c', entry(900))
  t.truthy(cache.get('sha256:a')) // a is now the most recently used
  cache.set('sha256:d', entry(900)) // over 4000 with bookkeeping: b goes
  t.is(cache.get('sha256:b'), undefined)
  t.truthy(cache.get('sha256:a'))
  t.truthy(cache.get('sha256:c'))
  t.truthy(cache.get('sha256:d'))
  t.true(cache.bytes <= 4000)
  cache.set('sha256:big', entry(1001))
  t.is(cache.get('sha256:big'), undefined)
  t.is(cache.size, 3)
  // A small Buffer from Node's shared pool is copied, so the bound counts what is kept alive.
  const pooled = Buffer.from('{"schemaVersion":2}')
  t.true(pooled.buffer.byteLength > pooled.byteLength)
  cache.set('sha256:e', { content: pooled, mediaType: OCI_MANIFEST })
  const kept = cache.get('sha256:e')!
  t.deepEqual(kept.content, pooled)
  t.is(kept.content.buffer.byteLength, pooled.byteLength)
  const off = new ManifestCache({ maxBytes: 0 })
  off.set('sha256:a', entry(10))
  t.is(off.size, 0)
})

const nextTurn = () => new Promise<void>(resolve => setImmediate(resolve))

test('ReadBatcher: a caller never gets a read that started before it called', async t => {
  const batcher = new ReadBatcher<number>()
  const started: Array<(value: number) => void> = []
  const read = () => new Promise<number>(resolve => started.push(resolve))
  const first = batcher.run('k', read)
  const sameTurn = batcher.run('k', read) // the read has not started yet: sharing it is as fresh as its own
  t.is(started.length, 0, 'a read starts on the next turn of the event loop')
  await nextTurn()
  t.is(started.length, 1)
  // Arrive while the first read is in flight: must wait for a read of their own time.
  const second = batcher.run('k', read)
  const third = batcher.run('k', read)
  await nextTurn()
  t.is(started.length, 1, 'no second read while one is in flight')
  started[0]!(1)
  t.deepEqual(await Promise.all([first, sameTurn]), [1, 1])
  t.is(started.length, 2, 'the next read starts when the first settles')
  const fourth = batcher.run('k', read) // arrives during the second read: waits for a third
  started[1]!(2)
  t.deepEqual(await Promise.all([second, third]), [2, 2])
  t.is(started.length, 3)
  started[2]!(3)
  t.is(await fourth, 3)
  // Failures reach every caller of the batch; other keys are independent; nothing is kept.
  const failing = () => Promise.reject(new Error('gone'))
  await t.throwsAsync(batcher.run('x', failing), { message: 'gone' })
  t.is(await batcher.run('y', async () => 7), 7)
  t.is(batcher.inFlight, 0)
})

test('ReadBatcher with two reads in flight: a caller arriving during a read gets the next one on the next turn, never an older one', async t => {
  const batcher = new ReadBatcher<number>(undefined, 2)
  const started: Array<(value: number) => void> = []
  const read = () => new Promise<number>(resolve => started.push(resolve))
  const first = batcher.run('k', read)
  await nextTurn()
  t.is(started.length, 1)
  const second = batcher.run('k', read) // during the first read: a read of its own, on the next turn
  const secondToo = batcher.run('k', read)
  await nextTurn()
  t.is(started.length, 2, 'a second read starts while the first is in flight')
  const third = batcher.run('k', read) // two in flight: waits for one of them to settle
  await nextTurn()
  t.is(started.length, 2, 'no third read while two are in flight')
  started[1]!(2) // the second read answers first
  t.deepEqual(await Promise.all([second, secondToo]), [2, 2])
  t.is(started.length, 3, 'the waiting callers get a read that started after they called')
  started[0]!(1)
  t.is(await first, 1)
  started[2]!(3)
  t.is(await third, 3)
  t.is(batcher.inFlight, 0)
})

test('ReadBatcher: callers waiting behind a read that hangs get a read of their own after maxWaitMs', async t => {
  const batcher = new ReadBatcher<string>(50)
  let calls = 0
  const read = () => (++calls === 1 ? new Promise<string>(() => {}) : Promise.resolve(`read ${calls}`))
  void batcher.run('k', read) // hangs forever
  await nextTurn()
  const started = Date.now()
  const [second, third] = await Promise.all([batcher.run('k', read), batcher.run('k', read)])
  t.is(second, 'read 2')
  t.is(third, 'read 2', 'the waiting callers still share one read')
  t.true(Date.now() - started >= 45)
  t.is(await batcher.run('k', read), 'read 3', 'later callers are not held up by the hung read')
  t.is(batcher.inFlight, 0)
})

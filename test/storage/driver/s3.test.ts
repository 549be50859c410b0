/**
 * The S3 driver against a real S3 server (single-node Ceph RGW, test/helpers/ceph.ts): the
 * conformance suite every driver passes, then what is particular to S3 (distribution's key
 * layout under a prefix, multipart streaming, append across writers and processes, conditional
 * create, the client settings real servers need).
 */
import { randomBytes, createHash } from 'node:crypto'
import anyTest, { type TestFn } from 'ava'
import { ListObjectsV2Command, GetObjectCommand, PutObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3'
import { type S3Driver, MIN_PART_SIZE } from '../../../src/storage/driver/s3.js'
import { PathNotFoundError, StorageDriverError } from '../../../src/storage/driver/storage-driver.js'
import { uniquePrefix, type S3Server } from '../../helpers/ceph.js'
import { s3DriverFor, s3ForFile } from '../../helpers/s3.js'
import { storageDriverSuite } from '../../suites/storage-driver.js'
import { waitFor } from '../../helpers/procs.js'

const test = anyTest as TestFn<{ driver: S3Driver }>

let server: S3Server | undefined
const started = s3ForFile(test)

function driverFor(s3: S3Server, prefix = uniquePrefix('suite'), partSize?: number): S3Driver {
  return s3DriverFor(s3, prefix, partSize !== undefined ? { partSize } : {})
}

async function s3(): Promise<S3Server> {
  server ??= await started
  return server
}

storageDriverSuite('s3', {
  // A fresh prefix per test: the suite's tests expect an empty store.
  create: async () => driverFor(await s3()),
})

async function keysUnder(driver: S3Driver, prefix: string): Promise<string[]> {
  const out = await driver.client.send(new ListObjectsV2Command({ Bucket: driver.bucket, Prefix: prefix }))
  return (out.Contents ?? []).map(o => o.Key as string).sort()
}

test("s3: driver paths are distribution's keys under the prefix (rootdirectory), no leading slash", async t => {
  const s = await s3()
  const prefix = uniquePrefix('layout')
  const driver = driverFor(s, `/${prefix}/`)
  await driver.putContent('/docker/registry/v2/repositories/a/_layers/sha256/ab/link', Buffer.from('sha256:ab'))
  t.deepEqual(await keysUnder(driver, prefix), [`${prefix}/docker/registry/v2/repositories/a/_layers/sha256/ab/link`])
  // And what distribution's s3 driver wrote under the same rootdirectory is readable as is.
  await driver.client.send(new PutObjectCommand({ Bucket: driver.bucket, Key: `${prefix}/docker/registry/v2/blobs/sha256/cd/cdef/data`, Body: 'bytes' }))
  t.is((await driver.getContent('/docker/registry/v2/blobs/sha256/cd/cdef/data')).toString(), 'bytes')
  t.deepEqual(await driver.list('/docker/registry/v2'), ['/docker/registry/v2/blobs', '/docker/registry/v2/repositories'])
})

test('s3: a multi-part streamed write arrives intact, is invisible until commit, and leaves no upload behind', async t => {
  const s = await s3()
  const driver = driverFor(s, uniquePrefix('multipart'), MIN_PART_SIZE)
  const bytes = randomBytes(3 * MIN_PART_SIZE + 12345)
  const writer = await driver.writer('/big/data')
  for (let i = 0; i < bytes.byteLength; i += 300_000) await writer.write(bytes.subarray(i, i + 300_000))
  await t.throwsAsync(driver.stat('/big/data'), { instanceOf: PathNotFoundError })
  await writer.commit()
  const back = await driver.getContent('/big/data')
  t.is(back.byteLength, bytes.byteLength)
  t.true(back.equals(bytes))
  const uploads = await driver.client.send(new ListMultipartUploadsCommand({ Bucket: driver.bucket, Prefix: driver.prefix }))
  t.is(uploads.Uploads?.length ?? 0, 0)
})

test('s3: append continues a large object from another driver instance (another Berth process), server-side', async t => {
  const s = await s3()
  const prefix = uniquePrefix('append')
  const a = driverFor(s, prefix, MIN_PART_SIZE)
  const b = driverFor(s, prefix, MIN_PART_SIZE)
  const first = randomBytes(MIN_PART_SIZE + 1000) // large enough to be copied as a part
  const second = randomBytes(777) // a small chunk
  const third = randomBytes(2 * MIN_PART_SIZE)
  // The writer's computed ETag is what the server reports (uploads trust a cached hash only then).
  let w = await a.writer('/u/data', { append: true })
  await w.write(first)
  await w.close()
  t.is(w.etag, (await b.stat('/u/data')).etag, 'multipart ETag')
  w = await b.writer('/u/data', { append: true })
  t.is(w.size, first.byteLength)
  await w.write(second)
  await w.close()
  t.is(w.etag, (await b.stat('/u/data')).etag, 'ETag after a part copy')
  w = await a.writer('/u/data', { append: true })
  await w.write(third)
  await w.commit()
  t.is(w.etag, (await b.stat('/u/data')).etag)
  const small = await a.writer('/small', { append: true })
  await small.write(Buffer.from('abc'))
  await small.close()
  t.is(small.etag, (await a.stat('/small')).etag, 'single PUT ETag')
  const all = Buffer.concat([first, second, third])
  const back = await b.getContent('/u/data')
  t.is(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(all).digest('hex'))
  t.is((await b.stat('/u/data')).size, all.byteLength)
  // Ranged reads across part boundaries.
  const chunks: Buffer[] = []
  for await (const chunk of await b.reader('/u/data', MIN_PART_SIZE - 10, 2000)) chunks.push(chunk as Buffer)
  t.true(Buffer.concat(chunks).equals(all.subarray(MIN_PART_SIZE - 10, MIN_PART_SIZE + 1990)))
})

test('s3: cancel of an append writer after parts were sent keeps the object as it was', async t => {
  const s = await s3()
  const driver = driverFor(s, uniquePrefix('cancel'), MIN_PART_SIZE)
  const before = randomBytes(MIN_PART_SIZE + 5)
  await driver.putContent('/u/data', before)
  const w = await driver.writer('/u/data', { append: true })
  await w.write(randomBytes(2 * MIN_PART_SIZE + 1)) // at least one part went out
  await w.cancel()
  t.true((await driver.getContent('/u/data')).equals(before))
  const uploads = await driver.client.send(new ListMultipartUploadsCommand({ Bucket: driver.bucket, Prefix: driver.prefix }))
  t.is(uploads.Uploads?.length ?? 0, 0)
})

test('s3: an append writer refuses to continue an object that changed since it was opened', async t => {
  const s = await s3()
  const driver = driverFor(s, uniquePrefix('changed'), MIN_PART_SIZE)
  await driver.putContent('/u/data', Buffer.from('abc'))
  const w = await driver.writer('/u/data', { append: true })
  await driver.putContent('/u/data', Buffer.from('xyz!'))
  await t.throwsAsync(w.write(Buffer.from('def')), { instanceOf: StorageDriverError })
  t.is((await driver.getContent('/u/data')).toString(), 'xyz!')
})

test('s3: putContentIfAbsent creates once (If-None-Match: *), the lock primitive for several instances', async t => {
  const s = await s3()
  const prefix = uniquePrefix('cond')
  const drivers = Array.from({ length: 8 }, () => driverFor(s, prefix))
  const results = await Promise.all(drivers.map((d, i) => d.putContentIfAbsent('/locks/gc', Buffer.from(`owner ${i}`))))
  t.is(results.filter(Boolean).length, 1)
  const winner = results.indexOf(true)
  t.is((await drivers[0]!.getContent('/locks/gc')).toString(), `owner ${winner}`)
})

test('s3: touch moves the modification time and keeps the bytes', async t => {
  const s = await s3()
  const driver = driverFor(s, uniquePrefix('touch'))
  await driver.putContent('/f', Buffer.from('same'))
  const before = (await driver.stat('/f')).modTime
  await new Promise(resolve => setTimeout(resolve, 1100)) // S3 times have one-second resolution
  await driver.touch('/f')
  t.true((await driver.stat('/f')).modTime.getTime() > before.getTime())
  t.is((await driver.getContent('/f')).toString(), 'same')
  await t.throwsAsync(driver.touch('/missing'), { instanceOf: PathNotFoundError })
})

test('s3: delete of a subtree with more keys than one DeleteObjects request (Content-MD5 sent)', async t => {
  const s = await s3()
  const driver = driverFor(s, uniquePrefix('bulk'))
  const paths = Array.from({ length: 1100 }, (_, i) => `/d/${String(i).padStart(4, '0')}`)
  for (let i = 0; i < paths.length; i += 64) await Promise.all(paths.slice(i, i + 64).map(p => driver.putContent(p, Buffer.from(p))))
  t.is((await driver.list('/d')).length, 1100)
  await driver.delete('/d')
  await t.throwsAsync(driver.list('/d'), { instanceOf: PathNotFoundError })
})

test('s3: keys are read back byte for byte through the raw API too', async t => {
  const s = await s3()
  const driver = driverFor(s, uniquePrefix('raw'))
  await driver.putContent('/a/b', Buffer.from('payload'))
  const out = await driver.client.send(new GetObjectCommand({ Bucket: driver.bucket, Key: `${driver.prefix}/a/b` }))
  t.is(await out.Body?.transformToString(), 'payload')
})

test.serial('s3: a 256 MiB streamed write and read keep memory bounded (parts, not the blob, in memory)', async t => {
  const s = await s3()
  const driver = driverFor(s, uniquePrefix('memory'))
  const size = 256 * 1024 * 1024
  const block = randomBytes(1024 * 1024)
  const expected = createHash('sha256')
  for (let i = 0; i < size / block.byteLength; i++) expected.update(block)
  global.gc?.()
  const baseline = process.memoryUsage().rss
  let peak = baseline
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20)
  t.teardown(() => clearInterval(sampler))
  const writeStart = performance.now()
  const writer = await driver.writer('/blob/data')
  for (let i = 0; i < size / block.byteLength; i++) await writer.write(block)
  await writer.commit()
  const writeMs = performance.now() - writeStart
  const readStart = performance.now()
  const hash = createHash('sha256')
  let read = 0
  for await (const chunk of await driver.reader('/blob/data')) {
    hash.update(chunk as Buffer)
    read += (chunk as Buffer).byteLength
  }
  const readMs = performance.now() - readStart
  clearInterval(sampler)
  t.is(read, size)
  t.is(hash.digest('hex'), expected.digest('hex'))
  const grew = (peak - baseline) / 1024 / 1024
  t.log(`write ${(256 / (writeMs / 1000)).toFixed(0)} MiB/s, read ${(256 / (readMs / 1000)).toFixed(0)} MiB/s, RSS grew ${grew.toFixed(0)} MiB`)
  // Two 8 MiB parts and the SDK's buffers, not 256 MiB.
  t.true(grew < 128, `RSS grew ${grew.toFixed(0)} MiB`)
  await driver.delete('/blob')
})

test('s3: abortIncompleteWrites discards multipart uploads a killed process left, and only old ones', async t => {
  const s = await s3()
  const driver = driverFor(s, uniquePrefix('abandoned'), MIN_PART_SIZE)
  const writer = await driver.writer('/u/data', { append: true })
  await writer.write(randomBytes(MIN_PART_SIZE + 1)) // a part went out: a multipart upload exists
  // ... and the process dies here: no close, no cancel.
  const listUploads = async () =>
    (await driver.client.send(new ListMultipartUploadsCommand({ Bucket: driver.bucket, Prefix: `${driver.prefix}/` }))).Uploads ?? []
  await waitFor('the multipart upload to be listed', async () => (await listUploads()).length > 0)
  t.is((await listUploads()).length, 1)
  t.is(await driver.abortIncompleteWrites(new Date(Date.now() - 3600_000)), 0, 'a recent one is kept')
  t.is(await driver.abortIncompleteWrites(new Date(Date.now() + 60_000)), 1)
  t.is((await listUploads()).length, 0)
  await t.throwsAsync(driver.stat('/u/data'), { instanceOf: PathNotFoundError })
})

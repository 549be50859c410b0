/**
 * Upload state shared through S3 by several instances (two UploadStores on one bucket prefix, as
 * two Berth processes): an upload continues on any instance, and a hash cached by one instance
 * is never trusted after another rewrote the bytes (the S3 ETag changed), so no blob can be stored
 * under a digest its bytes do not have.
 */
import { createHash, randomBytes } from 'node:crypto'
import test from 'ava'
import type { S3Driver } from '../../../src/storage/driver/s3.js'
import { createRegistryStore } from '../../../src/storage/registry-store.js'
import { DigestMismatchError } from '../../../src/storage/errors.js'
import { parseDigest } from '../../../src/storage/digest.js'
import { uploadDataPath } from '../../../src/storage/paths.js'
import { uniquePrefix, type S3Server } from '../../helpers/ceph.js'
import { s3DriverFor, s3ForFile } from '../../helpers/s3.js'

const started = s3ForFile(test)

function driverFor(s3: S3Server, prefix: string): S3Driver {
  return s3DriverFor(s3, prefix, { partSize: 5 * 1024 * 1024 })
}

function digestOf(...parts: Buffer[]) {
  const hash = createHash('sha256')
  for (const part of parts) hash.update(part)
  return parseDigest(`sha256:${hash.digest('hex')}`)
}

test('an upload started on one instance takes chunks on the other and completes on either', async t => {
  const s3 = await started
  const prefix = uniquePrefix('uploads')
  const [a, b] = [createRegistryStore(driverFor(s3, prefix)), createRegistryStore(driverFor(s3, prefix))]
  const chunks = [randomBytes(6 * 1024 * 1024), randomBytes(10), randomBytes(5 * 1024 * 1024 + 1)]
  const id = await a.uploads.start('team/app')
  t.is(await a.uploads.append('team/app', id, [chunks[0]!], { start: 0 }), chunks[0]!.byteLength)
  t.is(await b.uploads.append('team/app', id, [chunks[1]!], { start: chunks[0]!.byteLength }), chunks[0]!.byteLength + 10)
  t.is(await b.uploads.size('team/app', id), chunks[0]!.byteLength + 10)
  const total = chunks.reduce((n, c) => n + c.byteLength, 0)
  const info = await a.uploads.complete('team/app', id, digestOf(...chunks), [chunks[2]!])
  t.deepEqual(info, { digest: digestOf(...chunks).value, size: total })
  t.true((await b.blobs.getContent(info.digest)).equals(Buffer.concat(chunks)))
})

test('a hash cached by one instance is not trusted once another instance rewrote the bytes (same length)', async t => {
  const s3 = await started
  const prefix = uniquePrefix('uploads')
  const driver = driverFor(s3, prefix)
  const a = createRegistryStore(driver)
  const id = await a.uploads.start('team/app')
  const mine = randomBytes(4096)
  await a.uploads.append('team/app', id, [mine], { start: 0 })
  // Another instance (or a racing request) leaves other bytes of the same length.
  const theirs = randomBytes(4096)
  await driverFor(s3, prefix).putContent(uploadDataPath('team/app', id), theirs)
  // Instance A's cached hash says digestOf(mine): it must re-hash and refuse that digest.
  await t.throwsAsync(a.uploads.complete('team/app', id, digestOf(mine)), { instanceOf: DigestMismatchError })
  t.is(await a.blobs.statGlobal(digestOf(mine)), undefined, 'nothing stored under a digest its bytes do not have')

  // And the honest path: what is stored is what the digest says.
  const id2 = await a.uploads.start('team/app')
  await a.uploads.append('team/app', id2, [mine], { start: 0 })
  await driverFor(s3, prefix).putContent(uploadDataPath('team/app', id2), theirs)
  const info = await a.uploads.complete('team/app', id2, digestOf(theirs))
  t.is(info.digest, digestOf(theirs).value)
})

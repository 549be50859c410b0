import test from 'ava'
import { randomUUID } from 'node:crypto'
import { mkdir, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { parseDigest } from '../../src/storage/digest.js'
import { UploadRangeError, UploadSizeError, UploadUnknownError } from '../../src/storage/errors.js'
import { uploadPath, uploadStartedAtPath } from '../../src/storage/paths.js'
import { findStaleUploads } from '../../src/storage/purge-uploads.js'
import { createRegistryStore } from '../../src/storage/registry-store.js'
import { sha256, tempRoot } from '../registry/fixtures.js'

test('startedat is written as registry:2 writes it (RFC 3339, UTC, no fraction)', async t => {
  const driver = new InMemoryDriver()
  const store = createRegistryStore(driver)
  const id = await store.uploads.start('a/b')
  const text = (await driver.getContent(uploadStartedAtPath('a/b', id))).toString()
  t.regex(text, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
})

test('purge deletes uploads older than the cut-off and keeps the rest', async t => {
  const driver = new FilesystemDriver(await tempRoot(t))
  const store = createRegistryStore(driver)
  const old = await store.uploads.start('team/app')
  const fresh = await store.uploads.start('team/app')
  const nested = await store.uploads.start('team/app/sub')
  await store.uploads.append('team/app', old, [Buffer.from('partial')])
  await driver.putContent(uploadStartedAtPath('team/app', old), Buffer.from('2020-01-01T00:00:00Z'))
  await driver.putContent(uploadStartedAtPath('team/app/sub', nested), Buffer.from('2020-01-01T00:00:00Z'))
  const purged = await store.uploads.purge(new Date(Date.now() - 3600_000))
  t.is(purged, 2)
  await t.throwsAsync(store.uploads.size('team/app', old), { instanceOf: UploadUnknownError })
  await t.throwsAsync(store.uploads.size('team/app/sub', nested), { instanceOf: UploadUnknownError })
  t.is(await store.uploads.size('team/app', fresh), 0)
  t.is(await createRegistryStore(new InMemoryDriver()).uploads.purge(new Date()), 0)
})

test('purge deletes an upload folder without startedat (a start that failed) once its last change is older than the cut-off', async t => {
  const root = await tempRoot(t)
  const driver = new FilesystemDriver(root)
  const store = createRegistryStore(driver)
  const live = await store.uploads.start('team/app')
  // What a putContent of startedat cut by EMFILE leaves: the folder, maybe its temporary file.
  const failed = async (age: Date | undefined): Promise<string> => {
    const id = randomUUID()
    const folder = join(root, uploadPath('team/app', id))
    await mkdir(folder, { recursive: true })
    const temporary = join(folder, `.startedat.${randomUUID()}.tmp`)
    await writeFile(temporary, '')
    if (age) {
      await utimes(temporary, age, age)
      await utimes(folder, age, age)
    }
    return id
  }
  const old = await failed(new Date('2020-01-01T00:00:00Z'))
  const recent = await failed(undefined)
  const cutOff = new Date(Date.now() - 3600_000)
  t.deepEqual(
    (await findStaleUploads(driver, cutOff)).map(upload => upload.id),
    [old],
  )
  t.is(await store.uploads.purge(cutOff), 1)
  await t.throwsAsync(driver.stat(uploadPath('team/app', old)))
  t.truthy(await driver.stat(uploadPath('team/app', recent)))
  t.is(await store.uploads.size('team/app', live), 0)
})

test('append and complete through the store API', async t => {
  const store = createRegistryStore(new InMemoryDriver())
  const id = await store.uploads.start('x')
  t.is(await store.uploads.append('x', id, [Buffer.from('ab')], { start: 0, length: 2 }), 2)
  await t.throwsAsync(store.uploads.append('x', id, [Buffer.from('cd')], { start: 0 }), { instanceOf: UploadRangeError })
  await t.throwsAsync(store.uploads.append('x', id, [Buffer.from('cd')], { length: 3 }), { instanceOf: UploadSizeError })
  t.is(await store.uploads.size('x', id), 2)
  const info = await store.uploads.complete('x', id, parseDigest(sha256('abcd')), [Buffer.from('cd')])
  t.deepEqual(info, { digest: sha256('abcd'), size: 4 })
  t.is((await store.blobs.stat('x', sha256('abcd'))).size, 4)
})

test('concurrent chunks of one upload are serialized, never interleaved', async t => {
  const store = createRegistryStore(new FilesystemDriver(await tempRoot(t)))
  const id = await store.uploads.start('x')
  const parts = Array.from({ length: 8 }, (_, i) => Buffer.alloc(100_000, 65 + i))
  await Promise.all(parts.map(part => store.uploads.append('x', id, [part.subarray(0, 50_000), part.subarray(50_000)])))
  t.is(await store.uploads.size('x', id), 800_000)
  const data = await store.driver.getContent(`/docker/registry/v2/repositories/x/_uploads/${id}/data`)
  for (let i = 0; i < 8; i++) {
    const block = data.subarray(i * 100_000, (i + 1) * 100_000)
    t.true(
      block.every(b => b === block[0]),
      `block ${i} is interleaved`,
    )
  }
})

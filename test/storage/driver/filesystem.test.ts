import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm, stat, writeFile, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import v8 from 'node:v8'
import vm from 'node:vm'
import test from 'ava'
import { type FileRangeReader, FilesystemDriver, MIN_READ_CHUNK_BYTES, READ_CHUNK_BYTES } from '../../../src/storage/driver/filesystem.js'
import { InvalidPathError, PathNotFoundError } from '../../../src/storage/driver/storage-driver.js'
import { storageDriverSuite } from '../../suites/storage-driver.js'

storageDriverSuite('filesystem', {
  create: async () => new FilesystemDriver(await mkdtemp(join(tmpdir(), 'berth-fs-'))),
  destroy: async driver => rm((driver as FilesystemDriver).root, { recursive: true, force: true }),
})

test('filesystem: driver paths map below the root, as registry:2 lays them out', async t => {
  const root = await mkdtemp(join(tmpdir(), 'berth-fs-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const driver = new FilesystemDriver(root)
  await driver.putContent('/docker/registry/v2/repositories/a/_layers/sha256/ab/link', Buffer.from('sha256:ab'))
  t.is((await stat(join(root, 'docker/registry/v2/repositories/a/_layers/sha256/ab/link'))).size, 9)
})

test('filesystem: putContent leaves no temporary files behind, and list/walk never show them', async t => {
  const root = await mkdtemp(join(tmpdir(), 'berth-fs-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const driver = new FilesystemDriver(root)
  await driver.putContent('/dir/file', Buffer.from('x'))
  t.deepEqual(await readdir(join(root, 'dir')), ['file'])
  // A temp file left by a crash (kill -9 between write and rename) stays invisible.
  await writeFile(join(root, 'dir', '.file.0000.tmp'), 'half')
  t.deepEqual(await driver.list('/dir'), ['/dir/file'])
  const walked: string[] = []
  await driver.walk('/', info => void walked.push(info.path))
  t.deepEqual(walked, ['/dir', '/dir/file'])
})

test('filesystem: a symlink-free root cannot be escaped through the path rule', async t => {
  const root = await mkdtemp(join(tmpdir(), 'berth-fs-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  await mkdir(join(root, 'inside'))
  const driver = new FilesystemDriver(join(root, 'inside'))
  await t.throwsAsync(driver.putContent('/../outside', Buffer.from('x')), { instanceOf: InvalidPathError })
  await t.throwsAsync(driver.getContent('/../../etc/passwd'), { instanceOf: InvalidPathError })
  t.deepEqual(await readdir(root), ['inside'])
})

test('filesystem: reading a directory as content is PathNotFoundError', async t => {
  const root = await mkdtemp(join(tmpdir(), 'berth-fs-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const driver = new FilesystemDriver(root)
  await driver.putContent('/d/f', Buffer.from('x'))
  await t.throwsAsync(driver.getContent('/d'), { instanceOf: PathNotFoundError })
  await t.throwsAsync(driver.reader('/d'), { instanceOf: PathNotFoundError })
})

test.serial("filesystem: read buffers handed back with recycle are reused by the next reads, and concurrent readers never see each other's bytes", async t => {
  // Serial: the pool is shared by the process, and the suite's other readers take from it.
  const root = await mkdtemp(join(tmpdir(), 'berth-fs-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const driver = new FilesystemDriver(root)
  // Two files of different bytes, several chunks each plus a partial last chunk, read at once.
  const files = [randomBytes(5 * READ_CHUNK_BYTES + 123), randomBytes(3 * READ_CHUNK_BYTES + 7)]
  await Promise.all(files.map((bytes, i) => driver.putContent(`/f${i}`, bytes)))
  const seen = new Set<ArrayBufferLike>()
  let reused = 0
  const readRecycling = async (path: string, offset: number): Promise<Buffer> => {
    const reader = (await driver.reader(path, offset)) as FileRangeReader
    const parts: Buffer[] = []
    for await (const chunk of reader as AsyncIterable<Buffer>) {
      if (seen.has(chunk.buffer)) reused++
      seen.add(chunk.buffer)
      parts.push(Buffer.from(chunk)) // a copy: the chunk's buffer goes back to the pool now
      reader.recycle(chunk)
      reader.recycle(chunk) // twice: ignored, the buffer must not enter the pool twice
    }
    return Buffer.concat(parts)
  }
  for (let round = 0; round < 3; round++) {
    const [a, b] = await Promise.all([readRecycling('/f0', 0), readRecycling('/f1', 1000)])
    t.true(a.equals(files[0]!), `round ${round}: file 0 bytes differ`)
    t.true(b.equals(files[1]!.subarray(1000)), `round ${round}: file 1 bytes differ`)
  }
  // 3 rounds × 10 chunks, from a handful of buffers (one chunk read ahead per reader, two readers).
  t.true(reused >= 20, `only ${reused} chunks reused a buffer`)
  t.true(seen.size <= 8, `${seen.size} distinct buffers for 30 chunks`)
})

test.serial('filesystem: a reader whose consumer never recycles does not hold the chunks it read (memory stays flat)', async t => {
  // Hashing a whole upload and a mirror client reading the rest of a blob consume chunks without
  // handing them back: the reader, still open, must not keep them all (a 5 GiB upload hashed at
  // completion held 5 GiB).
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc') as () => void
  const root = await mkdtemp(join(tmpdir(), 'berth-fs-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const driver = new FilesystemDriver(root)
  await driver.putContent('/f', randomBytes(16 * READ_CHUNK_BYTES))
  const reader = (await driver.reader('/f')) as FileRangeReader
  const chunks: Array<WeakRef<ArrayBufferLike>> = []
  let read = 0
  for await (const chunk of reader as AsyncIterable<Buffer>) {
    chunks.push(new WeakRef(chunk.buffer))
    read += chunk.byteLength
    if (read >= 12 * READ_CHUNK_BYTES) break // the reader is still referenced below
  }
  await new Promise(resolve => setImmediate(resolve)) // WeakRefs hold their target until the job ends
  gc()
  const alive = chunks.filter(ref => ref.deref() !== undefined).length
  t.true(alive <= 2, `${alive} of ${chunks.length} chunks still held after a collection`)
  t.truthy(reader) // keeps the reader alive through the collection
})

test.serial(
  "filesystem: a reader's chunkBytes sets the size of its next reads (powers of two from 16 KiB to 256 KiB), and its bytes stay right while it changes",
  async t => {
    // The blob GET handler starts a download at 16 KiB reads and grows them as the client takes
    // bytes, so a client that stops reading holds small chunks (issue #8, slow read).
    const root = await mkdtemp(join(tmpdir(), 'berth-fs-'))
    t.teardown(() => rm(root, { recursive: true, force: true }))
    const driver = new FilesystemDriver(root)
    const bytes = randomBytes(8 * READ_CHUNK_BYTES + 5)
    await driver.putContent('/f', bytes)
    const reader = (await driver.reader('/f', 3)) as FileRangeReader
    t.is(reader.chunkBytes, READ_CHUNK_BYTES, 'a reader nobody resizes reads whole chunks')
    reader.chunkBytes = 0
    t.is(reader.chunkBytes, MIN_READ_CHUNK_BYTES)
    reader.chunkBytes = 100_000
    t.is(reader.chunkBytes, 64 * 1024, 'rounded down to a power of two')
    reader.chunkBytes = 10 * READ_CHUNK_BYTES
    t.is(reader.chunkBytes, READ_CHUNK_BYTES)
    reader.chunkBytes = 0
    const sizes: number[] = []
    const parts: Buffer[] = []
    const takenBefore: number[] = []
    let taken = 0
    for await (const chunk of reader as AsyncIterable<Buffer>) {
      sizes.push(chunk.byteLength)
      takenBefore.push(taken)
      parts.push(Buffer.from(chunk))
      taken += chunk.byteLength
      reader.chunkBytes = taken / 4 // as the handler does
      reader.recycle(chunk)
    }
    t.true(Buffer.concat(parts).equals(bytes.subarray(3)))
    // One chunk is read ahead, so a size set after chunk i applies from chunk i + 2 on: no chunk is
    // larger than a quarter of what was taken two chunks before, and none is smaller than 16 KiB.
    sizes.slice(0, -1).forEach((size, i) => {
      const allowed = Math.max(MIN_READ_CHUNK_BYTES, Math.min(READ_CHUNK_BYTES, (takenBefore[i - 1] ?? 0) / 4))
      t.true(size >= MIN_READ_CHUNK_BYTES && size <= allowed, `chunk ${i}: ${size} bytes, ${allowed} allowed`)
    })
    t.deepEqual(sizes.slice(0, 8), Array(8).fill(MIN_READ_CHUNK_BYTES), 'the first 128 KiB in 16 KiB reads')
    t.is(Math.max(...sizes), READ_CHUNK_BYTES, 'whole chunks once 1 MiB was taken')
  },
)

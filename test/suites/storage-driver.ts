/**
 * The conformance suite every StorageDriver passes (distribution's `testsuites` idea). A driver
 * test file calls `storageDriverSuite` once; ava runs each file in its own process.
 */
import { randomBytes } from 'node:crypto'
import { type Readable } from 'node:stream'
import anyTest, { type TestFn } from 'ava'
import {
  InvalidOffsetError,
  InvalidPathError,
  LockBusyError,
  PathNotFoundError,
  statFile,
  type FileInfo,
  type StorageDriver,
} from '../../src/storage/driver/storage-driver.js'

export interface DriverFactory {
  create(): Promise<StorageDriver>
  /** Optional cleanup (temp folders). */
  destroy?(driver: StorageDriver): Promise<void>
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array))
  return Buffer.concat(chunks)
}

export function storageDriverSuite(label: string, factory: DriverFactory): void {
  const test = anyTest as TestFn<{ driver: StorageDriver }>
  test.beforeEach(async t => {
    t.context.driver = await factory.create()
  })
  test.afterEach.always(async t => {
    if (t.context.driver && factory.destroy) await factory.destroy(t.context.driver)
  })

  test(`${label}: putContentIfAbsent creates once, never overwrites`, async t => {
    const { driver } = t.context
    const results = await Promise.all(Array.from({ length: 5 }, (_, i) => driver.putContentIfAbsent('/once/x', Buffer.from(`writer ${i}`))))
    t.is(results.filter(Boolean).length, 1)
    const winner = results.indexOf(true)
    t.is((await driver.getContent('/once/x')).toString(), `writer ${winner}`)
    t.deepEqual(await driver.list('/once'), ['/once/x'], 'no temporary objects left')
  })

  test(`${label}: lock excludes other holders until released`, async t => {
    const { driver } = t.context
    const results = await Promise.allSettled(Array.from({ length: 4 }, () => driver.lock('/locks/a')))
    const held = results.filter((r): r is PromiseFulfilledResult<Awaited<ReturnType<StorageDriver['lock']>>> => r.status === 'fulfilled')
    t.is(held.length, 1, 'exactly one of four concurrent takers holds it')
    for (const r of results) if (r.status === 'rejected') t.true(r.reason instanceof LockBusyError)
    const lock = held[0]!.value
    t.true(await lock.stillHeld())
    const waiter = driver.lock('/locks/a', { waitMs: Infinity, pollMs: 20 })
    let acquired = false
    void waiter.then(
      () => (acquired = true),
      () => {},
    )
    await new Promise(resolve => setTimeout(resolve, 100))
    t.false(acquired, 'a waiter waits while the lock is held')
    await lock.release()
    await lock.release() // idempotent
    const next = await waiter
    t.true(await next.stillHeld())
    const aborting = new AbortController()
    const aborted = driver.lock('/locks/a', { waitMs: Infinity, pollMs: 20, signal: aborting.signal })
    setTimeout(() => aborting.abort(new Error('gave up')), 50)
    await t.throwsAsync(aborted, { message: 'gave up' })
    await next.release()
    await t.throwsAsync(driver.stat('/locks/a'), { instanceOf: PathNotFoundError }, 'release deletes the lock')
  })

  test(`${label}: a stale lock is taken over, and its old holder learns it lost it`, async t => {
    const { driver } = t.context
    const old = await driver.lock('/locks/b', { heartbeatMs: 60_000 })
    // Its holder stopped updating it (as a crashed one would) a minute ago.
    const record = JSON.parse((await driver.getContent('/locks/b')).toString()) as { updated: number }
    await driver.putContent('/locks/b', Buffer.from(JSON.stringify({ ...record, host: 'elsewhere', updated: Date.now() - 60_000 })))
    await t.throwsAsync(driver.lock('/locks/b', { staleMs: 120_000 }), { instanceOf: LockBusyError }, 'not stale yet for a longer staleMs')
    const taken = await driver.lock('/locks/b', { staleMs: 30_000 })
    t.false(await old.stillHeld())
    t.true(old.lost.aborted)
    await old.release() // leaves the new holder's lock alone
    t.true(await taken.stillHeld())
    await taken.release()
    // An unreadable lock is judged by its object's time: a fresh one is kept.
    await driver.putContent('/locks/c', Buffer.from('{half'))
    await t.throwsAsync(driver.lock('/locks/c'), { instanceOf: LockBusyError })
  })

  test(`${label}: removeEmptyDirectory never removes a folder with something in it`, async t => {
    const { driver } = t.context
    await driver.putContent('/dir/sub/file', Buffer.from('x'))
    await driver.removeEmptyDirectory('/dir/sub')
    await driver.removeEmptyDirectory('/dir')
    t.is((await driver.getContent('/dir/sub/file')).toString(), 'x')
    await driver.delete('/dir/sub/file')
    await driver.removeEmptyDirectory('/dir/sub')
    await driver.removeEmptyDirectory('/dir')
    await t.throwsAsync(driver.list('/dir'), { instanceOf: PathNotFoundError })
  })

  test(`${label}: putContent then getContent returns the same bytes`, async t => {
    const bytes = randomBytes(4096)
    await t.context.driver.putContent('/a/b/c', bytes)
    t.deepEqual(await t.context.driver.getContent('/a/b/c'), bytes)
  })

  test(`${label}: putContent replaces an existing object`, async t => {
    await t.context.driver.putContent('/x', Buffer.from('first, longer content'))
    await t.context.driver.putContent('/x', Buffer.from('second'))
    t.is((await t.context.driver.getContent('/x')).toString(), 'second')
  })

  test(`${label}: empty content round-trips`, async t => {
    await t.context.driver.putContent('/empty', new Uint8Array(0))
    t.is((await t.context.driver.getContent('/empty')).byteLength, 0)
    t.is((await t.context.driver.stat('/empty')).size, 0)
  })

  test(`${label}: a missing path rejects with PathNotFoundError everywhere`, async t => {
    const { driver } = t.context
    await t.throwsAsync(driver.getContent('/missing'), { instanceOf: PathNotFoundError })
    await t.throwsAsync(driver.reader('/missing'), { instanceOf: PathNotFoundError })
    await t.throwsAsync(driver.stat('/missing'), { instanceOf: PathNotFoundError })
    await t.throwsAsync(driver.list('/missing'), { instanceOf: PathNotFoundError })
    await t.throwsAsync(driver.move('/missing', '/elsewhere'), { instanceOf: PathNotFoundError })
    await t.throwsAsync(driver.delete('/missing'), { instanceOf: PathNotFoundError })
  })

  // distribution's list (testsuites.go TestInvalidPaths) plus dot segments and encodings.
  for (const path of ['', 'relative', '//double', '/trailing/', '/a/../b', '/a/./b', '/..', '/.', '/a/%2e%2e/b', '/a\\b', '/a b', '/a\0b', '/é']) {
    test(`${label}: rejects invalid path ${JSON.stringify(path)}`, async t => {
      const { driver } = t.context
      await t.throwsAsync(driver.putContent(path, Buffer.from('x')), { instanceOf: InvalidPathError })
      await t.throwsAsync(driver.getContent(path), { instanceOf: InvalidPathError })
      await t.throwsAsync(driver.writer(path), { instanceOf: InvalidPathError })
      await t.throwsAsync(driver.delete(path), { instanceOf: InvalidPathError })
    })
  }

  test(`${label}: stat reports size and kind`, async t => {
    const { driver } = t.context
    await driver.putContent('/dir/file', Buffer.alloc(123))
    const file = await driver.stat('/dir/file')
    t.is(file.size, 123)
    t.false(file.isDir)
    t.is(file.path, '/dir/file')
    t.true((await driver.stat('/dir')).isDir)
  })

  test(`${label}: statFile finds files only: a folder or nothing is not found`, async t => {
    const { driver } = t.context
    await driver.putContent('/sf/dir/file', Buffer.alloc(45))
    const file = await statFile(driver, '/sf/dir/file')
    t.is(file.size, 45)
    t.false(file.isDir)
    t.is(file.path, '/sf/dir/file')
    await t.throwsAsync(statFile(driver, '/sf/dir'), { instanceOf: PathNotFoundError })
    await t.throwsAsync(statFile(driver, '/sf/missing'), { instanceOf: PathNotFoundError })
  })

  test(`${label}: move gives the destination a new modification time when the driver says so`, async t => {
    const { driver } = t.context
    await driver.putContent('/mt/src', Buffer.from('x'))
    const before = (await driver.stat('/mt/src')).modTime.getTime()
    await new Promise(resolve => setTimeout(resolve, 1100)) // S3 keeps whole seconds
    await driver.move('/mt/src', '/mt/dst')
    const after = (await driver.stat('/mt/dst')).modTime.getTime()
    if (driver.capabilities.moveRefreshesModTime) t.true(after > before)
    else t.is(after, before)
  })

  test(`${label}: list returns direct children as full paths, sorted`, async t => {
    const { driver } = t.context
    await driver.putContent('/l/b/deep', Buffer.from('1'))
    await driver.putContent('/l/a', Buffer.from('2'))
    await driver.putContent('/l/c/x/y', Buffer.from('3'))
    t.deepEqual(await driver.list('/l'), ['/l/a', '/l/b', '/l/c'])
  })

  test(`${label}: reader streams from an offset and for a length`, async t => {
    const { driver } = t.context
    const bytes = randomBytes(3 * 1024 * 1024 + 17)
    await driver.putContent('/big', bytes)
    t.deepEqual(await readAll(await driver.reader('/big')), bytes)
    t.deepEqual(await readAll(await driver.reader('/big', 1000)), bytes.subarray(1000))
    t.deepEqual(await readAll(await driver.reader('/big', 1000, 50)), bytes.subarray(1000, 1050))
    t.is((await readAll(await driver.reader('/big', bytes.byteLength))).byteLength, 0)
    await t.throwsAsync(driver.reader('/big', bytes.byteLength + 1), { instanceOf: InvalidOffsetError })
    await t.throwsAsync(driver.reader('/big', -1), { instanceOf: InvalidOffsetError })
  })

  test(`${label}: a writer's bytes are invisible until commit`, async t => {
    const { driver } = t.context
    const writer = await driver.writer('/w/file')
    await writer.write(Buffer.from('hello '))
    await writer.write(Buffer.from('world'))
    t.is(writer.size, 11)
    await t.throwsAsync(driver.getContent('/w/file'), { instanceOf: PathNotFoundError })
    await writer.commit()
    t.is((await driver.getContent('/w/file')).toString(), 'hello world')
  })

  test(`${label}: a writer over an existing object keeps the old bytes until commit`, async t => {
    const { driver } = t.context
    await driver.putContent('/w/file', Buffer.from('old'))
    const writer = await driver.writer('/w/file')
    await writer.write(Buffer.from('new bytes'))
    t.is((await driver.getContent('/w/file')).toString(), 'old')
    await writer.commit()
    t.is((await driver.getContent('/w/file')).toString(), 'new bytes')
  })

  test(`${label}: cancel discards a new writer's file`, async t => {
    const { driver } = t.context
    const writer = await driver.writer('/w/cancelled')
    await writer.write(Buffer.from('nope'))
    await writer.cancel()
    await t.throwsAsync(driver.stat('/w/cancelled'), { instanceOf: PathNotFoundError })
  })

  test(`${label}: append continues a file across writers (resumable uploads)`, async t => {
    const { driver } = t.context
    const first = await driver.writer('/u/data', { append: true })
    await first.write(Buffer.from('abc'))
    await first.close()
    t.is((await driver.getContent('/u/data')).toString(), 'abc')
    const second = await driver.writer('/u/data', { append: true })
    t.is(second.size, 3)
    await second.write(Buffer.from('def'))
    await second.commit()
    t.is((await driver.getContent('/u/data')).toString(), 'abcdef')
  })

  test(`${label}: cancel of an append writer cuts the file back to its size at open`, async t => {
    const { driver } = t.context
    await driver.putContent('/u/data', Buffer.from('keep'))
    const writer = await driver.writer('/u/data', { append: true })
    await writer.write(Buffer.alloc(2 * 1024 * 1024, 1)) // larger than any write buffer, so it reached the file
    await writer.cancel()
    t.is((await driver.getContent('/u/data')).toString(), 'keep')
  })

  test(`${label}: a large streamed write arrives intact`, async t => {
    const { driver } = t.context
    const parts = Array.from({ length: 40 }, () => randomBytes(64 * 1024 + 3))
    const writer = await driver.writer('/large', { append: true })
    for (const part of parts) await writer.write(part)
    await writer.commit()
    t.deepEqual(await driver.getContent('/large'), Buffer.concat(parts))
  })

  test(`${label}: writes after commit are refused`, async t => {
    const writer = await t.context.driver.writer('/done')
    await writer.commit()
    await t.throwsAsync(writer.write(Buffer.from('late')))
  })

  test(`${label}: move replaces the destination and removes the source`, async t => {
    const { driver } = t.context
    await driver.putContent('/m/src', Buffer.from('payload'))
    await driver.putContent('/m2/dst', Buffer.from('old'))
    await driver.move('/m/src', '/m2/dst')
    t.is((await driver.getContent('/m2/dst')).toString(), 'payload')
    await t.throwsAsync(driver.stat('/m/src'), { instanceOf: PathNotFoundError })
    await driver.putContent('/m/src2', Buffer.from('x'))
    await driver.move('/m/src2', '/new/parent/dst')
    t.is((await driver.getContent('/new/parent/dst')).toString(), 'x')
  })

  test(`${label}: delete removes a file or a whole subtree`, async t => {
    const { driver } = t.context
    await driver.putContent('/d/a/1', Buffer.from('1'))
    await driver.putContent('/d/a/2', Buffer.from('2'))
    await driver.putContent('/d/b', Buffer.from('3'))
    await driver.delete('/d/b')
    await t.throwsAsync(driver.stat('/d/b'), { instanceOf: PathNotFoundError })
    await driver.delete('/d/a')
    await t.throwsAsync(driver.stat('/d/a/1'), { instanceOf: PathNotFoundError })
    await t.throwsAsync(driver.stat('/d/a'), { instanceOf: PathNotFoundError })
  })

  test(`${label}: walk visits everything depth first and honours 'skip'`, async t => {
    const { driver } = t.context
    await driver.putContent('/t/a/x', Buffer.from('1'))
    await driver.putContent('/t/a/y/z', Buffer.from('2'))
    await driver.putContent('/t/b/_skip/hidden', Buffer.from('3'))
    await driver.putContent('/t/c', Buffer.from('4'))
    const seen: FileInfo[] = []
    await driver.walk('/t', info => {
      seen.push(info)
      return info.path.endsWith('/_skip') ? 'skip' : undefined
    })
    t.deepEqual(
      seen.map(i => `${i.path}${i.isDir ? '/' : ''}`),
      ['/t/a/', '/t/a/x', '/t/a/y/', '/t/a/y/z', '/t/b/', '/t/b/_skip/', '/t/c'],
    )
    await t.throwsAsync(
      driver.walk('/nothing', () => {}),
      { instanceOf: PathNotFoundError },
    )
  })

  test(`${label}: concurrent putContent on one path leaves one whole value`, async t => {
    const { driver } = t.context
    const values = Array.from({ length: 20 }, (_, i) => Buffer.alloc(100_000, i))
    await Promise.all(values.map(v => driver.putContent('/race', v)))
    const result = await driver.getContent('/race')
    t.true(values.some(v => v.equals(result)))
  })
}

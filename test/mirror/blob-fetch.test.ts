/**
 * One blob download shared by several readers: a reader behind the others is detached and finishes
 * from storage, a lone slow one paces the download, one that stops reading is detached after
 * STALL_MS; memory stays bounded.
 */
import { createHash, randomBytes } from 'node:crypto'
import test from 'ava'
import { BlobFetch, MAX_QUEUED_BYTES, REPLAY_BYTES, STALL_MS } from '../../src/mirror/blob-fetch.js'
import { parseDigest } from '../../src/storage/digest.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import { createRegistryStore } from '../../src/storage/registry-store.js'

const CHUNK = 64 * 1024

function source(content: Buffer, options: { corruptLast?: boolean } = {}) {
  let destroyed = false
  async function* chunks(): AsyncGenerator<Buffer> {
    for (let offset = 0; offset < content.byteLength && !destroyed; offset += CHUNK) {
      const chunk = Buffer.from(content.subarray(offset, offset + CHUNK))
      if (options.corruptLast === true && offset + CHUNK >= content.byteLength) chunk[0] = chunk[0]! ^ 1
      await new Promise(resolve => setImmediate(resolve))
      yield chunk
    }
  }
  return { body: Object.assign(chunks(), { destroy: () => void (destroyed = true) }), size: content.byteLength }
}

async function digestOfStream(stream: AsyncIterable<Buffer>): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of stream) hash.update(chunk)
  return `sha256:${hash.digest('hex')}`
}

test('readers at any pace get the whole blob; a reader that falls behind by more than the queue is detached to storage', async t => {
  const content = randomBytes(MAX_QUEUED_BYTES * 3)
  const digest = parseDigest(`sha256:${createHash('sha256').update(content).digest('hex')}`)
  const store = createRegistryStore(new InMemoryDriver())
  const fetch = new BlobFetch(store, 'up.test/app', digest, 'http://upstream', 1024 ** 3, source(content))
  const fast = fetch.subscribe()
  const slow = fetch.subscribe()
  const fastDigest = digestOfStream(fast)
  await fetch.done // the slow reader has not read one chunk yet
  t.is(fetch.deferredCount, 1)
  t.is(await digestOfStream(slow), digest.value)
  t.is(await fastDigest, digest.value)
  // After the download, new readers come from storage.
  t.is(await digestOfStream(fetch.subscribe()), digest.value)
  t.is((await store.blobs.stat('up.test/app', digest)).size, content.byteLength)
  t.true(REPLAY_BYTES < MAX_QUEUED_BYTES)
})

test('a lone reader slower than the upstream paces the download instead of being detached to wait for the commit', async t => {
  const content = randomBytes(MAX_QUEUED_BYTES * 3)
  const digest = parseDigest(`sha256:${createHash('sha256').update(content).digest('hex')}`)
  const store = createRegistryStore(new InMemoryDriver())
  const fetch = new BlobFetch(store, 'up.test/app', digest, 'http://upstream', 1024 ** 3, source(content))
  const hash = createHash('sha256')
  let read = 0
  for await (const chunk of fetch.subscribe()) {
    hash.update(chunk as Buffer)
    read += (chunk as Buffer).byteLength
    // Slower than the source: a short pause every 256 KiB, never as long as STALL_MS.
    if (read % (256 * 1024) === 0) await new Promise(resolve => setTimeout(resolve, 5))
  }
  await fetch.done
  t.is(`sha256:${hash.digest('hex')}`, digest.value)
  t.is(fetch.deferredCount, 0, 'never detached: it paced the download')
})

test('a reader that stops reading holds the download up for STALL_MS at most, then is detached', async t => {
  const content = randomBytes(MAX_QUEUED_BYTES * 2)
  const digest = parseDigest(`sha256:${createHash('sha256').update(content).digest('hex')}`)
  const store = createRegistryStore(new InMemoryDriver())
  const fetch = new BlobFetch(store, 'up.test/app', digest, 'http://upstream', 1024 ** 3, source(content))
  const stuck = fetch.subscribe()
  const started = Date.now()
  await fetch.done
  t.true(Date.now() - started < STALL_MS + 5000, 'the download went on without the reader')
  t.is(fetch.deferredCount, 1)
  t.is(await digestOfStream(stuck), digest.value, 'the detached reader still gets every byte, from storage')
})

test('bytes that do not match the digest are never all handed out, and are not stored', async t => {
  const content = randomBytes(1024 * 1024)
  const digest = parseDigest(`sha256:${createHash('sha256').update(content).digest('hex')}`)
  const store = createRegistryStore(new InMemoryDriver())
  const fetch = new BlobFetch(store, 'up.test/app', digest, 'http://upstream', 1024 ** 3, source(content, { corruptLast: true }))
  let received = 0
  const reading = (async () => {
    for await (const chunk of fetch.subscribe()) received += (chunk as Buffer).byteLength
  })()
  await t.throwsAsync(reading, { message: /hash to sha256:[0-9a-f]{64}, not sha256/ })
  t.true(received < content.byteLength)
  t.is(await store.blobs.statGlobal(digest), undefined)
})

test('an upstream that sends more than the limit is cut off', async t => {
  const content = randomBytes(512 * 1024)
  const digest = parseDigest(`sha256:${createHash('sha256').update(content).digest('hex')}`)
  const store = createRegistryStore(new InMemoryDriver())
  const fetch = new BlobFetch(store, 'up.test/app', digest, 'http://upstream', 256 * 1024, { ...source(content), size: undefined })
  await t.throwsAsync(fetch.done, { message: /larger than the 262144 bytes accepted/ })
})

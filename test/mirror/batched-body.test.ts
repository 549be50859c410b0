/**
 * The mirror reads upstream bodies in batches: what arrives together goes on as one buffer, a
 * lone chunk is not held back until more comes, the bytes are unchanged, and a body that fails or
 * closes early fails the reader (never reads as a short, complete blob).
 */
import { randomBytes } from 'node:crypto'
import { PassThrough } from 'node:stream'
import test from 'ava'
import { batchedBody } from '../../src/mirror/batched-body.js'

const options = { minBytes: 64 * 1024, maxBytes: 256 * 1024, maxWaitMs: 5 }

test('chunks that arrived together come out as batches of at least minBytes, at most maxBytes plus one chunk, bytes unchanged', async t => {
  const body = new PassThrough({ highWaterMark: 4 * 1024 * 1024 })
  const content = randomBytes(3 * 1024 * 1024 + 123)
  for (let offset = 0; offset < content.byteLength; offset += 16 * 1024) body.write(content.subarray(offset, offset + 16 * 1024))
  body.end()
  const batches: Buffer[] = []
  for await (const batch of batchedBody(body, options)) batches.push(batch)
  t.true(Buffer.concat(batches).equals(content))
  for (const batch of batches.slice(0, -1)) {
    t.true(batch.byteLength >= options.minBytes, `batch of ${batch.byteLength}`)
    t.true(batch.byteLength < options.maxBytes + 16 * 1024, `batch of ${batch.byteLength}`)
  }
  t.true(batches.length <= Math.ceil(content.byteLength / options.minBytes))
})

test('a chunk smaller than minBytes is passed on while the body stays open (a slow upstream is not held back)', async t => {
  const body = new PassThrough()
  const batches = batchedBody(body, options)[Symbol.asyncIterator]()
  body.write(Buffer.from('first'))
  const first = await batches.next()
  t.is(first.value?.toString(), 'first')
  t.false(body.writableEnded)
  body.end(Buffer.from('second'))
  t.is((await batches.next()).value?.toString(), 'second')
  t.true((await batches.next()).done)
})

test('an empty body gives no batch', async t => {
  const body = new PassThrough()
  body.end()
  const batches: Buffer[] = []
  for await (const batch of batchedBody(body, options)) batches.push(batch)
  t.deepEqual(batches, [])
})

test('a body that fails mid-way fails the reader with its error', async t => {
  const body = new PassThrough()
  body.write(randomBytes(100 * 1024))
  setImmediate(() => body.destroy(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })))
  const error = await t.throwsAsync(async () => {
    for await (const _ of batchedBody(body, options));
  })
  t.is((error as NodeJS.ErrnoException).code, 'ECONNRESET')
})

test('a body closed before its end fails the reader as a premature close', async t => {
  const body = new PassThrough()
  body.write(Buffer.from('partial'))
  const batches = batchedBody(body, options)[Symbol.asyncIterator]()
  t.is((await batches.next()).value?.toString(), 'partial')
  body.destroy()
  const error = await t.throwsAsync(() => batches.next())
  t.is((error as NodeJS.ErrnoException).code, 'ERR_STREAM_PREMATURE_CLOSE')
})

test('a reader that stops early destroys the body', async t => {
  const body = new PassThrough()
  body.write(randomBytes(512 * 1024))
  for await (const _ of batchedBody(body, options)) break
  t.true(body.destroyed)
})

test('destroy() on the batched body destroys the body', t => {
  const body = new PassThrough()
  batchedBody(body, options).destroy()
  t.true(body.destroyed)
})

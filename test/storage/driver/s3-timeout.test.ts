/**
 * An S3 store that accepts requests and never answers (a Ceph RGW whose OSD died on a full disk
 * did exactly this in the benchmark) fails the driver's calls after `requestTimeoutMs` and the
 * SDK's retries, instead of holding them, and the registry clients behind them, forever.
 */
import { once } from 'node:events'
import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import test from 'ava'
import { S3Driver } from '../../../src/storage/driver/s3.js'
import { PathNotFoundError, StorageDriverError } from '../../../src/storage/driver/storage-driver.js'

test('a store that never answers: each call fails after the request timeout and 3 attempts, and says why', async t => {
  const sockets = new Set<net.Socket>()
  let requests = 0
  const silent = net.createServer(socket => {
    sockets.add(socket)
    socket.on('data', chunk => {
      if (chunk.toString('latin1').match(/^(GET|PUT|HEAD|POST|DELETE) /)) requests++
    })
    socket.on('error', () => {})
  })
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    silent.close()
  })
  const { port } = silent.address() as AddressInfo
  const driver = new S3Driver({
    endpoint: `http://127.0.0.1:${port}`,
    bucket: 'b',
    credentials: { accessKeyId: 'k', secretAccessKey: 's' },
    requestTimeoutMs: 500,
  })
  const error = await t.throwsAsync(driver.getContent('/docker/registry/v2/repositories/a/_layers/x'))
  t.true(error instanceof StorageDriverError, `${error?.name}: ${error?.message}`)
  t.regex(String(error?.message), /time/i, 'the error says it timed out')
  t.is(requests, 3, 'the SDK tried 3 times, each on a connection that had not answered')
  await t.throwsAsync(driver.putContent('/docker/registry/v2/repositories/a/_uploads/u/startedat', Buffer.from('x')))
  // Downloads go over the driver's own sockets (s3-get.ts): the same bound and attempts.
  requests = 0
  const read = await t.throwsAsync(driver.reader('/docker/registry/v2/blobs/sha256/ab/x/data'))
  t.true(read instanceof StorageDriverError, `${read?.name}: ${read?.message}`)
  t.regex(String(read?.message), /within 500 ms/)
  t.is(requests, 3)
})

test('a download the store answers with a chunked error body: the status decides (404 is a missing object, 503 an I/O error)', async t => {
  // Not every S3-compatible store sends a Content-Length with its error bodies.
  let status = 404
  const store = http.createServer((request, response) => {
    request.resume()
    response.writeHead(status, { 'Content-Type': 'application/xml', 'Transfer-Encoding': 'chunked' })
    response.write('<?xml version="1.0"?><Error><Code>')
    response.end(status === 404 ? 'NoSuchKey</Code></Error>' : 'SlowDown</Code></Error>')
  })
  store.listen(0, '127.0.0.1')
  await once(store, 'listening')
  t.teardown(() => {
    store.closeAllConnections()
    store.close()
  })
  const { port } = store.address() as AddressInfo
  const driver = new S3Driver({
    endpoint: `http://127.0.0.1:${port}`,
    bucket: 'b',
    credentials: { accessKeyId: 'k', secretAccessKey: 's' },
    requestTimeoutMs: 5_000,
  })
  const missing = await t.throwsAsync(driver.reader('/docker/registry/v2/blobs/sha256/ab/x/data'))
  t.true(missing instanceof PathNotFoundError, `${missing?.name}: ${missing?.message}`)
  status = 503
  const failed = await t.throwsAsync(driver.reader('/docker/registry/v2/blobs/sha256/ab/x/data'))
  t.true(failed instanceof StorageDriverError && !(failed instanceof PathNotFoundError), `${failed?.name}: ${failed?.message}`)
})

/**
 * Regression (found by slowhttptest's slow read at 3000 connections: 4.2 GB RSS in the engine):
 * Node runs every pipelined request on a connection at once and queues the responses, so a client
 * that pipelined many blob GETs and read slowly made the engine open and read ahead every blob in
 * the queue. A blob is now opened only when its response gets the socket.
 *
 * Regression (seen as a warning in the full hardening run's log): each queued response waited with
 * its own 'close' listener on the connection, so the eleventh pipelined request made Node print
 * MaxListenersExceededWarning ("possible EventEmitter memory leak"). The waiters now share one.
 * The tests run one at a time so that a warning is laid at the right test's door.
 */
import net from 'node:net'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Readable } from 'node:stream'
import { randomBytes } from 'node:crypto'
import test from 'ava'
import { createRegistryApp } from '../../src/registry/app.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import { pushBlob } from './common.js'
import { waitFor } from '../helpers/procs.js'
import { EDGE_DEFAULTS } from '../helpers/edge.js'

const warnings: string[] = []
process.on('warning', warning => warnings.push(`${warning.name}: ${warning.message}`))
function listenerWarnings(): string[] {
  return warnings.filter(warning => warning.startsWith('MaxListenersExceededWarning'))
}
function connections(server: Server): Promise<number> {
  return new Promise((resolve, reject) => server.getConnections((error, count) => (error ? reject(error) : resolve(count))))
}

class CountingDriver extends InMemoryDriver {
  opened = 0
  override async reader(path: string, offset?: number, length?: number): Promise<Readable> {
    if (path.endsWith('/data') && path.includes('/blobs/')) this.opened++
    return super.reader(path, offset, length)
  }
}

test.serial('50 pipelined blob GETs from a client that does not read open one blob at a time, and none once it leaves', async t => {
  warnings.length = 0
  const driver = new CountingDriver()
  const app = createRegistryApp({ driver })
  const server = createServer(app.handle)
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>(resolve => server.close(() => resolve()))
  })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const digest = await pushBlob(url, 'pipe/line', randomBytes(4 * 1024 * 1024))
  driver.opened = 0
  const socket = net.connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port })
  t.teardown(() => socket.destroy())
  await new Promise(resolve => socket.once('connect', resolve))
  socket.pause() // never read: the first response fills the socket buffers and stays there
  socket.write(`GET /v2/pipe/line/blobs/${digest} HTTP/1.1\r\nHost: x\r\n\r\n`.repeat(50))
  // Once the first is being served, give the server a second to (wrongly) open more.
  await waitFor('the first blob to be opened', async () => driver.opened >= 1, { intervalMs: 20 })
  await new Promise(resolve => setTimeout(resolve, 1000))
  t.log(`blob streams opened for 50 pipelined GETs, none read: ${driver.opened}`)
  t.true(driver.opened <= 2, `${driver.opened} blobs opened at once`)
  // The client leaves with 48 or more responses still queued: none of them opens its blob.
  const openedBefore = driver.opened
  socket.destroy()
  await waitFor('the server to see the connection close', async () => (await connections(server)) === 0, { intervalMs: 20 })
  await new Promise(resolve => setTimeout(resolve, 200))
  t.is(driver.opened, openedBefore, 'blobs opened after the client left')
  t.deepEqual(listenerWarnings(), [])
})

test.serial('the edge forwards a pipelined request only when its response gets the connection', async t => {
  warnings.length = 0
  const { startEdge } = await import('../../src/edge/edge.js')
  let received = 0
  const body = randomBytes(2 * 1024 * 1024)
  const upstream = createServer((req, res) => {
    received++
    res.writeHead(200, { 'content-length': body.byteLength })
    res.end(body)
  })
  await new Promise<void>(resolve => upstream.listen(0, '127.0.0.1', resolve))
  const edge = await startEdge({
    ...EDGE_DEFAULTS,
    mode: 'local',
    localPort: 0,
    host: '127.0.0.1',
    domains: [],
    upstream: { url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` },
  })
  t.teardown(async () => {
    await edge.close()
    upstream.closeAllConnections()
    await new Promise<void>(resolve => upstream.close(() => resolve()))
  })
  const port = Number(new URL(edge.urls.local!).port)
  const socket = net.connect({ host: '127.0.0.1', port })
  t.teardown(() => socket.destroy())
  await new Promise(resolve => socket.once('connect', resolve))
  socket.pause()
  socket.write('GET /v2/x/blobs/sha256:0 HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(50))
  await waitFor('the first request to be forwarded', async () => received >= 1, { intervalMs: 20 })
  await new Promise(resolve => setTimeout(resolve, 1000))
  t.log(`upstream requests for 50 pipelined GETs, none read: ${received}`)
  t.true(received <= 5, `${received} forwarded at once`) // the first answers fit in socket buffers
  // Reading everything gets all 50 answers, in order.
  socket.resume()
  let bytes = 0
  await new Promise<void>(resolve => {
    socket.on('data', chunk => {
      bytes += chunk.byteLength
      if (bytes >= 50 * body.byteLength) resolve()
    })
  })
  t.is(received, 50)
  t.deepEqual(listenerWarnings(), [])
})

/**
 * Regression (found by slowhttptest's slow read at 3000 connections: 4.2 GB RSS in the engine):
 * Node runs every pipelined request on a connection at once and queues the responses, so a client
 * that pipelined many blob GETs and read slowly made the engine open and read ahead every blob in
 * the queue. A blob is now opened only when its response gets the socket.
 */
import net from 'node:net'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Readable } from 'node:stream'
import { randomBytes } from 'node:crypto'
import test from 'ava'
import { createRegistryApp } from '../../src/registry/app.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import { pushBlob } from './common.js'

class CountingDriver extends InMemoryDriver {
  opened = 0
  override async reader(path: string, offset?: number, length?: number): Promise<Readable> {
    if (path.endsWith('/data') && path.includes('/blobs/')) this.opened++
    return super.reader(path, offset, length)
  }
}

test('50 pipelined blob GETs from a client that does not read open one blob at a time', async t => {
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
  await new Promise(resolve => setTimeout(resolve, 1000))
  t.log(`blob streams opened for 50 pipelined GETs, none read: ${driver.opened}`)
  t.true(driver.opened <= 2, `${driver.opened} blobs opened at once`)
})

/**
 * Issue 20, finding 2: with a small --max-body, a chunked body over the limit on a route that reads
 * no body ended the whole process (`Unhandled 'error' event … BodyTooLargeError`). Property: over body
 * limits × chunk sizes × body sizes × routes (authenticated and not), sent twice on one connection or
 * two, the server keeps answering, an upload over the limit gets 413, and nothing is stored from it.
 */
import http from 'node:http'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'ava'
import fc from 'fast-check'
import { startEdge, type Edge } from '../../src/edge/edge.js'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { createRegistryApp } from '../../src/registry/app.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import { LOCAL_TEST_EDGE } from '../helpers/edge.js'
import { basic, size, tempDir } from './common.js'

const LIMITS = [1024, 8 * 1024, 32 * 1024]
const ROUTES = [
  ['GET', '/v2/_catalog'],
  ['GET', '/v2/'],
  ['POST', '/v2/a/blobs/uploads/'],
  ['POST', '/v2/a/blobs/uploads/?digest=sha256:0000000000000000000000000000000000000000000000000000000000000000'],
  ['PUT', '/v2/a/manifests/latest'],
  ['DELETE', '/v2/a/manifests/latest'],
  ['PATCH', '/v2/a/blobs/uploads/nope'],
] as const
const AUTH = basic('u', 'pw')

/** Sends `total` bytes in `chunk`-sized chunked pieces; resolves with the status, or 0 when the connection was cut. */
function send(url: string, method: string, path: string, total: number, chunk: number, authorized: boolean): Promise<number> {
  return new Promise(resolve => {
    const target = new URL(url)
    const request = http.request({
      host: target.hostname,
      port: target.port,
      method,
      path,
      agent: false,
      headers: { 'transfer-encoding': 'chunked', ...(authorized ? { authorization: AUTH } : {}) },
    })
    request.on('response', response => {
      response.resume()
      response.on('end', () => resolve(response.statusCode ?? 0))
      response.on('error', () => resolve(response.statusCode ?? 0))
    })
    request.on('error', () => resolve(0))
    const piece = Buffer.alloc(chunk, 7)
    for (let sent = 0; sent < total; sent += chunk) request.write(piece.subarray(0, Math.min(chunk, total - sent)))
    request.end()
  })
}

test('no body limit, chunk size or route ends the process; uploads over the limit get 413', async t => {
  t.timeout(180_000)
  const dir = await tempDir(t)
  const htpasswd = join(dir, 'htpasswd')
  await writeFile(htpasswd, `u:${hashPassword('pw', 4)}\n`)
  const driver = new InMemoryDriver()
  const app = createRegistryApp({ driver })
  const edges = new Map<number, Edge>()
  for (const limit of LIMITS) {
    edges.set(
      limit,
      await startEdge({
        ...LOCAL_TEST_EDGE,
        htpasswdPath: htpasswd,
        maxBodyBytes: limit,
        engine: app.serve,
      }),
    )
  }
  t.teardown(async () => {
    for (const edge of edges.values()) await edge.close()
    await app.close()
  })
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...LIMITS),
      fc.integer({ min: 1, max: 64 * 1024 }),
      fc.integer({ min: 1, max: 200 * 1024 }),
      fc.constantFrom(...ROUTES),
      fc.boolean(),
      async (limit, chunk, total, [method, path], authorized) => {
        const url = edges.get(limit)!.urls.local!
        const first = await send(url, method, path, total, chunk, authorized)
        const second = await send(url, method, path, total, chunk, authorized)
        if (authorized && total > limit && method === 'POST' && path.includes('digest=')) {
          if (first !== 0 && first !== 413) return false
          if (second !== 0 && second !== 413) return false
        }
        const alive = await send(url, 'GET', '/v2/', 0, 1, true)
        return alive === 200
      },
    ),
    { numRuns: size(60, 400) },
  )
  const stored: string[] = []
  await driver
    .walk('/', info => {
      if (!info.isDir && info.path.includes('/blobs/sha256/')) stored.push(info.path)
    })
    .catch(() => {})
  t.deepEqual(stored, [], 'nothing was stored from a body over the limit')
})

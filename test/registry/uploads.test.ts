import { randomBytes } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'ava'
import { request } from '../helpers/http.js'
import { waitFor } from '../helpers/procs.js'
import { errorCode, pushBlob, sha256, sha512, startApp, startFilesystemApp, tempRoot } from './fixtures.js'

const EMPTY = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'

async function startUpload(server: Parameters<typeof request>[0], name = 'repo') {
  const response = await request(server, `/v2/${name}/blobs/uploads/`, { method: 'POST' })
  return { response, location: String(response.headers.location), uuid: String(response.headers['docker-upload-uuid']) }
}

test('POST starts an upload: 202, relative Location, Docker-Upload-UUID, Range 0-0', async t => {
  const { server } = await startApp(t)
  const { response, location, uuid } = await startUpload(server, 'library/alpine')
  t.is(response.status, 202)
  t.regex(location, /^\/v2\/library\/alpine\/blobs\/uploads\/[0-9a-f-]{36}$/)
  t.true(location.endsWith(uuid))
  t.is(response.headers.range, '0-0')
  t.is(response.headers['content-length'], '0')
})

test('monolithic upload: POST then PUT with the whole body, 201 with Location and digest', async t => {
  const { server } = await startApp(t)
  const blob = randomBytes(5000)
  const digest = sha256(blob)
  const { location } = await startUpload(server)
  const put = await request(server, `${location}?digest=${digest}`, { method: 'PUT', body: blob, headers: { 'Content-Type': 'application/octet-stream' } })
  t.is(put.status, 201)
  t.is(put.headers.location, `/v2/repo/blobs/${digest}`)
  t.is(put.headers['docker-content-digest'], digest)
  const get = await request(server, `/v2/repo/blobs/${digest}`)
  t.is(get.status, 200)
  t.deepEqual(get.body, blob)
  t.is(get.headers['docker-content-digest'], digest)
  t.is(get.headers['content-length'], String(blob.byteLength))
  // The upload is gone once finished.
  t.is((await request(server, location)).status, 404)
})

test('single POST with ?digest= stores the blob (201)', async t => {
  const { server } = await startApp(t)
  const blob = randomBytes(300)
  const digest = sha256(blob)
  const post = await request(server, `/v2/repo/blobs/uploads/?digest=${digest}`, { method: 'POST', body: blob })
  t.is(post.status, 201)
  t.is(post.headers.location, `/v2/repo/blobs/${digest}`)
  t.is((await request(server, `/v2/repo/blobs/${digest}`, { method: 'HEAD' })).status, 200)
})

test('single POST with a wrong ?digest= is DIGEST_INVALID and stores nothing', async t => {
  const { server } = await startApp(t)
  const blob = randomBytes(300)
  const wrong = sha256('other')
  const post = await request(server, `/v2/repo/blobs/uploads/?digest=${wrong}`, { method: 'POST', body: blob })
  t.is(post.status, 400)
  t.is(errorCode(post), 'DIGEST_INVALID')
  t.is((await request(server, `/v2/repo/blobs/${sha256(blob)}`, { method: 'HEAD' })).status, 404)
  t.is((await request(server, `/v2/repo/blobs/${wrong}`, { method: 'HEAD' })).status, 404)
})

test('chunked upload: PATCH chunks in order with inclusive Content-Range, then PUT', async t => {
  const { server } = await startApp(t)
  const blob = randomBytes(10_000)
  const { location } = await startUpload(server)
  const first = await request(server, location, {
    method: 'PATCH',
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': '0-3999' },
    body: blob.subarray(0, 4000),
  })
  t.is(first.status, 202)
  t.is(first.headers.range, '0-3999')
  t.is(first.headers.location, location)
  const status = await request(server, location)
  t.is(status.status, 204)
  t.is(status.headers.range, '0-3999')
  t.is(status.headers['docker-upload-uuid'], location.split('/').at(-1))
  const second = await request(server, location, {
    method: 'PATCH',
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': '4000-9999' },
    body: blob.subarray(4000),
  })
  t.is(second.headers.range, '0-9999')
  const put = await request(server, `${location}?digest=${sha256(blob)}`, { method: 'PUT' })
  t.is(put.status, 201)
  t.deepEqual((await request(server, `/v2/repo/blobs/${sha256(blob)}`)).body, blob)
})

test('PATCH without Content-Range appends a streamed body (what docker sends)', async t => {
  const { server } = await startApp(t)
  const blob = randomBytes(70_000)
  const { location } = await startUpload(server)
  const { Readable } = await import('node:stream')
  const patch = await request(server, location, { method: 'PATCH', body: Readable.from([blob.subarray(0, 30_000), blob.subarray(30_000)]) })
  t.is(patch.status, 202)
  t.is(patch.headers.range, `0-${blob.byteLength - 1}`)
  const put = await request(server, `${location}?digest=${sha256(blob)}`, { method: 'PUT', headers: { 'Content-Length': 0 } })
  t.is(put.status, 201)
})

test('PUT may carry the last chunk', async t => {
  const { server } = await startApp(t)
  const blob = randomBytes(2000)
  const { location } = await startUpload(server)
  await request(server, location, { method: 'PATCH', headers: { 'Content-Range': '0-999' }, body: blob.subarray(0, 1000) })
  const put = await request(server, `${location}?digest=${sha256(blob)}`, {
    method: 'PUT',
    headers: { 'Content-Range': '1000-1999' },
    body: blob.subarray(1000),
  })
  t.is(put.status, 201)
  t.deepEqual((await request(server, `/v2/repo/blobs/${sha256(blob)}`)).body, blob)
})

test('chunks of any size are taken, so POST advertises no OCI-Chunk-Min-Length', async t => {
  const { server } = await startApp(t)
  // 1- and 3-byte chunks, then one that takes the upload past 5 MiB (S3's smallest multipart
  // part: below it the S3 driver resends the bytes, above it copies them server-side), then
  // tiny ones again, and a 2-byte last chunk on the PUT.
  const sizes = [1, 3, 5 * 1024 * 1024 + 100, 1, 7]
  const blob = randomBytes(sizes.reduce((a, b) => a + b, 0) + 2)
  const { response, location } = await startUpload(server)
  t.is(response.status, 202)
  t.is(response.headers['oci-chunk-min-length'], undefined)
  let offset = 0
  for (const size of sizes) {
    const patch = await request(server, location, {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${offset}-${offset + size - 1}` },
      body: blob.subarray(offset, offset + size),
    })
    t.is(patch.status, 202, `chunk of ${size}`)
    offset += size
    t.is(patch.headers.range, `0-${offset - 1}`)
  }
  const put = await request(server, `${location}?digest=${sha256(blob)}`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${offset}-${offset + 1}` },
    body: blob.subarray(offset),
  })
  t.is(put.status, 201)
  t.deepEqual((await request(server, `/v2/repo/blobs/${sha256(blob)}`)).body, blob)
})

test('an out-of-order chunk is 416 and leaves the upload as it was', async t => {
  const { server } = await startApp(t)
  const blob = randomBytes(2000)
  const { location } = await startUpload(server)
  await request(server, location, { method: 'PATCH', headers: { 'Content-Range': '0-999' }, body: blob.subarray(0, 1000) })
  const skipped = await request(server, location, { method: 'PATCH', headers: { 'Content-Range': '1500-1999' }, body: blob.subarray(1500) })
  t.is(skipped.status, 416)
  t.is(skipped.headers.range, '0-999')
  t.is(skipped.headers.location, location)
  const repeated = await request(server, location, { method: 'PATCH', headers: { 'Content-Range': '0-999' }, body: blob.subarray(0, 1000) })
  t.is(repeated.status, 416)
  t.is((await request(server, location)).headers.range, '0-999')
  const rest = await request(server, location, { method: 'PATCH', headers: { 'Content-Range': '1000-1999' }, body: blob.subarray(1000) })
  t.is(rest.status, 202)
  t.is((await request(server, `${location}?digest=${sha256(blob)}`, { method: 'PUT' })).status, 201)
})

test('a first chunk that does not start at 0 is 416', async t => {
  const { server } = await startApp(t)
  const { location } = await startUpload(server)
  const response = await request(server, location, { method: 'PATCH', headers: { 'Content-Range': '1-3' }, body: 'abc' })
  t.is(response.status, 416)
})

for (const range of ['garbage', '5-2', '-1-3', 'bytes=0-', '0-', '0x0-0x2', '1e3-2e3', '0-99999999999999999999']) {
  test(`garbage Content-Range ${JSON.stringify(range)} is 416, nothing appended`, async t => {
    const { server } = await startApp(t)
    const { location } = await startUpload(server)
    const response = await request(server, location, { method: 'PATCH', headers: { 'Content-Range': range }, body: 'abc' })
    t.is(response.status, 416)
    t.is(errorCode(response), 'BLOB_UPLOAD_INVALID')
    t.is((await request(server, location)).headers.range, '0-0')
    t.is((await request(server, '/v2/')).status, 200)
  })
}

test('Content-Length that disagrees with Content-Range is 400 SIZE_INVALID', async t => {
  const { server } = await startApp(t)
  const { location } = await startUpload(server)
  const response = await request(server, location, { method: 'PATCH', headers: { 'Content-Range': '0-9' }, body: 'abc' })
  t.is(response.status, 400)
  t.is(errorCode(response), 'SIZE_INVALID')
})

test('a wrong digest on PUT is DIGEST_INVALID, nothing is stored, and the upload is discarded', async t => {
  const { server } = await startApp(t)
  const blob = randomBytes(100)
  const wrong = sha256('not the blob')
  const { location } = await startUpload(server)
  const put = await request(server, `${location}?digest=${wrong}`, { method: 'PUT', body: blob })
  t.is(put.status, 400)
  t.is(errorCode(put), 'DIGEST_INVALID')
  t.is((await request(server, `/v2/repo/blobs/${wrong}`, { method: 'HEAD' })).status, 404)
  t.is((await request(server, `/v2/repo/blobs/${sha256(blob)}`, { method: 'HEAD' })).status, 404)
  t.is((await request(server, location)).status, 404)
})

for (const digest of [
  '',
  'sha256:abc',
  'md5:d41d8cd98f00b204e9800998ecf8427e',
  'sha256:' + 'G'.repeat(64),
  'SHA256:' + 'a'.repeat(64),
  'sha256:' + 'A'.repeat(64),
  'sha256',
  'sha256:../../x',
]) {
  test(`PUT with malformed digest ${JSON.stringify(digest)} is DIGEST_INVALID`, async t => {
    const { server } = await startApp(t)
    const { location } = await startUpload(server)
    const put = await request(server, `${location}?digest=${encodeURIComponent(digest)}`, { method: 'PUT', body: 'x' })
    t.is(put.status, 400)
    t.is(errorCode(put), 'DIGEST_INVALID')
  })
}

test('sha512 digests are accepted for uploads', async t => {
  const { server } = await startApp(t)
  const blob = randomBytes(777)
  const digest = sha512(blob)
  const { location } = await startUpload(server)
  const put = await request(server, `${location}?digest=${digest}`, { method: 'PUT', body: blob })
  t.is(put.status, 201)
  t.is(put.headers['docker-content-digest'], digest)
  t.deepEqual((await request(server, `/v2/repo/blobs/${digest}`)).body, blob)
})

test('the empty blob can be uploaded with no body', async t => {
  const { server } = await startApp(t)
  const { location } = await startUpload(server)
  const put = await request(server, `${location}?digest=${EMPTY}`, { method: 'PUT' })
  t.is(put.status, 201)
  const get = await request(server, `/v2/repo/blobs/${EMPTY}`)
  t.is(get.status, 200)
  t.is(get.body.byteLength, 0)
})

test('an empty upload finished with another digest is DIGEST_INVALID', async t => {
  const { server } = await startApp(t)
  const { location } = await startUpload(server)
  const put = await request(server, `${location}?digest=${sha256('x')}`, { method: 'PUT' })
  t.is(errorCode(put), 'DIGEST_INVALID')
})

test('PUT without ?digest= is DIGEST_INVALID', async t => {
  const { server } = await startApp(t)
  const { location } = await startUpload(server)
  t.is(errorCode(await request(server, location, { method: 'PUT', body: 'x' })), 'DIGEST_INVALID')
})

test('DELETE cancels an upload (204); it is unknown afterwards', async t => {
  const { server } = await startApp(t)
  const { location } = await startUpload(server)
  await request(server, location, { method: 'PATCH', body: 'abc' })
  const cancel = await request(server, location, { method: 'DELETE' })
  t.is(cancel.status, 204)
  const after = await request(server, location)
  t.is(after.status, 404)
  t.is(errorCode(after), 'BLOB_UPLOAD_UNKNOWN')
})

test('unknown or malformed upload ids are BLOB_UPLOAD_UNKNOWN', async t => {
  const { server } = await startApp(t)
  for (const id of ['00000000-0000-0000-0000-000000000000', 'nope', '..', '%2e%2e']) {
    for (const method of ['GET', 'PATCH', 'PUT', 'DELETE']) {
      const response = await request(server, `/v2/repo/blobs/uploads/${id}${method === 'PUT' ? `?digest=${EMPTY}` : ''}`, {
        method,
        body: method === 'PATCH' ? 'x' : undefined,
      })
      t.is(response.status, 404, `${method} ${id}`)
      t.is(errorCode(response), 'BLOB_UPLOAD_UNKNOWN', `${method} ${id}`)
    }
  }
})

test('an upload belongs to its repository', async t => {
  const { server } = await startApp(t)
  const { uuid } = await startUpload(server, 'one')
  t.is((await request(server, `/v2/two/blobs/uploads/${uuid}`)).status, 404)
})

test('blob GET honours Range (206) and HEAD gives the length without a body', async t => {
  const { server } = await startApp(t)
  const blob = randomBytes(1000)
  const digest = await pushBlob(server, 'repo', blob)
  const head = await request(server, `/v2/repo/blobs/${digest}`, { method: 'HEAD' })
  t.is(head.status, 200)
  t.is(head.headers['content-length'], '1000')
  t.is(head.body.byteLength, 0)
  t.is(head.headers['docker-content-digest'], digest)
  const partial = await request(server, `/v2/repo/blobs/${digest}`, { headers: { Range: 'bytes=100-199' } })
  t.is(partial.status, 206)
  t.is(partial.headers['content-range'], 'bytes 100-199/1000')
  t.deepEqual(partial.body, blob.subarray(100, 200))
  const open = await request(server, `/v2/repo/blobs/${digest}`, { headers: { Range: 'bytes=990-' } })
  t.deepEqual(open.body, blob.subarray(990))
  const suffix = await request(server, `/v2/repo/blobs/${digest}`, { headers: { Range: 'bytes=-10' } })
  t.deepEqual(suffix.body, blob.subarray(990))
  const beyond = await request(server, `/v2/repo/blobs/${digest}`, { headers: { Range: 'bytes=1000-' } })
  t.is(beyond.status, 416)
  t.is(beyond.headers['content-range'], 'bytes */1000')
})

test('blob unknown: 404 BLOB_UNKNOWN; a bad digest in the path: 400 DIGEST_INVALID', async t => {
  const { server } = await startApp(t)
  const missing = await request(server, `/v2/repo/blobs/${sha256('nothing')}`)
  t.is(missing.status, 404)
  t.is(errorCode(missing), 'BLOB_UNKNOWN')
  const bad = await request(server, '/v2/repo/blobs/sha256:xyz')
  t.is(bad.status, 400)
  t.is(errorCode(bad), 'DIGEST_INVALID')
})

test('a blob is visible only in repositories that link it; DELETE unlinks it (202)', async t => {
  const { server } = await startApp(t)
  const digest = await pushBlob(server, 'a', 'content of a')
  t.is((await request(server, `/v2/b/blobs/${digest}`, { method: 'HEAD' })).status, 404)
  const del = await request(server, `/v2/a/blobs/${digest}`, { method: 'DELETE' })
  t.is(del.status, 202)
  t.is((await request(server, `/v2/a/blobs/${digest}`)).status, 404)
  const again = await request(server, `/v2/a/blobs/${digest}`, { method: 'DELETE' })
  t.is(again.status, 404)
  t.is(errorCode(again), 'BLOB_UNKNOWN')
})

test('cross-repository mount with from: 201 with Location and digest, no bytes sent', async t => {
  const { server } = await startApp(t)
  const digest = await pushBlob(server, 'source/repo', 'shared layer')
  const mount = await request(server, `/v2/target/blobs/uploads/?mount=${digest}&from=source/repo`, { method: 'POST' })
  t.is(mount.status, 201)
  t.is(mount.headers.location, `/v2/target/blobs/${digest}`)
  t.is(mount.headers['docker-content-digest'], digest)
  t.is((await request(server, `/v2/target/blobs/${digest}`)).body.toString(), 'shared layer')
})

test('mount without from works when the blob is stored', async t => {
  const { server } = await startApp(t)
  const digest = await pushBlob(server, 'source', 'anon mount')
  const mount = await request(server, `/v2/target/blobs/uploads/?mount=${digest}`, { method: 'POST' })
  t.is(mount.status, 201)
})

test('mount that cannot happen falls back to an upload session (202)', async t => {
  const { server } = await startApp(t)
  const digest = await pushBlob(server, 'source', 'private')
  const notInFrom = await request(server, `/v2/target/blobs/uploads/?mount=${digest}&from=elsewhere`, { method: 'POST' })
  t.is(notInFrom.status, 202)
  t.truthy(notInFrom.headers['docker-upload-uuid'])
  const unknown = await request(server, `/v2/target/blobs/uploads/?mount=${sha256('none')}&from=source`, { method: 'POST' })
  t.is(unknown.status, 202)
  t.is((await request(server, `/v2/target/blobs/${digest}`, { method: 'HEAD' })).status, 404)
})

test('a client that disconnects mid-PATCH: nothing is kept from that chunk, the server keeps serving', async t => {
  const { server } = await startFilesystemApp(t)
  const { location } = await startUpload(server)
  const head = randomBytes(1000)
  await request(server, location, { method: 'PATCH', headers: { 'Content-Range': '0-999' }, body: head })
  const port = (server.address() as AddressInfo).port
  await new Promise<void>(resolve => {
    const req = httpRequest({ host: '127.0.0.1', port, path: location, method: 'PATCH', headers: { 'Content-Length': 5_000_000 } })
    req.on('error', () => resolve())
    req.write(randomBytes(200_000))
    setTimeout(() => {
      req.destroy()
      resolve()
    }, 300)
  })
  // The server notices the disconnect and cuts the chunk back.
  let range = ''
  await waitFor('the chunk to be cut back', async () => {
    range = String((await request(server, location)).headers.range)
    return range === '0-999'
  }).catch(() => {})
  t.is(range, '0-999')
  const tail = randomBytes(500)
  const rest = await request(server, location, { method: 'PATCH', headers: { 'Content-Range': '1000-1499' }, body: tail })
  t.is(rest.status, 202)
  const blob = Buffer.concat([head, tail])
  t.is((await request(server, `${location}?digest=${sha256(blob)}`, { method: 'PUT' })).status, 201)
})

test('a client that disconnects during a monolithic PUT: nothing is stored', async t => {
  const { server, root } = await startFilesystemApp(t)
  const { location } = await startUpload(server)
  const port = (server.address() as AddressInfo).port
  const digest = sha256('whatever')
  await new Promise<void>(resolve => {
    const req = httpRequest({ host: '127.0.0.1', port, path: `${location}?digest=${digest}`, method: 'PUT', headers: { 'Content-Length': 1_000_000 } })
    req.on('error', () => resolve())
    req.write(randomBytes(100_000))
    setTimeout(() => {
      req.destroy()
      resolve()
    }, 300)
  })
  await new Promise(r => setTimeout(r, 300))
  t.is((await request(server, '/v2/')).status, 200)
  const blobs = await readdir(join(root!, 'docker/registry/v2/blobs')).catch(() => [])
  t.deepEqual(blobs, [])
})

test('an upload survives a restart of the process (hash rebuilt from the bytes on disk)', async t => {
  const root = await tempRoot(t)
  const first = await startFilesystemApp(t, root)
  const blob = randomBytes(300_000)
  const { location } = await startUpload(first.server)
  await request(first.server, location, { method: 'PATCH', headers: { 'Content-Range': '0-99999' }, body: blob.subarray(0, 100_000) })
  first.server.closeAllConnections()
  await new Promise(resolve => first.server.close(resolve))

  const second = await startFilesystemApp(t, root)
  t.is((await request(second.server, location)).headers.range, '0-99999')
  await request(second.server, location, { method: 'PATCH', headers: { 'Content-Range': '100000-299999' }, body: blob.subarray(100_000) })
  const put = await request(second.server, `${location}?digest=${sha256(blob)}`, { method: 'PUT' })
  t.is(put.status, 201)
  t.deepEqual((await request(second.server, `/v2/repo/blobs/${sha256(blob)}`)).body, blob)
})

test('two clients uploading the same blob at once both succeed', async t => {
  const { server } = await startFilesystemApp(t)
  const blob = randomBytes(500_000)
  const results = await Promise.all([pushBlob(server, 'one', blob), pushBlob(server, 'two', blob), pushBlob(server, 'one', blob)])
  t.deepEqual(new Set(results), new Set([sha256(blob)]))
  t.deepEqual((await request(server, `/v2/two/blobs/${sha256(blob)}`)).body, blob)
})

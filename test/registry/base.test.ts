import test from 'ava'
import { silentLogger } from '../../src/log.js'
import { every } from '../../src/scheduler.js'
import { purgeAbandonedUploads } from '../../src/storage/purge-uploads.js'
import { OCI_ERRORS } from '../../src/http/errors.js'
import { request } from '../helpers/http.js'
import { waitFor } from '../helpers/procs.js'
import { uploadStartedAtPath } from '../../src/storage/paths.js'
import { errorCode, startApp } from './fixtures.js'

test('GET /v2/ answers 200 with the API version header', async t => {
  const { server } = await startApp(t)
  const response = await request(server, '/v2/')
  t.is(response.status, 200)
  t.is(response.headers['docker-distribution-api-version'], 'registry/2.0')
  t.is(response.headers['content-type'], 'application/json')
  t.deepEqual(response.json, {})
})

test('errors carry the API version header and the spec JSON body', async t => {
  const { server } = await startApp(t)
  const response = await request(server, '/v2/nothing/here/manifests/latest')
  t.is(response.status, 404)
  t.is(response.headers['docker-distribution-api-version'], 'registry/2.0')
  t.is(response.headers['content-type'], 'application/json; charset=utf-8') // as registry:2's errcode.ServeJSON
  t.is(errorCode(response), 'MANIFEST_UNKNOWN')
  t.is(typeof response.json.errors[0].message, 'string')
})

test('an unknown endpoint is a JSON 404, a wrong method a JSON 405', async t => {
  const { server } = await startApp(t)
  const unknown = await request(server, '/v3/')
  t.is(unknown.status, 404)
  t.is(unknown.headers['docker-distribution-api-version'], 'registry/2.0')
  const wrongMethod = await request(server, '/v2/', { method: 'POST' })
  t.is(wrongMethod.status, 405)
  t.is(errorCode(wrongMethod), 'UNSUPPORTED')
  t.is(wrongMethod.headers.allow, 'GET, HEAD')
})

test('the OCI error table has every code of the spec with its status', t => {
  const spec: Record<string, number> = {
    BLOB_UNKNOWN: 404,
    BLOB_UPLOAD_INVALID: 400,
    BLOB_UPLOAD_UNKNOWN: 404,
    DIGEST_INVALID: 400,
    MANIFEST_BLOB_UNKNOWN: 400,
    MANIFEST_INVALID: 400,
    MANIFEST_UNKNOWN: 404,
    NAME_INVALID: 400,
    NAME_UNKNOWN: 404,
    SIZE_INVALID: 400,
    UNAUTHORIZED: 401,
    DENIED: 403,
    UNSUPPORTED: 405,
    TOOMANYREQUESTS: 429,
  }
  const table: Record<string, { status: number }> = OCI_ERRORS
  for (const [code, status] of Object.entries(spec)) t.is(table[code]?.status, status, code)
})

test('invalid repository names are NAME_INVALID before anything is touched', async t => {
  const { server } = await startApp(t)
  for (const name of ['UPPER', 'a/../b', '..', 'a/./b', 'a%2Fb', 'a%2fb', '-a', 'a_', 'a//b', '%2e%2e', 'a/b/', 'x'.repeat(256)]) {
    const response = await request(server, `/v2/${name}/tags/list`)
    t.is(response.status, 400, name)
    t.is(errorCode(response), 'NAME_INVALID', name)
  }
})

test('the server keeps serving after a malformed request line', async t => {
  const { server } = await startApp(t)
  const odd = await request(server, '/v2/a/manifests/%00')
  t.true(odd.status >= 400 && odd.status < 500)
  t.is((await request(server, '/v2/')).status, 200)
})

test('abandoned uploads are purged by the background job (as server.ts schedules it); the job stops', async t => {
  // An hour's age limit and an upload made to look two hours old, rather than a limit of 0: with 0 a
  // tick (every 200 ms) could purge the upload before a loaded machine even checked that it exists.
  const { server, app, driver } = await startApp(t)
  const job = every(200, () => purgeAbandonedUploads(app.store.uploads, 3600_000, silentLogger))
  const start = await request(server, '/v2/old/blobs/uploads/', { method: 'POST' })
  const location = String(start.headers.location)
  t.is((await request(server, location)).status, 204)
  const id = String(start.headers['docker-upload-uuid'])
  await new Promise(resolve => setTimeout(resolve, 500)) // a few ticks: a young upload is kept
  t.is((await request(server, location)).status, 204)
  await driver.putContent(uploadStartedAtPath('old', id), Buffer.from(new Date(Date.now() - 7200_000).toISOString().replace(/\.\d{3}Z$/, 'Z')))
  await waitFor('the purge timer to remove the upload', async () => (await request(server, location)).status === 404)
  t.is((await request(server, location)).status, 404)
  await job.stop()
  await app.close()
})

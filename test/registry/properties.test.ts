/** Property tests against the running app: hostile input is a 4xx with the spec's JSON, never a 500. */
import test from 'ava'
import fc from 'fast-check'
import { parseRangeHeader } from '../../src/registry/headers.js'
import { request } from '../helpers/http.js'
import { pushBlob, startApp } from './fixtures.js'

test('parseRangeHeader never returns a range outside the blob', t => {
  fc.assert(
    fc.property(
      fc.nat(10_000),
      fc.oneof(
        fc.string({ maxLength: 30 }),
        fc.tuple(fc.option(fc.nat(20_000)), fc.option(fc.nat(20_000))).map(([a, b]) => `bytes=${a ?? ''}-${b ?? ''}`),
      ),
      (size, header) => {
        const range = parseRangeHeader(header, size)
        if (range === undefined || range === 'unsatisfiable') return
        t.true(range.start >= 0 && range.start <= range.end && range.end < size, `${header} on ${size}`)
      },
    ),
    { numRuns: 2000 },
  )
})

test('random Content-Range and Content-Length headers on PATCH never give a 5xx, and the server keeps serving', async t => {
  const { server } = await startApp(t)
  await fc.assert(
    fc.asyncProperty(fc.string({ maxLength: 25 }), fc.option(fc.nat(20)), fc.uint8Array({ maxLength: 16 }), async (contentRange, length, body) => {
      const start = await request(server, '/v2/fuzz/blobs/uploads/', { method: 'POST' })
      const headers: Record<string, string | number> = {}
      if (/^[\x21-\x7e][\x20-\x7e]*$/.test(contentRange)) headers['Content-Range'] = contentRange
      if (length !== null && length === body.byteLength) headers['Content-Length'] = length
      const response = await request(server, String(start.headers.location), { method: 'PATCH', headers, body: Buffer.from(body) })
      t.true([202, 400, 416].includes(response.status), `${response.status} for ${JSON.stringify(headers)}`)
      if (response.status !== 202) t.is(typeof response.json?.errors?.[0]?.code, 'string')
    }),
    { numRuns: 150 },
  )
  t.is((await request(server, '/v2/')).status, 200)
})

test('random paths under /v2/ never give a 5xx', async t => {
  const { server } = await startApp(t)
  const digest = await pushBlob(server, 'known', 'content')
  const segment = fc.oneof(
    fc.constantFrom(
      '..',
      '.',
      '%2F',
      '%2e%2e',
      'blobs',
      'uploads',
      'manifests',
      'tags',
      'list',
      'referrers',
      '_catalog',
      digest,
      'sha256:',
      'known',
      'latest',
      '',
    ),
    fc.stringMatching(/^[A-Za-z0-9%._:-]{0,12}$/),
  )
  await fc.assert(
    fc.asyncProperty(fc.array(segment, { maxLength: 6 }), fc.constantFrom('GET', 'HEAD', 'PUT', 'PATCH', 'POST', 'DELETE'), async (parts, method) => {
      const response = await request(server, `/v2/${parts.join('/')}`, { method, body: method === 'GET' || method === 'HEAD' ? undefined : '{}' })
      t.true(response.status < 500, `${method} /v2/${parts.join('/')} → ${response.status} ${response.body.toString().slice(0, 200)}`)
    }),
    { numRuns: 300 },
  )
  t.is((await request(server, `/v2/known/blobs/${digest}`)).status, 200)
})

/**
 * Auth matrix against the real program (`berth serve --local --htpasswd`, edge + engine):
 * every route × every method × every kind of bad credential → 401 (or 429 once an address has
 * failed too often, or 431 for a header too large to parse) and nothing done: no repository,
 * tag, blob or upload appears or disappears. Path tricks reach nothing without credentials, and
 * the internal door asks for the same login as the public one.
 */
import { randomBytes } from 'node:crypto'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'ava'
import { basic, pushImage, rawExchange, requestFrom, sha256, startAuthBerth, statuses } from './common.js'

const GOOD = basic('alice', 'secret')

const BAD_CREDENTIALS: Record<string, string | undefined> = {
  none: undefined,
  'wrong password': basic('alice', 'wrong'),
  'empty password': basic('alice', ''),
  'unknown user': basic('mallory', 'secret'),
  'empty user': basic('', 'secret'),
  'no colon': `Basic ${Buffer.from('alicesecret').toString('base64')}`,
  'not base64': 'Basic !!!not-base64***',
  'scheme only': 'Basic',
  'scheme and space': 'Basic ',
  'two tokens': `Basic ${Buffer.from('alice:secret').toString('base64')} extra`,
  'password with NUL': basic('alice', 'secret\u0000'),
  'user with newline': basic('alice\n', 'secret'),
  bearer: 'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.',
  digest: 'Digest username="alice", realm="Berth Registry", nonce="x", uri="/v2/", response="0"',
  negotiate: 'Negotiate YIIB',
  'very long': `Basic ${'A'.repeat(12_000)}`,
}

function routes(image: { digest: string; layer: string }): { method: string; path: string; body?: Buffer; headers?: Record<string, string> }[] {
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: image.layer, size: 1 },
      layers: [],
    }),
  )
  const paths = [
    '/v2/',
    '/v2',
    '/v2/_catalog',
    '/v2/known/repo/tags/list',
    '/v2/known/repo/manifests/v1',
    `/v2/known/repo/manifests/${image.digest}`,
    `/v2/known/repo/blobs/${image.layer}`,
    '/v2/known/repo/blobs/uploads/',
    `/v2/known/repo/blobs/uploads/?mount=${image.layer}&from=known/repo`,
    '/v2/known/repo/blobs/uploads/00000000-0000-4000-8000-000000000000',
    `/v2/known/repo/referrers/${image.digest}`,
    '/v2/new/repo/manifests/latest',
    '/',
    '/nope',
  ]
  const out = []
  for (const path of paths) {
    for (const method of ['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS']) {
      const body = ['PUT', 'POST', 'PATCH'].includes(method) ? manifest : undefined
      out.push({ method, path, ...(body ? { body, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } } : {}) })
    }
  }
  return out
}

/** Everything under the data folder except the upload folders' inner state (names only). */
async function snapshot(datadir: string): Promise<string[]> {
  const out: string[] = []
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const full = join(dir, entry.name)
      out.push(full.slice(datadir.length))
      if (entry.isDirectory()) await walk(full)
    }
  }
  await walk(join(datadir, 'data'))
  return out.sort()
}

/**
 * The snapshot once Berth's own writes after the push have landed: the metadata index writes its
 * change feed after the manifest PUT was answered (an atomic write through a `.…tmp` file), so a
 * snapshot taken at once may catch it half done. Settled: no temporary file, and the same twice.
 */
async function settledSnapshot(datadir: string): Promise<string[]> {
  let last = await snapshot(datadir)
  for (let tries = 0; tries < 100; tries++) {
    await new Promise(resolve => setTimeout(resolve, 100))
    const next = await snapshot(datadir)
    const quiet = !next.some(entry => /\/\.[^/]*\.tmp$/.test(entry))
    if (quiet && JSON.stringify(next) === JSON.stringify(last)) return next
    last = next
  }
  throw new Error('the data folder kept changing after the push')
}

test('every route × method × bad credential kind → 401 and nothing changes on disk', async t => {
  t.timeout(170_000)
  const { berth, datadir } = await startAuthBerth(t)
  const layer = randomBytes(1234)
  const image = await pushImage(berth.url, 'known/repo', 'v1', [layer], { authorization: GOOD })
  const before = await settledSnapshot(datadir)
  let checked = 0
  let address = 2
  const table = routes({ digest: image.digest, layer: image.layers[0]! })
  for (const [kind, header] of Object.entries(BAD_CREDENTIALS)) {
    for (const route of table) {
      // Every 8 failures move to another source address, so the failed-login throttle (10 per
      // address) does not turn the 401s we check into 429s.
      const localAddress = `127.0.0.${2 + (Math.floor(address++ / 8) % 250)}`
      const headers: Record<string, string> = { ...route.headers }
      if (header !== undefined) headers['authorization'] = header
      const response = await requestFrom(berth.url, route.path, { method: route.method, headers, localAddress, ...(route.body ? { body: route.body } : {}) })
      // `/` is the web UI's page: the same empty shell for everyone (what it lists comes from its
      // API after its own login), and never a Basic challenge that would pop up in a browser.
      const isUiPage = route.path === '/'
      const expected = isUiPage ? (route.method === 'GET' || route.method === 'HEAD' ? 200 : 405) : 401
      const ok = response.status === expected || (kind === 'very long' && response.status === 431)
      t.true(ok, `${kind}: ${route.method} ${route.path} → ${response.status} ${response.body.toString().slice(0, 150)}`)
      if (response.status === 401) t.regex(String(response.headers['www-authenticate']), /^Basic realm=/)
      if (isUiPage) t.is(response.headers['www-authenticate'], undefined)
      t.false(response.body.toString().includes('known/repo'), 'a refused answer names a repository')
      checked++
    }
  }
  t.deepEqual(await snapshot(datadir), before, 'refused requests changed the data folder')
  // The image is intact and still served to the real user.
  const manifest = await requestFrom(berth.url, '/v2/known/repo/manifests/v1', {
    headers: { authorization: GOOD, accept: 'application/vnd.oci.image.manifest.v1+json' },
  })
  t.is(manifest.status, 200)
  t.is(sha256(manifest.body), image.digest)
  t.log(`${checked} refused requests (${Object.keys(BAD_CREDENTIALS).length} credential kinds × ${table.length} route/method pairs); data folder unchanged`)
})

test('path tricks reach nothing without credentials; the failed-login throttle answers 429 after a burst', async t => {
  t.timeout(60_000)
  const { berth } = await startAuthBerth(t)
  await pushImage(berth.url, 'known/repo', 'v1', [randomBytes(100)], { authorization: GOOD })
  const port = berth.port
  const tricks = [
    '/v2/../v2/_catalog',
    '/v2/%2e%2e/v2/_catalog',
    '/v2/%2E%2E/_catalog',
    '//v2/_catalog',
    '///v2/_catalog',
    '/V2/_catalog',
    '/v2/_CATALOG',
    '/%76%32/_catalog',
    '/v2/known%2frepo/tags/list',
    '/v2/known%2Frepo/tags/list',
    '/v2/./_catalog',
    '/v2/_catalog/..',
    '/v2;/_catalog',
    '/v2/_catalog%00',
    '/v2/_catalog?../../',
    '/v2/_catalog#x',
    '/.%2e/v2/_catalog',
    '\\v2\\_catalog',
    'http://127.0.0.1/v2/_catalog',
    `http://127.0.0.1:${port}/v2/known/repo/tags/list`,
    '*',
  ]
  for (const path of tricks) {
    const { text } = await rawExchange('127.0.0.1', port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)
    const [status] = statuses(text)
    t.true(status === 401 || status === 400, `GET ${path} → ${status}: ${text.slice(0, 200)}`)
    t.false(text.includes('known/repo') || text.includes('"repositories"') || text.includes('"tags"'), `GET ${path} leaked: ${text.slice(0, 300)}`)
  }
  // Same address, wrong passwords: after the burst, 429 without a bcrypt check; the right user on
  // another address is unaffected.
  const seen: number[] = []
  for (let i = 0; i < 14; i++) {
    seen.push((await requestFrom(berth.url, '/v2/', { headers: { authorization: basic('alice', `guess${i}`) }, localAddress: '127.0.0.251' })).status)
  }
  t.true(
    seen.slice(0, 10).every(s => s === 401),
    seen.join(','),
  )
  t.true(
    seen.slice(10).every(s => s === 429),
    seen.join(','),
  )
  t.is((await requestFrom(berth.url, '/v2/', { headers: { authorization: GOOD }, localAddress: '127.0.0.252' })).status, 200)
})

test('the internal door asks for the same login as the public one: no credentials or forged headers get nothing', async t => {
  const { internal, berth } = await startAuthBerth(t)
  await pushImage(berth.url, 'known/repo', 'v1', [randomBytes(100)], { authorization: GOOD })
  const cases: Record<string, Record<string, string>> = {
    'no credentials': {},
    'wrong password': { authorization: basic('alice', 'nope') },
    'forged internal header': { 'x-berth-internal': 'guess' },
    'forged forwarding headers': { 'x-forwarded-user': 'alice', 'x-real-ip': '127.0.0.1' },
    'long header': { 'x-berth-internal': 'x'.repeat(5000) },
  }
  for (const [what, headers] of Object.entries(cases)) {
    for (const [method, path] of [
      ['GET', '/v2/_catalog'],
      ['GET', '/v2/known/repo/tags/list'],
      ['POST', '/v2/known/repo/blobs/uploads/'],
      ['DELETE', '/v2/known/repo/manifests/v1'],
    ] as const) {
      const response = await requestFrom(internal, path, { method, headers })
      t.is(response.status, 401, `${what}: ${method} ${path} → ${response.status}`)
      t.false(response.body.toString().includes('known/repo'))
    }
  }
  // The door binds loopback only, and a valid login works there as on the public door.
  t.regex(internal, /^http:\/\/127\.0\.0\.1:/)
  t.is((await requestFrom(internal, '/v2/known/repo/tags/list', { headers: { authorization: GOOD } })).status, 200)
  t.is((await requestFrom(berth.url, '/v2/known/repo/tags/list', { headers: { authorization: GOOD } })).status, 200)
})

test('regression: 60 parallel requests with the right password on a cold cache all pass (no 429 from the failed-login throttle)', async t => {
  // Found by the load test: each uncached check took a throttle token (10 per address) and
  // counted against the 32 pending compares, so a burst of right passwords from one address got 429.
  const { HtpasswdAccessController } = await import('../../src/edge/auth/basic-auth.js')
  const { run } = await import('../helpers/procs.js')
  const { tempDir } = await import('./common.js')
  const dir = await tempDir(t)
  await run('htpasswd', ['-Bbc', `${dir}/htpasswd`, 'alice', 'secret'])
  const controller = await HtpasswdAccessController.open(`${dir}/htpasswd`)
  t.teardown(() => controller.close())
  const results = await Promise.all(Array.from({ length: 60 }, () => controller.check(GOOD, '192.0.2.7')))
  t.deepEqual([...new Set(results.map(r => r.kind))], ['ok'])
  // Wrong guesses still count: 60 parallel different wrong passwords are throttled after the burst.
  const guesses = await Promise.all(Array.from({ length: 60 }, (_, i) => controller.check(basic('alice', `guess${i}`), '192.0.2.8')))
  t.true(guesses.filter(r => r.kind === 'throttled').length >= 40, JSON.stringify(guesses.map(r => r.kind)))
  t.false(guesses.some(r => r.kind === 'ok'))
})

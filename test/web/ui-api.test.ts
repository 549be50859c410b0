/**
 * The web UI's JSON API and pages through the edge (in this process, in-memory store): routing
 * on the registry door without any `WWW-Authenticate`, security headers, login with the htpasswd
 * users and CSRF, session expiry and logout, who sees what (with and without access rules),
 * paging, sorting and validation, deletes with their events, and hostile text returned as data.
 */
import test from 'ava'
import type { RulePolicy } from '../../src/edge/steps/access-control.js'
import type { AccessAction } from '../../src/http/exchange.js'
import { request } from '../helpers/http.js'
import { pushImage, pushIndex, startUiEdge, UiClient } from './ui-fixture.js'

const XSS = {
  'org.opencontainers.image.description': '<script>alert(1)</script>',
  'x.attr': '"><img src=x onerror=alert(2)>',
  'x.rtl': 'safe\u202Egnp.exe',
}

test('pages and API answers never carry WWW-Authenticate, the registry API still does; CSP and nosniff on every UI answer', async t => {
  const edge = await startUiEdge(t, { users: ['alice'] })
  for (const path of [
    '/',
    '/ui/repositories',
    '/ui/repository/a/b',
    '/ui/assets/app.js',
    '/ui/assets/app.css',
    '/favicon.ico',
    '/api/ui/session',
    '/api/ui/repositories',
    '/api/ui/nothing',
  ]) {
    const response = await request(edge.url, path)
    t.is(response.headers['www-authenticate'], undefined, path)
    t.regex(String(response.headers['content-security-policy']), /default-src 'self'; script-src 'self'; style-src 'self'/, path)
    t.is(response.headers['x-content-type-options'], 'nosniff', path)
  }
  const page = await request(edge.url, '/')
  t.is(page.status, 200)
  t.regex(String(page.headers['content-type']), /^text\/html/)
  t.regex(page.body.toString(), /<script src="\/ui\/assets\/app.js" defer><\/script>/)
  t.notRegex(page.body.toString(), /<script>|<style>| on\w+=/, 'no inline script or style in the page')
  const script = await request(edge.url, '/ui/assets/app.js')
  t.regex(String(script.headers['content-type']), /^text\/javascript/)
  t.false(script.body.toString().includes('innerHTML'), 'the bundle never writes HTML')
  const api = await request(edge.url, '/api/ui/repositories')
  t.regex(String(api.headers['content-type']), /^application\/json/)
  t.is(api.json.total, 0, 'anonymous sees nothing when the registry needs a login')
  t.is((await request(edge.url, '/api/ui/nothing')).status, 404)
  const v2 = await request(edge.url, '/v2/')
  t.is(v2.status, 401)
  t.regex(String(v2.headers['www-authenticate']), /^Basic /)
})

test('login: CSRF token, Origin and the password are checked; the cookie is HttpOnly SameSite=Strict; logout ends the session', async t => {
  const edge = await startUiEdge(t, { users: ['alice'] })
  await pushImage(edge.engineUrl, 'team/app', 'v1')
  const client = new UiClient(edge)
  const first = await client.start()
  t.is(first.json.user, null)
  t.true(first.json.canLogIn)
  t.regex(String(first.headers['set-cookie']?.[0]), /^berth_session=[^;]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/)
  const body = JSON.stringify({ user: 'alice', password: 'alice-password' })
  const json = { 'content-type': 'application/json' }
  t.is((await client.call('POST', '/api/ui/login', { body, headers: json, csrf: false })).status, 403, 'no CSRF token')
  t.is((await client.call('POST', '/api/ui/login', { body, headers: json, csrf: 'forged' })).status, 403, 'wrong CSRF token')
  t.is((await client.call('POST', '/api/ui/login', { body, headers: json, origin: 'https://evil.example' })).status, 403, 'another origin')
  t.is((await client.call('POST', '/api/ui/login', { body, headers: json, origin: false })).status, 403, 'no Origin nor Referer')
  const wrong = await client.call('POST', '/api/ui/login', { body: JSON.stringify({ user: 'alice', password: 'nope' }), headers: json })
  t.is(wrong.status, 401)
  t.is(wrong.headers['www-authenticate'], undefined)
  t.is(wrong.json.errors[0].code, 'UNAUTHORIZED')
  t.is((await client.call('POST', '/api/ui/login', { body: 'user=alice', headers: { 'content-type': 'application/x-www-form-urlencoded' } })).status, 415)
  t.is((await client.call('POST', '/api/ui/login', { body: '{"user":"a:b","password":"x"}', headers: json })).status, 400)
  const huge = await client.call('POST', '/api/ui/login', { body: JSON.stringify({ user: 'alice', password: 'x'.repeat(64 * 1024) }), headers: json })
  t.is(huge.status, 413, 'a login body over its small limit is refused before it is parsed')
  t.is(huge.headers['www-authenticate'], undefined)
  const ok = await client.login('alice')
  t.is(ok.status, 200)
  t.is(ok.json.user, 'alice')
  t.truthy(edge.events.find(event => event.action === 'login' && event.outcome === 'ok'))
  const listed = await client.call('GET', '/api/ui/repositories')
  t.deepEqual(
    listed.json.items.map((item: { name: string }) => item.name),
    ['team/app'],
  )
  const loggedInCookie = client.cookie
  const out = await client.call('POST', '/api/ui/logout')
  t.is(out.status, 200)
  t.is(out.json.user, null)
  const replayed = await request(edge.url, '/api/ui/session', { headers: { cookie: loggedInCookie! } })
  t.is(replayed.json.user, null, 'a logged-out cookie is void')
})

test('a session expires; a change with an expired session is refused with 401 JSON and no challenge', async t => {
  const edge = await startUiEdge(t, { users: ['alice'] })
  await pushImage(edge.engineUrl, 'app', 'v1')
  const client = new UiClient(edge)
  await client.login('alice')
  t.is((await client.call('GET', '/api/ui/session')).json.user, 'alice')
  edge.clock += 13 * 3600_000
  const stale = client.cookie
  t.is((await request(edge.url, '/api/ui/session', { headers: { cookie: stale! } })).json.user, null)
  t.is((await request(edge.url, '/api/ui/repositories', { headers: { cookie: stale! } })).json.total, 0)
  client.cookie = stale
  const refused = await client.call('DELETE', '/api/ui/tag?repository=app&tag=v1')
  t.is(refused.status, 401)
  t.is(refused.headers['www-authenticate'], undefined)
  t.is(refused.json.errors[0].code, 'UNAUTHORIZED')
})

test('repositories: server-side paging, sorting, search, namespaces; parameters are validated', async t => {
  const edge = await startUiEdge(t) // no users: local mode, anonymous sees everything
  const names = ['alpha', 'beta', 'team/one', 'team/two', 'team/three', 'other/x', 'gamma']
  for (const [i, name] of names.entries()) await pushImage(edge.engineUrl, name, 'v1', { layers: [1000 * (i + 1)] })
  const client = new UiClient(edge)
  const session = await client.start()
  t.is(session.json.anonymousSees, 'everything')
  t.false(session.json.canLogIn)
  const page = await client.call('GET', '/api/ui/repositories?sort=name&offset=2&limit=3')
  t.is(page.json.total, 7)
  t.deepEqual(
    page.json.items.map((item: { name: string }) => item.name),
    ['gamma', 'other/x', 'team/one'],
  )
  t.deepEqual(page.json.namespaces, [
    { name: 'other', repositories: 1 },
    { name: 'team', repositories: 3 },
  ])
  const bySize = await client.call('GET', '/api/ui/repositories?sort=size&limit=2')
  t.deepEqual(
    bySize.json.items.map((item: { name: string }) => item.name),
    ['gamma', 'other/x'],
  )
  t.true(bySize.json.items[0].size > bySize.json.items[1].size)
  const byPushed = await client.call('GET', '/api/ui/repositories?sort=pushed&order=asc&limit=1')
  t.is(byPushed.json.items[0].name, 'alpha')
  const search = await client.call('GET', '/api/ui/repositories?q=TEAM&namespace=team')
  t.is(search.json.total, 3)
  for (const bad of ['limit=0', 'limit=201', 'offset=-1', 'sort=bogus', 'order=up', 'q=a&q=b', `q=${'x'.repeat(300)}`, 'namespace=Bad!', 'limit=1e3']) {
    const response = await client.call('GET', `/api/ui/repositories?${bad}`)
    t.is(response.status, 400, bad)
    t.regex(String(response.headers['content-type']), /^application\/json/, bad)
    t.truthy(response.json.errors[0].message, bad)
  }
  t.is((await client.call('POST', '/api/ui/repositories')).status, 405)
})

test('tags and image: sorting, shared digests, platforms of an index without attestations, layers, labels, referrers', async t => {
  const edge = await startUiEdge(t)
  const image = await pushImage(edge.engineUrl, 'app', 'v1', { labels: { 'org.opencontainers.image.title': 'App' }, layers: [1500, 2500] })
  await pushImage(edge.engineUrl, 'app', 'v2')
  const { putManifest, OCI_MANIFEST } = await import('../registry/fixtures.js')
  const stored = await request(edge.engineUrl, `/v2/app/manifests/${image.digest}`, { headers: { accept: OCI_MANIFEST } })
  t.is((await putManifest(edge.engineUrl, 'app', 'stable', stored.body, OCI_MANIFEST)).status, 201)
  const multi = await pushIndex(edge.engineUrl, 'app', 'multi')
  await pushImage(edge.engineUrl, 'app', undefined, {
    artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json',
    subject: { mediaType: OCI_MANIFEST, digest: image.digest, size: image.size },
  })
  await pushImage(edge.engineUrl, 'app', undefined, {
    artifactType: 'application/spdx+json',
    subject: { mediaType: OCI_MANIFEST, digest: image.digest, size: image.size },
  })
  const client = new UiClient(edge)
  const byName = await client.call('GET', '/api/ui/tags?repository=app&sort=name')
  t.deepEqual(
    byName.json.items.map((item: { tag: string }) => item.tag),
    ['multi', 'stable', 'v1', 'v2'],
  )
  t.true(byName.json.canDelete)
  const v1 = byName.json.items.find((item: { tag: string }) => item.tag === 'v1')
  t.deepEqual(v1.sameDigest, ['stable'])
  t.true(v1.size >= 4000, 'config and both layers')
  const multiTag = byName.json.items.find((item: { tag: string }) => item.tag === 'multi')
  t.deepEqual(multiTag.platforms, ['linux/amd64', 'linux/arm64/v8'])
  const paged = await client.call('GET', '/api/ui/tags?repository=app&sort=name&offset=1&limit=2')
  t.is(paged.json.total, 4)
  t.deepEqual(
    paged.json.items.map((item: { tag: string }) => item.tag),
    ['stable', 'v1'],
  )

  const index = await client.call('GET', '/api/ui/image?repository=app&reference=multi')
  t.is(index.status, 200)
  t.true(index.json.isIndex)
  t.is(index.json.digest, multi.digest)
  t.deepEqual(
    index.json.platforms.map((entry: { platform: string }) => entry.platform),
    ['linux/amd64', 'linux/arm64/v8'],
  )
  t.is(index.json.attestationManifests, 1)

  const details = await client.call('GET', `/api/ui/image?repository=app&reference=${image.digest}`)
  t.deepEqual(details.json.tags, ['stable', 'v1'])
  t.is(details.json.platform, 'linux/amd64')
  t.is(details.json.created, '2026-01-02T03:04:05Z')
  t.deepEqual(details.json.labels, { 'org.opencontainers.image.title': 'App' })
  t.deepEqual(
    details.json.layers.map((layer: { createdBy: string; size: number | null; emptyLayer: boolean }) => [layer.createdBy, layer.size, layer.emptyLayer]),
    [
      ['RUN step 0', 1500, false],
      ['RUN step 1', 2500, false],
      ['LABEL x=y', null, true],
    ],
  )
  t.is(details.json.referrers.signatures.length, 1)
  t.is(details.json.referrers.sboms.length, 1)
  t.is(details.json.referrers.sboms[0].artifactType, 'application/spdx+json')

  for (const bad of ['repository=App&reference=v1', 'repository=app&reference=..%2F..', 'repository=app', 'repository=app&reference=sha256:abc']) {
    t.is((await client.call('GET', `/api/ui/image?${bad}`)).status, 400, bad)
  }
  t.is((await client.call('GET', '/api/ui/image?repository=app&reference=nope')).status, 404)
  t.is((await client.call('GET', '/api/ui/tags?repository=nothing')).status, 404)
})

test('hostile labels and annotations come back as plain JSON strings, unchanged', async t => {
  const edge = await startUiEdge(t)
  await pushImage(edge.engineUrl, 'evil', 'v1', { annotations: XSS, labels: XSS })
  const response = await new UiClient(edge).call('GET', '/api/ui/image?repository=evil&reference=v1')
  t.regex(String(response.headers['content-type']), /^application\/json/)
  t.deepEqual(response.json.annotations, XSS)
  t.deepEqual(response.json.labels, XSS)
})

test('deletes: a tag alone, then an image with every tag on it; events emitted; read-only refuses', async t => {
  const edge = await startUiEdge(t, { users: ['alice'] })
  const image = await pushImage(edge.engineUrl, 'app', 'v1')
  const { putManifest, OCI_MANIFEST } = await import('../registry/fixtures.js')
  const stored = await request(edge.engineUrl, `/v2/app/manifests/${image.digest}`, { headers: { accept: OCI_MANIFEST } })
  await putManifest(edge.engineUrl, 'app', 'latest', stored.body, OCI_MANIFEST)
  await putManifest(edge.engineUrl, 'app', 'extra', stored.body, OCI_MANIFEST)
  const anonymous = new UiClient(edge)
  await anonymous.start()
  t.is((await anonymous.call('DELETE', '/api/ui/tag?repository=app&tag=v1')).status, 404, 'anonymous may not even see it')
  const client = new UiClient(edge)
  await client.login('alice')
  t.is((await client.call('DELETE', '/api/ui/tag?repository=app&tag=v1', { csrf: false })).status, 403)
  edge.readOnly = true
  t.is((await client.call('DELETE', '/api/ui/tag?repository=app&tag=v1')).status, 405)
  edge.readOnly = false
  const untag = await client.call('DELETE', '/api/ui/tag?repository=app&tag=v1')
  t.is(untag.status, 200)
  t.deepEqual(untag.json, { repository: 'app', tags: ['v1'], digest: null })
  t.truthy(edge.events.find(event => event.action === 'delete' && event.target === 'tag' && event.reference === 'v1'))
  t.is((await request(edge.engineUrl, '/v2/app/manifests/v1')).status, 404)
  t.is((await request(edge.engineUrl, '/v2/app/manifests/latest', { method: 'HEAD' })).status, 200)
  t.is((await client.call('DELETE', '/api/ui/tag?repository=app&tag=v1')).status, 404)
  t.is((await client.call('DELETE', '/api/ui/tag?repository=app&tag=../x')).status, 400)
  const removed = await client.call('DELETE', `/api/ui/image?repository=app&digest=${image.digest}`)
  t.is(removed.status, 200)
  t.deepEqual(
    [...(removed.json.tags as string[])].sort((a, b) => a.localeCompare(b)),
    ['extra', 'latest'],
  )
  t.truthy(edge.events.find(event => event.action === 'delete' && event.target === 'manifest' && event.reference === image.digest))
  t.is((await request(edge.engineUrl, `/v2/app/manifests/${image.digest}`)).status, 404)
})

/** Rules as stand-ins: everyone pulls public/**, alice does everything, bob pulls team/** only. */
const RULES: { glob: RegExp; who: (user: string | undefined) => boolean; can: AccessAction[] }[] = [
  { glob: /^public\/.+$/, who: () => true, can: ['pull'] },
  { glob: /^.+$/, who: user => user === 'alice', can: ['pull', 'push', 'overwrite', 'delete'] },
  { glob: /^team\/.+$/, who: user => user === 'bob', can: ['pull'] },
]
const policy: RulePolicy = {
  allows: (user, repository, action) => RULES.find(rule => rule.glob.test(repository) && rule.who(user))?.can.includes(action) ?? false,
}

test('access rules: each viewer sees what they may pull and deletes only where they may delete', async t => {
  const edge = await startUiEdge(t, { users: ['alice', 'bob'], policy })
  for (const name of ['public/web', 'team/api', 'secret/db']) await pushImage(edge.engineUrl, name, 'v1')
  const names = async (client: UiClient) => (await client.call('GET', '/api/ui/repositories')).json.items.map((item: { name: string }) => item.name)
  const anonymous = new UiClient(edge)
  t.is((await anonymous.start()).json.anonymousSees, 'some')
  t.deepEqual(await names(anonymous), ['public/web'])
  t.is((await anonymous.call('GET', '/api/ui/tags?repository=secret/db')).status, 404)
  t.false((await anonymous.call('GET', '/api/ui/tags?repository=public/web')).json.canDelete)
  const bob = new UiClient(edge)
  await bob.login('bob')
  t.deepEqual(await names(bob), ['public/web', 'team/api'])
  t.is((await bob.call('GET', '/api/ui/storage')).json.repositories.length, 2)
  t.false((await bob.call('GET', '/api/ui/tags?repository=team/api')).json.canDelete)
  const denied = await bob.call('DELETE', '/api/ui/tag?repository=team/api&tag=v1')
  t.is(denied.status, 403)
  t.is(denied.json.errors[0].code, 'DENIED')
  t.is(denied.headers['www-authenticate'], undefined)
  const alice = new UiClient(edge)
  await alice.login('alice')
  t.deepEqual(await names(alice), ['public/web', 'secret/db', 'team/api'])
  t.is((await alice.call('DELETE', '/api/ui/tag?repository=team/api&tag=v1')).status, 200)
})

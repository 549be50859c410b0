/**
 * The edge under access rules, in this process with the engine behind it: who gets 401 with which
 * Bearer challenge, who gets 403, what a token narrows, immutable tags, the catalog and mounts
 * filtered by the rules, and read-only mode. The rules and tokens here are stand-ins of one module
 * each (their own tests cover them); the whole stack with real clients is in test/e2e/access-*.
 */
import test from 'ava'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startEdge, type Edge } from '../../src/edge/edge.js'
import type { RulePolicy } from '../../src/edge/steps/access-control.js'
import { TokenKeys } from '../../src/access/token-keys.js'
import { TokenService } from '../../src/access/token-service.js'
import { FileCertStore } from '../../src/edge/tls/cert-store.js'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import type { AccessAction } from '../../src/http/exchange.js'
import { registryRoutes } from '../../src/registry/handlers/index.js'
import { accessNeeded } from '../../src/registry/access-needs.js'
import { LOCAL_TEST_EDGE } from '../helpers/edge.js'
import { request, type RequestOptions } from '../helpers/http.js'
import { errorCode, imageManifest, OCI_MANIFEST, pushBlob, putManifest } from '../registry/fixtures.js'
import { createRegistryApp, type RegistryApp } from '../../src/registry/app.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'

/** The README's example rules, written out: first rule that names the caller and matches decides. */
const RULES: { glob: RegExp; who: (user: string | undefined) => boolean; can: AccessAction[] }[] = [
  { glob: /^public\/.+$/, who: () => true, can: ['pull'] },
  { glob: /^alice\/.+$/, who: user => user === 'alice', can: ['pull', 'push', 'overwrite', 'delete'] },
  { glob: /^release\/.+$/, who: user => user === 'alice' || user === 'bob', can: ['pull', 'push'] },
  { glob: /^secret\/.+$/, who: user => user === 'alice', can: ['pull', 'push'] },
  { glob: /^(?!secret\/).+$/, who: user => user !== undefined, can: ['pull'] },
]
const policy: RulePolicy = {
  allows(user, repository, action) {
    const rule = RULES.find(candidate => candidate.glob.test(repository) && candidate.who(user))
    return rule !== undefined && rule.can.includes(action)
  },
}

let tokens: TokenService
let keys: TokenKeys
/** Tokens of the service under test, issued directly (the realm's own answers are tested below and in test/access). */
const issued = new Map<string, string>()
function token(name: string): string {
  const value = issued.get(name)
  if (value === undefined) throw new Error(`no token ${name}`)
  return value
}

let root: string
let app: RegistryApp
let engine: http.Server
let edge: Edge
let engineUrl: string
let readOnly = false
const basic = (user: string) => ({ authorization: 'Basic ' + Buffer.from(`${user}:${user}-password`).toString('base64') })
const bearer = (name: string) => ({ authorization: `Bearer ${token(name)}` })
const via = (path: string, options: RequestOptions = {}) => request(edge.urls.local!, path, options)

test.before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'berth-access-control-'))
  const htpasswd = path.join(root, 'htpasswd')
  await writeFile(htpasswd, ['alice', 'bob'].map(user => `${user}:${hashPassword(`${user}-password`, 4)}`).join('\n') + '\n')
  keys = await TokenKeys.open(new FileCertStore(path.join(root, 'certs')), { maintainEveryMs: 0 })
  tokens = new TokenService({ keys, issuer: 'berth', service: 'berth-test' })
  issued.set('alice-pull-only', tokens.issue('alice', [{ type: 'repository', name: 'alice/app', actions: ['pull'] }]).token)
  issued.set('alice-push', tokens.issue('alice', [{ type: 'repository', name: 'alice/app', actions: ['pull', 'push'] }]).token)
  issued.set('anonymous-public', tokens.issue(undefined, [{ type: 'repository', name: 'public/app', actions: ['pull'] }]).token)
  issued.set('removed-user', tokens.issue('mallory', [{ type: 'repository', name: 'public/app', actions: ['pull'] }]).token)
  issued.set('forged', token('alice-push').slice(0, -4) + 'AAAA')
  app = createRegistryApp({ driver: new InMemoryDriver() })
  engine = http.createServer(app.handle)
  await new Promise<void>(resolve => engine.listen(0, '127.0.0.1', resolve))
  engineUrl = `http://127.0.0.1:${(engine.address() as { port: number }).port}`
  edge = await startEdge({
    ...LOCAL_TEST_EDGE,
    htpasswdPath: htpasswd,
    engine: app.serve,
    access: { policy: () => policy, tokens },
    readOnly: () => readOnly,
  })
  // Content put straight into the engine, behind the edge's back.
  for (const name of ['public/app', 'alice/app', 'bob/app', 'release/app']) {
    const image = await imageManifest(engineUrl, name)
    await putManifest(engineUrl, name, '1.0', image.manifest, OCI_MANIFEST)
  }
})

test.after.always(async () => {
  await edge?.close()
  keys?.close()
  engine?.closeAllConnections()
  engine?.close()
  await app?.close()
  await rm(root, { recursive: true, force: true })
})

test('an anonymous /v2/ gets the Bearer challenge naming the realm on the host asked for', async t => {
  const response = await via('/v2/')
  t.is(response.status, 401)
  const port = new URL(edge.urls.local!).port
  t.is(response.headers['www-authenticate'], `Bearer realm="http://127.0.0.1:${port}/token",service="berth-test"`)
  t.is(errorCode(response), 'UNAUTHORIZED')
  t.is((await via('/v2/', { headers: basic('alice') })).status, 200)
  t.is((await via('/v2/', { headers: bearer('anonymous-public') })).status, 200, 'any valid token, even anonymous, passes the ping')
})

test('the token realm grants what the rules allow of what is asked, and the token works', async t => {
  const anonymous = await via('/token?service=berth-test&scope=repository:public/app:pull,push&scope=repository:alice/app:pull')
  t.is(anonymous.status, 200)
  const pull = await via('/v2/public/app/manifests/1.0', { headers: { authorization: `Bearer ${anonymous.json.token}`, accept: OCI_MANIFEST } })
  t.is(pull.status, 200)
  const push = await via('/v2/public/app/blobs/uploads/', { method: 'POST', headers: { authorization: `Bearer ${anonymous.json.token}` } })
  t.is(push.status, 401, 'push was asked for, not granted')
  const alice = await via('/token?service=berth-test&scope=repository:alice/app:pull,push', { headers: basic('alice') })
  t.is(alice.status, 200)
  t.is((await via('/v2/alice/app/blobs/uploads/', { method: 'POST', headers: { authorization: `Bearer ${alice.json.token}` } })).status, 202)
  const wrong = await via('/token?service=berth-test', { headers: { authorization: 'Basic ' + Buffer.from('alice:wrong').toString('base64') } })
  t.is(wrong.status, 401)
})

test('anonymous may pull public/* without a token, and gets a challenge with the scope elsewhere', async t => {
  t.is((await via('/v2/public/app/manifests/1.0', { headers: { accept: OCI_MANIFEST } })).status, 200)
  t.is((await via('/v2/public/app/tags/list')).status, 200)
  const denied = await via('/v2/alice/app/manifests/1.0')
  t.is(denied.status, 401)
  t.regex(String(denied.headers['www-authenticate']), /,scope="repository:alice\/app:pull"$/)
  const push = await via('/v2/public/app/blobs/uploads/', { method: 'POST' })
  t.is(push.status, 401, 'anonymous push is refused with a challenge, so a client can log in')
  t.regex(String(push.headers['www-authenticate']), /scope="repository:public\/app:pull,push"/)
})

test('a known user the rules refuse gets 403 DENIED, not a challenge', async t => {
  const response = await via('/v2/bob/app/blobs/uploads/', { method: 'POST', headers: basic('alice') })
  t.is(response.status, 403)
  t.is(errorCode(response), 'DENIED')
  t.is(response.headers['www-authenticate'], undefined)
  t.is((await via('/v2/bob/app/manifests/1.0', { headers: basic('alice') })).status, 200, 'the last rule lets every user pull')
  t.is((await via('/v2/alice/app/blobs/uploads/', { method: 'POST', headers: basic('alice') })).status, 202)
})

test('wrong credentials get the challenge; an unknown scheme too', async t => {
  const wrong = await via('/v2/public/app/tags/list', { headers: { authorization: 'Basic ' + Buffer.from('alice:nope').toString('base64') } })
  t.is(wrong.status, 401)
  t.regex(String(wrong.headers['www-authenticate']), /^Bearer realm=/)
  t.is((await via('/v2/public/app/tags/list', { headers: { authorization: 'Digest x' } })).status, 401)
})

test('a token narrows the rules: an action it does not grant asks for a wider token', async t => {
  t.is((await via('/v2/alice/app/manifests/1.0', { headers: { ...bearer('alice-pull-only'), accept: OCI_MANIFEST } })).status, 200)
  const push = await via('/v2/alice/app/blobs/uploads/', { method: 'POST', headers: bearer('alice-pull-only') })
  t.is(push.status, 401)
  t.regex(String(push.headers['www-authenticate']), /scope="repository:alice\/app:pull,push",error="insufficient_scope"$/)
  t.is((await via('/v2/alice/app/blobs/uploads/', { method: 'POST', headers: bearer('alice-push') })).status, 202)
  t.is((await via('/v2/public/app/tags/list', { headers: bearer('alice-push') })).status, 401, 'a repository the token does not name')
})

test('a bad token, or one whose user left the htpasswd file, is refused as invalid', async t => {
  for (const name of ['forged', 'removed-user']) {
    const response = await via('/v2/public/app/tags/list', { headers: bearer(name) })
    t.is(response.status, 401, name)
    t.regex(String(response.headers['www-authenticate']), /error="invalid_token"$/, name)
  }
})

test('push without overwrite: a new tag works, moving an existing one is DENIED, the same digest again is fine', async t => {
  const image = await imageManifest(engineUrl, 'release/app')
  const moved = await request(edge.urls.local!, '/v2/release/app/manifests/1.0', {
    method: 'PUT',
    headers: { ...basic('bob'), 'content-type': OCI_MANIFEST },
    body: image.manifest,
  })
  t.is(moved.status, 403)
  t.is(errorCode(moved), 'DENIED')
  t.regex(moved.json.errors[0].message, /tag 1\.0 of release\/app already points at sha256:/)
  const fresh = await request(edge.urls.local!, '/v2/release/app/manifests/1.1', {
    method: 'PUT',
    headers: { ...basic('bob'), 'content-type': OCI_MANIFEST },
    body: image.manifest,
  })
  t.is(fresh.status, 201)
  const again = await request(edge.urls.local!, '/v2/release/app/manifests/1.1', {
    method: 'PUT',
    headers: { ...basic('bob'), 'content-type': OCI_MANIFEST },
    body: image.manifest,
  })
  t.is(again.status, 201, 'pushing the same manifest to the same tag is not a move')
  const stored = await request(engineUrl, '/v2/release/app/manifests/1.0', { method: 'HEAD', headers: { accept: OCI_MANIFEST } })
  t.not(stored.headers['docker-content-digest'], image.digest, 'the immutable tag did not move')
})

test('the catalog lists only what the caller may pull', async t => {
  const anonymous = await via('/v2/_catalog')
  t.is(anonymous.status, 200)
  t.deepEqual(anonymous.json.repositories, ['public/app'])
  const secret = await imageManifest(engineUrl, 'secret/listed')
  await putManifest(engineUrl, 'secret/listed', 'v1', secret.manifest, OCI_MANIFEST)
  const alice = await via('/v2/_catalog', { headers: basic('alice') })
  t.deepEqual(
    alice.json.repositories.filter((name: string) => name !== 'secret/app'),
    ['alice/app', 'bob/app', 'public/app', 'release/app', 'secret/listed'],
  )
  const bob = await via('/v2/_catalog', { headers: basic('bob') })
  t.false(bob.json.repositories.some((name: string) => name.startsWith('secret/')))
})

test('a token lists the catalog with the registry:catalog:* grant, as the rules allow; without it, 401 asks for it', async t => {
  const realm = await via('/token?service=berth-test&scope=registry:catalog:*', { headers: basic('bob') })
  const listed = await via('/v2/_catalog', { headers: { authorization: `Bearer ${realm.json.token}` } })
  t.is(listed.status, 200)
  t.true(listed.json.repositories.includes('alice/app'))
  t.false(listed.json.repositories.some((name: string) => name.startsWith('secret/')))
  const repositoryToken = await via('/v2/_catalog', { headers: bearer('alice-push') })
  t.is(repositoryToken.status, 401)
  t.regex(String(repositoryToken.headers['www-authenticate']), /scope="registry:catalog:\*",error="insufficient_scope"$/)
})

test('a cross-repository mount needs pull on the source, else it is a plain upload (202)', async t => {
  const layer = Buffer.from('a layer bob may not pull ' + Date.now())
  const digest = await pushBlob(engineUrl, 'secret/app', layer)
  const fromPrivate = await via(`/v2/release/app/blobs/uploads/?mount=${digest}&from=secret/app`, { method: 'POST', headers: basic('bob') })
  t.is(fromPrivate.status, 202, 'bob may not pull secret/app: no mount')
  t.is((await request(engineUrl, `/v2/release/app/blobs/${digest}`, { method: 'HEAD' })).status, 404)
  const guess = await via(`/v2/release/app/blobs/uploads/?mount=${digest}`, { method: 'POST', headers: basic('bob') })
  t.is(guess.status, 202, 'a mount without a source never finds a blob by digest alone')
  const allowed = await via(`/v2/alice/app/blobs/uploads/?mount=${digest}&from=secret/app`, { method: 'POST', headers: basic('alice') })
  t.is(allowed.status, 201)
})

test('a name outside the grammar is refused before the rules are asked', async t => {
  const response = await via('/v2/Public/App/tags/list')
  t.is(response.status, 400)
  t.is(errorCode(response), 'NAME_INVALID')
})

test.serial('read-only mode refuses every write with 405 and keeps pulls working', async t => {
  readOnly = true
  try {
    const push = await via('/v2/alice/app/blobs/uploads/', { method: 'POST', headers: basic('alice') })
    t.is(push.status, 405)
    t.is(errorCode(push), 'UNSUPPORTED')
    t.regex(push.json.errors[0].message, /read-only/)
    t.is((await via('/v2/alice/app/manifests/1.0', { method: 'DELETE', headers: basic('alice') })).status, 405)
    t.is((await via('/v2/alice/app/manifests/1.0', { headers: { ...basic('alice'), accept: OCI_MANIFEST } })).status, 200)
  } finally {
    readOnly = false
  }
  t.is((await via('/v2/alice/app/blobs/uploads/', { method: 'POST', headers: basic('alice') })).status, 202)
})

test('every method of every route that names a repository has its access need', t => {
  const samples: Record<string, string> = {
    tags: '/v2/a/b/tags/list',
    manifest: '/v2/a/b/manifests/latest',
    'upload-start': '/v2/a/b/blobs/uploads/',
    upload: '/v2/a/b/blobs/uploads/some-id',
    blob: '/v2/a/b/blobs/sha256:' + '0'.repeat(64),
    referrers: '/v2/a/b/referrers/sha256:' + '0'.repeat(64),
    base: '/v2/',
    catalog: '/v2/_catalog',
  }
  for (const route of registryRoutes) {
    const sample = samples[route.name]
    if (sample === undefined) return t.fail(`no sample path for route ${route.name}: add one`)
    for (const method of Object.keys(route.handlers)) {
      const need = accessNeeded(method, sample)
      t.not(need.kind, 'none', `${method} ${route.name}`)
      if (need.kind === 'repository') t.is(need.repository, 'a/b')
    }
  }
  t.deepEqual(accessNeeded('PUT', '/v2/a/b/manifests/x'), { kind: 'repository', repository: 'a/b', actions: ['pull', 'push'] })
  t.deepEqual(accessNeeded('DELETE', '/v2/a/b/blobs/sha256:' + '0'.repeat(64)), { kind: 'repository', repository: 'a/b', actions: ['delete'] })
  t.is(accessNeeded('POST', '/v2/a/b/manifests/x').kind, 'none', 'a method the route does not serve: the engine answers 405')
})

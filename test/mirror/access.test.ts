/**
 * Access rules and the mirror: the rules are asked about the name a request really reads, so a rule
 * on `docker.io/**` holds however the client names the image — with the path prefix, with
 * containerd's `?ns=docker.io`, or through the default mirror (docker's `registry-mirrors`).
 */
import test from 'ava'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { AccessPolicy } from '../../src/access/rules.js'
import { TokenKeys } from '../../src/access/token-keys.js'
import { TokenService } from '../../src/access/token-service.js'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { startEdge } from '../../src/edge/edge.js'
import { FileCertStore } from '../../src/edge/tls/cert-store.js'
import { LOCAL_TEST_EDGE } from '../helpers/edge.js'
import { request } from '../helpers/http.js'
import { DOCKER_MANIFEST, imageManifest, OCI_MANIFEST, putManifest } from '../registry/fixtures.js'
import { startMirror, startUpstream } from './fixtures.js'

const RULES = `
rules:
  - repository: "docker.io/**"
    who: [alice]
    can: [pull]
  - repository: "docker.io/**"
    who: [anonymous, authenticated]
    can: []
  - repository: "**"
    who: [anonymous, authenticated]
    can: [pull]
`
const ACCEPT = { accept: `${OCI_MANIFEST}, ${DOCKER_MANIFEST}` }
const alice = { authorization: 'Basic ' + Buffer.from('alice:alice-password').toString('base64') }

test('a rule on the mirror prefix holds for the path prefix, ?ns= and the default mirror alike', async t => {
  const upstream = await startUpstream(t)
  const image = await imageManifest(upstream.direct, 'library/app')
  t.is((await putManifest(upstream.direct, 'library/app', '1', image.manifest, OCI_MANIFEST)).status, 201)
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'docker.io', url: upstream.url }], defaultPrefix: 'docker.io' })

  const root = await mkdtemp(path.join(tmpdir(), 'berth-mirror-access-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const htpasswd = path.join(root, 'htpasswd')
  await writeFile(htpasswd, `alice:${hashPassword('alice-password', 4)}\n`)
  const keys = await TokenKeys.open(new FileCertStore(path.join(root, 'certs')), { maintainEveryMs: 0 })
  t.teardown(() => keys.close())
  const tokens = new TokenService({ keys, issuer: 'berth', service: 'berth-test' })
  const policy = AccessPolicy.parse(RULES, 'access.yml')
  const edge = await startEdge({
    ...LOCAL_TEST_EDGE,
    htpasswdPath: htpasswd,
    engine: mirror.app.serve,
    access: { policy: () => policy, tokens, repositoryOf: mirror.app.repositoryOf, mirrorPrefixes: mirror.app.mirrorPrefixes },
  })
  t.teardown(() => edge.close())
  const base = edge.urls.local!

  for (const path of ['/v2/docker.io/library/app/manifests/1', '/v2/library/app/manifests/1?ns=docker.io', '/v2/library/app/manifests/1']) {
    const anonymous = await request(base, path, { headers: ACCEPT })
    t.is(anonymous.status, 401, `anonymous ${path}`)
    const asAlice = await request(base, path, { headers: { ...ACCEPT, ...alice } })
    t.is(asAlice.status, 200, `alice ${path}`)
    t.is(asAlice.headers['docker-content-digest'], image.digest)
  }

  // docker with registry-mirrors asks a token for the name it pulls, unprefixed: alice gets pull on it.
  const token = await request(base, '/token?service=berth-test&scope=repository:library/app:pull', { headers: alice })
  t.is(token.status, 200)
  const viaToken = await request(base, '/v2/library/app/manifests/1', { headers: { ...ACCEPT, authorization: `Bearer ${token.json.token}` } })
  t.is(viaToken.status, 200)
  const anonymousToken = await request(base, '/token?service=berth-test&scope=repository:library/app:pull')
  const refused = await request(base, '/v2/library/app/manifests/1?ns=docker.io', {
    headers: { ...ACCEPT, authorization: `Bearer ${anonymousToken.json.token}` },
  })
  t.is(refused.status, 401, 'an anonymous token for the unprefixed name does not open the mirror')
})

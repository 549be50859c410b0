/**
 * The access rules end to end, as a property (issue #14): random rule files × random callers ×
 * random requests over every route and method of the Distribution API → the answer of the edge and
 * the engine equals what a plain reference evaluation of the rules, written here, says.
 *
 * One edge with the engine in this process serves every run; each run swaps in its own rules file
 * (YAML text, parsed by AccessPolicy.parse; the expected decisions never come from AccessPolicy).
 * The repositories below are seeded straight into the engine, behind the edge's back, and whatever
 * a request changes (a deleted manifest or blob, a moved or added tag, an upload) is put back
 * through the engine right after it, so every request starts from the same state.
 *
 * What the reference knows, besides the rules (access/rules.ts states them):
 *   GET|HEAD manifests, blobs, tags, referrers              pull
 *   PUT manifests, POST/GET/PATCH/PUT/DELETE uploads        pull and push
 *   DELETE manifests and blobs                              delete
 *   PUT moving an existing tag to another digest            overwrite as well (the engine's check)
 *   a mount                                                 pull on `from`, else a plain upload (202)
 *   _catalog                                                the seeded repositories the caller may pull
 *   /v2/                                                    any caller but anonymous without a token
 *   a method a route does not serve                         nothing: 405 for everyone
 * A caller with a token may do what the rules allow and the token grants (`push` covers overwrite).
 * Refused: a known user the rules refuse → 403 DENIED; anyone else (anonymous, or a token short of
 * the scope) → 401 with a Bearer challenge naming the scope.
 */
import test from 'ava'
import { fc, testProp } from '@fast-check/ava'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { ACTIONS, AccessPolicy, type Action } from '../../src/access/rules.js'
import { TokenKeys } from '../../src/access/token-keys.js'
import { TokenService } from '../../src/access/token-service.js'
import { startEdge, type Edge } from '../../src/edge/edge.js'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { FileCertStore } from '../../src/edge/tls/cert-store.js'
import { createRegistryApp, type RegistryApp } from '../../src/registry/app.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import { LOCAL_TEST_EDGE } from '../helpers/edge.js'
import { request, type HttpResponse } from '../helpers/http.js'
import { errorCode, OCI_MANIFEST, pushBlob, putManifest, sha256 } from '../registry/fixtures.js'

const SERVICE = 'berth-test'
/** In the htpasswd file; u4 is named by no rule directly, only through `authenticated` or a group. */
const USERS = ['u1', 'u2', 'u3', 'u4'] as const
const GROUPS = ['g1', 'g2'] as const
const REPOSITORIES = ['a', 'a/a', 'a/b', 'b/a', 'a/b/c', 'c/a/b'] as const
type Repository = (typeof REPOSITORIES)[number]
const TAG = 't1'

// ---------------------------------------------------------------------------------------------
// The reference: rules as data, evaluated by plain recursion over segments and characters.

interface RuleSpec {
  globs: string[]
  who: string[]
  can: Action[]
}
interface RulesSpec {
  groups: Record<string, string[]>
  rules: RuleSpec[]
}

/** One segment against a segment pattern where `*` is one character or more. */
function segmentMatches(pattern: string, text: string): boolean {
  if (pattern === '') return text === ''
  if (pattern[0] === '*') {
    for (let taken = 1; taken <= text.length; taken++) if (segmentMatches(pattern.slice(1), text.slice(taken))) return true
    return false
  }
  return text !== '' && pattern[0] === text[0] && segmentMatches(pattern.slice(1), text.slice(1))
}

/** `**` last: one segment or more; first or in the middle: zero or more. */
function globMatches(pattern: readonly string[], name: readonly string[]): boolean {
  if (pattern.length === 0) return name.length === 0
  if (pattern[0] === '**') {
    if (pattern.length === 1) return name.length > 0
    for (let skipped = 0; skipped <= name.length; skipped++) if (globMatches(pattern.slice(1), name.slice(skipped))) return true
    return false
  }
  return name.length > 0 && segmentMatches(pattern[0]!, name[0]!) && globMatches(pattern.slice(1), name.slice(1))
}

function namesCaller(spec: RulesSpec, who: string, user: string | undefined): boolean {
  if (who === 'anonymous') return user === undefined
  if (user === undefined) return false
  if (who === 'authenticated') return true
  if (who.startsWith('group:')) return spec.groups[who.slice('group:'.length)]?.includes(user) ?? false
  return who === user
}

/** The `can` of the first rule that names the caller and matches the repository; none when no rule applies. */
function rulesAllow(spec: RulesSpec, user: string | undefined, repository: string, action: Action): boolean {
  const rule = spec.rules.find(
    candidate => candidate.who.some(who => namesCaller(spec, who, user)) && candidate.globs.some(glob => globMatches(glob.split('/'), repository.split('/'))),
  )
  return rule?.can.includes(action) ?? false
}

function render(spec: RulesSpec): string {
  const lines = ['groups:', ...Object.entries(spec.groups).map(([name, members]) => `  ${name}: [${members.join(', ')}]`), 'rules:']
  for (const rule of spec.rules) {
    const repository = rule.globs.length === 1 ? JSON.stringify(rule.globs[0]) : `[${rule.globs.map(glob => JSON.stringify(glob)).join(', ')}]`
    lines.push(`  - repository: ${repository}`, `    who: [${rule.who.join(', ')}]`, `    can: [${rule.can.join(', ')}]`)
  }
  return lines.join('\n') + '\n'
}

// ---------------------------------------------------------------------------------------------
// Callers and requests.

interface Grant {
  name: string
  actions: string[]
}
type Caller =
  | { kind: 'anonymous' }
  | { kind: 'basic'; user: string }
  /** A token issued directly with arbitrary grants (`@target`: the repository of the request). */
  | { kind: 'token'; user: string | undefined; grants: Grant[] }
  /** A token fetched from the realm for what the request needs, as docker does after a 401. */
  | { kind: 'realm'; user: string | undefined }

const userOf = (caller: Caller): string | undefined => (caller.kind === 'anonymous' ? undefined : caller.user)

type Need = 'none' | 'caller' | 'catalog' | readonly Action[]
const PULL: readonly Action[] = ['pull']
const PUSH: readonly Action[] = ['pull', 'push']
const DELETE: readonly Action[] = ['delete']

/** Every route × method, and one method per route that the route does not serve. */
const OPERATIONS = {
  'base GET': 'caller',
  'base HEAD': 'caller',
  'base DELETE': 'none',
  'catalog GET': 'catalog',
  'catalog POST': 'none',
  'tags GET': PULL,
  'tags DELETE': 'none',
  'manifest GET tag': PULL,
  'manifest HEAD tag': PULL,
  'manifest GET digest': PULL,
  'manifest PUT same': PUSH,
  'manifest PUT move': PUSH,
  'manifest PUT new tag': PUSH,
  'manifest PUT digest': PUSH,
  'manifest DELETE tag': DELETE,
  'manifest DELETE digest': DELETE,
  'manifest POST': 'none',
  'blob GET': PULL,
  'blob HEAD': PULL,
  'blob DELETE': DELETE,
  'blob PUT': 'none',
  'upload POST': PUSH,
  'upload POST mount': PUSH,
  'upload POST mount without from': PUSH,
  'upload GET': PUSH,
  'upload PATCH': PUSH,
  'upload PUT': PUSH,
  'upload DELETE': PUSH,
  'referrers GET': PULL,
  'referrers DELETE': 'none',
} as const satisfies Record<string, Need>
type Operation = keyof typeof OPERATIONS

interface Query {
  caller: Caller
  repository: Repository
  operation: Operation
  /** The source of a mount. */
  from: Repository
}

/** What the token of the caller grants on `repository`; no token grants everything (the rules alone decide). */
function tokenGrants(caller: Caller, grants: readonly Grant[] | undefined, repository: string, action: Action): boolean {
  if (caller.kind !== 'token' && caller.kind !== 'realm') return true
  const wanted = action === 'overwrite' ? 'push' : action
  return (grants ?? []).some(grant => grant.name === repository && (grant.actions.includes('*') || grant.actions.includes(wanted)))
}

// ---------------------------------------------------------------------------------------------
// The edge, the engine and the seeded content.

interface Seeded {
  blobs: Buffer[]
  /** A blob no manifest names: what the blob routes and mounts use. */
  blob: Buffer
  blobDigest: string
  /** Tagged t1. */
  m1: Buffer
  m1Digest: string
  /** The same image with an annotation: another digest, whose blobs are in the repository too. */
  m2: Buffer
  m2Digest: string
}

let root: string
let app: RegistryApp
let engine: http.Server
let engineUrl: string
let edge: Edge
let edgeUrl: string
let keys: TokenKeys
let tokens: TokenService
let current: AccessPolicy
const seeded = new Map<Repository, Seeded>()
let counter = 0

const basic = (user: string) => 'Basic ' + Buffer.from(`${user}:${user}-password`).toString('base64')

function manifestOf(config: Buffer, layer: Buffer, annotations?: Record<string, string>): Buffer {
  const body = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.byteLength },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(layer), size: layer.byteLength }],
    ...(annotations === undefined ? {} : { annotations }),
  }
  return Buffer.from(JSON.stringify(body))
}

async function seed(repository: Repository): Promise<void> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, repository }))
  const layer = Buffer.from(`layer of ${repository}`)
  const blob = Buffer.from(`loose blob of ${repository}`)
  const m1 = manifestOf(config, layer)
  const m2 = manifestOf(config, layer, { version: '2' })
  const entry: Seeded = { blobs: [config, layer, blob], blob, blobDigest: sha256(blob), m1, m1Digest: sha256(m1), m2, m2Digest: sha256(m2) }
  for (const content of entry.blobs) await pushBlob(engineUrl, repository, content)
  await expectEngine(putManifest(engineUrl, repository, TAG, m1, OCI_MANIFEST), 201, `seed ${repository}`)
  seeded.set(repository, entry)
}

async function expectEngine(response: Promise<HttpResponse>, status: number, what: string): Promise<HttpResponse> {
  const answer = await response
  if (answer.status !== status) throw new Error(`${what}: engine answered ${answer.status} ${answer.body.toString()}`)
  return answer
}

/** Starts an upload through the engine directly; its path (Location). */
async function engineUpload(repository: string): Promise<string> {
  const started = await expectEngine(request(engineUrl, `/v2/${repository}/blobs/uploads/`, { method: 'POST' }), 202, 'engine upload')
  return String(started.headers.location)
}

const tagDigest = async (repository: string, tag: string) =>
  (await request(engineUrl, `/v2/${repository}/manifests/${tag}`, { method: 'HEAD', headers: { accept: OCI_MANIFEST } })).headers['docker-content-digest']

test.before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'berth-access-properties-'))
  const htpasswd = path.join(root, 'htpasswd')
  await writeFile(htpasswd, USERS.map(user => `${user}:${hashPassword(`${user}-password`, 4)}`).join('\n') + '\n')
  keys = await TokenKeys.open(new FileCertStore(path.join(root, 'certs')), { maintainEveryMs: 0 })
  tokens = new TokenService({ keys, issuer: 'berth', service: SERVICE })
  current = AccessPolicy.parse('rules:\n  - repository: "**"\n    who: [anonymous]\n    can: [pull]\n', 'access.yml')
  app = createRegistryApp({ driver: new InMemoryDriver() })
  engine = http.createServer(app.handle)
  await new Promise<void>(resolve => engine.listen(0, '127.0.0.1', resolve))
  engineUrl = `http://127.0.0.1:${(engine.address() as { port: number }).port}`
  edge = await startEdge({ ...LOCAL_TEST_EDGE, htpasswdPath: htpasswd, engine: app.serve, access: { policy: () => current, tokens } })
  edgeUrl = edge.urls.local!
  for (const repository of REPOSITORIES) await seed(repository)
})

test.after.always(async () => {
  await edge?.close()
  keys?.close()
  engine?.closeAllConnections()
  engine?.close()
  await app?.close()
  await rm(root, { recursive: true, force: true })
})

// ---------------------------------------------------------------------------------------------
// Arbitraries.

const globSegment = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('a', 'b', 'c') },
  { weight: 2, arbitrary: fc.constantFrom('*', '**') },
  { weight: 1, arbitrary: fc.constant('a*') },
)
const glob = fc.oneof(
  { weight: 3, arbitrary: fc.array(globSegment, { minLength: 1, maxLength: 3 }).map(segments => segments.join('/')) },
  // Broad globs often, or most requests would meet no rule at all.
  { weight: 2, arbitrary: fc.constantFrom('**', 'a/**', '*/*', '**/a', 'b/**', '**/b/**') },
)
const WHO = ['anonymous', 'authenticated', 'u1', 'u2', 'u3', ...GROUPS.map(group => `group:${group}`)]
const ruleSpec: fc.Arbitrary<RuleSpec> = fc.record({
  globs: fc.uniqueArray(glob, { minLength: 1, maxLength: 2 }).filter(globs => globs.every(text => !text.includes('**/**'))),
  who: fc.subarray(WHO, { minLength: 1, maxLength: 3 }),
  can: fc.oneof(fc.subarray([...ACTIONS], { minLength: 1 }), fc.constantFrom<Action[]>(['pull', 'push'], ['pull', 'push', 'delete'], [...ACTIONS])),
})
const rulesSpec: fc.Arbitrary<RulesSpec> = fc.record({
  groups: fc.record({ g1: fc.subarray([...USERS], { minLength: 1 }), g2: fc.subarray([...USERS], { minLength: 1 }) }),
  rules: fc.array(ruleSpec, { minLength: 1, maxLength: 5 }),
})
const repository = fc.constantFrom(...REPOSITORIES)
const maybeUser = fc.constantFrom(undefined, ...USERS)
const caller: fc.Arbitrary<Caller> = fc.oneof(
  fc.constant({ kind: 'anonymous' as const }),
  fc.constantFrom(...USERS).map(user => ({ kind: 'basic' as const, user })),
  fc.record({
    kind: fc.constant('token' as const),
    user: maybeUser,
    grants: fc.array(
      fc.record({ name: fc.constantFrom('@target', '@from', ...REPOSITORIES), actions: fc.subarray(['pull', 'push', 'delete', '*'], { minLength: 1 }) }),
      { maxLength: 3 },
    ),
  }),
  fc.record({ kind: fc.constant('realm' as const), user: maybeUser }),
)
const query: fc.Arbitrary<Query> = fc.record({
  caller,
  repository,
  operation: fc.constantFrom(...(Object.keys(OPERATIONS) as Operation[])),
  from: repository,
})

// ---------------------------------------------------------------------------------------------
// One request: the token (if any), the request itself, its expected outcome, and the clean-up.

const failures: string[] = []

interface Sent {
  method: string
  path: string
  body?: Buffer
  headers?: Record<string, string>
  /** Upload sessions to cancel afterwards (through the engine). */
  uploads: string[]
}

async function prepare(operation: Operation, name: Repository, from: Repository): Promise<Sent> {
  const entry = seeded.get(name)!
  const put = (reference: string, manifest: Buffer): Sent => ({
    method: 'PUT',
    path: `/v2/${name}/manifests/${reference}`,
    body: manifest,
    headers: { 'content-type': OCI_MANIFEST },
    uploads: [],
  })
  const simple = (method: string, path: string): Sent => ({ method, path, uploads: [] })
  const upload = async (method: string, body?: Buffer): Promise<Sent> => {
    const location = await engineUpload(name)
    if (method === 'PUT') return { method, path: `${location}${location.includes('?') ? '&' : '?'}digest=${sha256(body!)}`, body: body!, uploads: [location] }
    const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'application/octet-stream' }
    return { method, path: location, ...(body === undefined ? {} : { body }), headers, uploads: [location] }
  }
  switch (operation) {
    case 'base GET':
      return simple('GET', '/v2/')
    case 'base HEAD':
      return simple('HEAD', '/v2/')
    case 'base DELETE':
      return simple('DELETE', '/v2/')
    case 'catalog GET':
      return simple('GET', '/v2/_catalog')
    case 'catalog POST':
      return simple('POST', '/v2/_catalog')
    case 'tags GET':
      return simple('GET', `/v2/${name}/tags/list`)
    case 'tags DELETE':
      return simple('DELETE', `/v2/${name}/tags/list`)
    case 'manifest GET tag':
      return { ...simple('GET', `/v2/${name}/manifests/${TAG}`), headers: { accept: OCI_MANIFEST } }
    case 'manifest HEAD tag':
      return { ...simple('HEAD', `/v2/${name}/manifests/${TAG}`), headers: { accept: OCI_MANIFEST } }
    case 'manifest GET digest':
      return { ...simple('GET', `/v2/${name}/manifests/${entry.m1Digest}`), headers: { accept: OCI_MANIFEST } }
    case 'manifest PUT same':
      return put(TAG, entry.m1)
    case 'manifest PUT move':
      return put(TAG, entry.m2)
    case 'manifest PUT new tag':
      return put(`n${++counter}`, entry.m1)
    case 'manifest PUT digest':
      return put(entry.m2Digest, entry.m2)
    case 'manifest DELETE tag':
      return simple('DELETE', `/v2/${name}/manifests/${TAG}`)
    case 'manifest DELETE digest':
      return simple('DELETE', `/v2/${name}/manifests/${entry.m1Digest}`)
    case 'manifest POST':
      return simple('POST', `/v2/${name}/manifests/${TAG}`)
    case 'blob GET':
      return simple('GET', `/v2/${name}/blobs/${entry.blobDigest}`)
    case 'blob HEAD':
      return simple('HEAD', `/v2/${name}/blobs/${entry.blobDigest}`)
    case 'blob DELETE':
      return simple('DELETE', `/v2/${name}/blobs/${entry.blobDigest}`)
    case 'blob PUT':
      return simple('PUT', `/v2/${name}/blobs/${entry.blobDigest}`)
    case 'upload POST':
      return simple('POST', `/v2/${name}/blobs/uploads/`)
    case 'upload POST mount':
      return simple('POST', `/v2/${name}/blobs/uploads/?mount=${seeded.get(from)!.blobDigest}&from=${from}`)
    case 'upload POST mount without from':
      return simple('POST', `/v2/${name}/blobs/uploads/?mount=${seeded.get(from)!.blobDigest}`)
    case 'upload GET':
      return upload('GET')
    case 'upload PATCH':
      return upload('PATCH', Buffer.from(`chunk for ${name}`))
    case 'upload PUT':
      return upload('PUT', Buffer.from(`upload for ${name}`))
    case 'upload DELETE':
      return upload('DELETE')
    case 'referrers GET':
      return simple('GET', `/v2/${name}/referrers/${entry.m1Digest}`)
    case 'referrers DELETE':
      return simple('DELETE', `/v2/${name}/referrers/${entry.m1Digest}`)
  }
}

/** The success status where it does not depend on the rules beyond the route's need. */
const SUCCESS: Partial<Record<Operation, number>> = {
  'base GET': 200,
  'base HEAD': 200,
  'base DELETE': 405,
  'catalog GET': 200,
  'catalog POST': 405,
  'tags GET': 200,
  'tags DELETE': 405,
  'manifest GET tag': 200,
  'manifest HEAD tag': 200,
  'manifest GET digest': 200,
  'manifest PUT same': 201,
  'manifest PUT new tag': 201,
  'manifest PUT digest': 201,
  'manifest DELETE tag': 202,
  'manifest DELETE digest': 202,
  'manifest POST': 405,
  'blob GET': 200,
  'blob HEAD': 200,
  'blob DELETE': 202,
  'blob PUT': 405,
  'upload POST': 202,
  'upload POST mount without from': 202,
  'upload GET': 204,
  'upload PATCH': 202,
  'upload PUT': 201,
  'upload DELETE': 204,
  'referrers GET': 200,
  'referrers DELETE': 405,
}

/** The scopes a client would ask the realm for, as the challenge of this request names them. */
function realmScopes(operation: Operation, name: string, from: string): string[] {
  const need: Need = OPERATIONS[operation]
  if (need === 'catalog') return ['registry:catalog:*']
  if (typeof need === 'string') return []
  const scopes = [`repository:${name}:${need.join(',')}`]
  if (operation === 'upload POST mount') scopes.push(`repository:${from}:pull`)
  return scopes
}

async function authorization(spec: RulesSpec, q: Query, label: string): Promise<{ header?: string; grants?: Grant[] }> {
  const { caller: who, repository: name, from } = q
  if (who.kind === 'anonymous') return {}
  if (who.kind === 'basic') return { header: basic(who.user) }
  if (who.kind === 'token') {
    const grants = who.grants.map(grant => ({ name: grant.name === '@target' ? name : grant.name === '@from' ? from : grant.name, actions: grant.actions }))
    return {
      header: `Bearer ${
        tokens.issue(
          who.user,
          grants.map(grant => ({ type: 'repository', ...grant })),
        ).token
      }`,
      grants,
    }
  }
  const scopes = realmScopes(q.operation, name, from)
  const query = [`service=${SERVICE}`, ...scopes.map(scope => `scope=${encodeURIComponent(scope)}`)].join('&')
  const answer = await request(edgeUrl, `/token?${query}`, { headers: who.user === undefined ? {} : { authorization: basic(who.user) } })
  if (answer.status !== 200) throw new Error(`${label}: the realm answered ${answer.status} ${answer.body.toString()}`)
  const token = String(answer.json.token)
  const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as { access: { type: string; name: string; actions: string[] }[] }
  // The realm grants, of what was asked (the scopes of one resource taken together), exactly what
  // the rules allow; the catalog to anyone.
  const asked = new Map<string, Set<string>>()
  for (const scope of scopes) {
    const [type, resource, actions] = scope.split(':') as [string, string, string]
    const key = `${type}:${resource}`
    asked.set(key, new Set([...(asked.get(key) ?? []), ...actions.split(',')]))
  }
  const expected = [...asked].flatMap(([key, actions]) => {
    const [type, resource] = key.split(':') as [string, string]
    const granted = [...actions].filter(action => type === 'registry' || rulesAllow(spec, who.user, resource, action as Action))
    return granted.length === 0 ? [] : [`${key}:${granted.sort().join(',')}`]
  })
  const got = claims.access.map(entry => `${entry.type}:${entry.name}:${[...entry.actions].sort().join(',')}`)
  if (JSON.stringify(got.sort()) !== JSON.stringify(expected.sort())) {
    failures.push(`${label}: the realm granted ${JSON.stringify(got)}, the rules allow ${JSON.stringify(expected)}`)
  }
  return { header: `Bearer ${token}`, grants: claims.access.filter(entry => entry.type === 'repository') }
}

/** Puts back what the request may have changed, through the engine. */
async function restore(operation: Operation, name: Repository, sent: Sent, response: HttpResponse): Promise<void> {
  const entry = seeded.get(name)!
  if (operation === 'manifest PUT move' || operation === 'manifest DELETE tag' || operation === 'manifest DELETE digest') {
    await expectEngine(putManifest(engineUrl, name, TAG, entry.m1, OCI_MANIFEST), 201, `restore ${name}`)
  }
  if (operation === 'manifest PUT new tag') await request(engineUrl, sent.path, { method: 'DELETE' })
  if (operation === 'blob DELETE') await pushBlob(engineUrl, name, entry.blob)
  const uploads = [...sent.uploads]
  if (response.status === 202 && sent.method === 'POST' && response.headers.location !== undefined) uploads.push(String(response.headers.location))
  for (const location of uploads) await request(engineUrl, location, { method: 'DELETE' })
}

async function check(spec: RulesSpec, q: Query): Promise<void> {
  const { caller: who, repository: name, operation, from } = q
  const label = `${who.kind} ${userOf(who) ?? 'anonymous'} ${operation} ${name}${operation === 'upload POST mount' ? ` from ${from}` : ''}`
  const { header, grants } = await authorization(spec, q, label)
  const user = userOf(who)
  const rules = (repository: string, action: Action) => rulesAllow(spec, user, repository, action)
  const may = (repository: string, action: Action) => rules(repository, action) && tokenGrants(who, grants, repository, action)
  const hasToken = who.kind === 'token' || who.kind === 'realm'

  const sent = await prepare(operation, name, from)
  const headers = { ...sent.headers, ...(header === undefined ? {} : { authorization: header }) }
  const response = await request(edgeUrl, sent.path, { method: sent.method, headers, ...(sent.body === undefined ? {} : { body: sent.body }) })
  const got = `${response.status} ${errorCode(response) ?? ''} ${response.headers['www-authenticate'] ?? ''}`.trim()
  const fail = (why: string): void => {
    failures.push(`${label}: ${why}; got ${got}`)
  }
  // A HEAD answer has no body, so no error code to read.
  const coded = (code: string) => sent.method === 'HEAD' || errorCode(response) === code
  const realm = `Bearer realm="${edgeUrl}/token",service="${SERVICE}"`
  try {
    const need: Need = OPERATIONS[operation]
    if (need === 'caller') {
      if (user === undefined && !hasToken) {
        if (response.status !== 401 || response.headers['www-authenticate'] !== realm) fail(`expected 401 with ${realm}`)
      } else if (response.status !== SUCCESS[operation]) fail(`expected ${SUCCESS[operation]}`)
      return
    }
    if (need === 'none') {
      if (response.status !== SUCCESS[operation]) fail(`expected ${SUCCESS[operation]}: a method the route does not serve needs nothing`)
      return
    }
    if (need === 'catalog') {
      // A token lists the catalog only when it grants registry:catalog:* (else 401 asking for it);
      // then, like a caller without a token, it sees what the rules let the caller pull.
      const catalogToken = who.kind === 'realm'
      if (hasToken && !catalogToken) {
        if (response.status !== 401 || !String(response.headers['www-authenticate']).includes('scope="registry:catalog:*",error="insufficient_scope"')) {
          fail('expected 401 asking for registry:catalog:*')
        }
        return
      }
      const expected = REPOSITORIES.filter(repository => rules(repository, 'pull')).sort()
      if (response.status !== 200) fail('expected 200')
      else if (JSON.stringify(response.json?.repositories) !== JSON.stringify(expected)) {
        fail(`expected the catalog ${JSON.stringify(expected)}, got ${JSON.stringify(response.json?.repositories)}`)
      }
      return
    }
    const refused = need.filter(action => !may(name, action))
    if (refused.length > 0) {
      const rulesRefuse = user !== undefined && need.some(action => !rules(name, action))
      // A user short of both a rule and a token grant may get either answer (the first action checked decides).
      const tokenShort = need.some(action => rules(name, action) && !tokenGrants(who, grants, name, action))
      const status = response.status
      if (rulesRefuse && status === 403 && coded('DENIED') && response.headers['www-authenticate'] === undefined) return
      if (rulesRefuse && !tokenShort) return fail(`expected 403 DENIED (${refused.join(',')} refused)`)
      const challenge = String(response.headers['www-authenticate'] ?? '')
      const scope = new RegExp(`^${escape(realm)},scope="repository:${escape(name)}:([a-z,]+)"${hasToken ? ',error="insufficient_scope"' : ''}$`).exec(
        challenge,
      )
      const scoped = scope?.[1]?.split(',').sort().join(',') === [...need].sort().join(',')
      if (status !== 401 || !coded('UNAUTHORIZED') || !scoped) fail(`expected 401 with a challenge for repository:${name}:${need.join(',')}`)
      return
    }
    // The edge lets the request through: what the engine answers.
    if (operation === 'manifest PUT move') {
      // The engine's refusal is 403 DENIED for every caller, anonymous included (no challenge).
      const moved = await tagDigest(name, TAG)
      if (may(name, 'overwrite')) {
        if (response.status !== 201 || moved !== seeded.get(name)!.m2Digest) fail('expected 201 and the tag moved')
      } else if (response.status !== 403 || errorCode(response) !== 'DENIED' || moved !== seeded.get(name)!.m1Digest) {
        fail('expected 403 DENIED (push without overwrite) and the tag unchanged')
      }
      return
    }
    if (response.status === 401 || response.status === 403) return fail('expected the request to pass')
    if (operation === 'upload POST mount') {
      const expected = may(from, 'pull') ? 201 : 202
      if (response.status !== expected) fail(`expected ${expected} (pull on ${from}: ${may(from, 'pull')})`)
      return
    }
    if (response.status !== SUCCESS[operation]) return fail(`expected ${SUCCESS[operation]}`)
    if (operation === 'tags GET' && !(response.json?.tags as string[] | undefined)?.includes(TAG)) fail(`expected ${TAG} in the tags`)
  } finally {
    await restore(operation, name, sent, response)
  }
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
}

testProp(
  "every route and method: the edge's and the engine's decisions equal a reference evaluation of random rule files",
  [rulesSpec, fc.array(query, { minLength: 1, maxLength: 12 })],
  async (t, spec, queries) => {
    current = AccessPolicy.parse(render(spec), 'access.yml')
    failures.length = 0
    for (const q of queries) await check(spec, q)
    t.deepEqual(failures, [], render(spec))
  },
  { numRuns: 300 },
)

import test from 'ava'
import { createHmac, generateKeyPairSync, sign } from 'node:crypto'
import { MAX_TOKEN_BYTES } from '../../src/access/jwt.js'
import { TokenKeys } from '../../src/access/token-keys.js'
import { TokenService } from '../../src/access/token-service.js'
import { DriverCertStore } from '../../src/edge/tls/cert-store.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'

const T0 = Date.UTC(2027, 0, 1)
const access = [{ type: 'repository', name: 'alice/app', actions: ['pull', 'push'] }]

async function setup(options: { now?: () => number } = {}) {
  const clock = { now: T0 }
  const now = options.now ?? (() => clock.now)
  const store = new DriverCertStore(new InMemoryDriver(), '/certs', { lockPollMs: 10 })
  const keys = await TokenKeys.open(store, { maintainEveryMs: 0, now })
  const service = new TokenService({ keys, issuer: 'berth', service: 'registry.example', now })
  return { clock, store, keys, service }
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')
const parts = (token: string) => token.split('.') as [string, string, string]
const json = (segment: string) => JSON.parse(Buffer.from(segment, 'base64url').toString()) as Record<string, unknown>

test('a token verifies, with its subject, access and expiry', async t => {
  const { service } = await setup()
  const issued = service.issue('alice', access)
  t.is(issued.token, issued.access_token)
  t.is(issued.expires_in, 300)
  t.is(issued.issued_at, '2027-01-01T00:00:00Z')
  const verdict = await service.verify(issued.token)
  t.true(verdict.ok)
  if (!verdict.ok) return
  t.is(verdict.subject, 'alice')
  t.deepEqual(verdict.access, access)
  t.is(verdict.expiresAt, T0 + 300_000)
})

test('the claims follow distribution: iss, sub, aud, exp, nbf, iat, jti, access; ES256 with a kid', async t => {
  const { service, keys } = await setup()
  const [header, payload] = parts(service.issue('alice', access).token)
  t.deepEqual(json(header), { typ: 'JWT', alg: 'ES256', kid: keys.signingKey().kid })
  const claims = json(payload)
  t.like(claims, { iss: 'berth', sub: 'alice', aud: 'registry.example', iat: T0 / 1000, nbf: T0 / 1000, exp: T0 / 1000 + 300, access })
  t.regex(String(claims.jti), /^[A-Za-z0-9_-]{22}$/)
})

test('anonymous tokens carry sub "" and verify with no subject; empty grants are left out', async t => {
  const { service } = await setup()
  const token = service.issue(undefined, [{ type: 'repository', name: 'x', actions: [] }]).token
  t.is(json(parts(token)[1]).sub, '')
  t.deepEqual(json(parts(token)[1]).access, [])
  const verdict = await service.verify(token)
  t.true(verdict.ok && verdict.subject === undefined)
  t.throws(() => service.issue('', []), { instanceOf: TypeError })
})

test('expired and not-yet-valid tokens are refused, within a 30 s leeway', async t => {
  const { service, clock } = await setup()
  const token = service.issue('alice', access).token
  clock.now = T0 + 329_000
  t.true((await service.verify(token)).ok)
  clock.now = T0 + 330_000
  t.like(await service.verify(token), { ok: false, reason: 'expired' })
  // Uncached: the same check on a fresh verification.
  const other = await setup()
  const late = other.service.issue('alice', access).token
  other.clock.now = T0 + 400_000
  t.like(await other.service.verify(late), { ok: false, reason: 'expired' })
  other.clock.now = T0 - 31_000
  t.like(await other.service.verify(other.service.issue('bob', access).token), { ok: true })
  const early = other.service.issue('bob', access).token
  other.clock.now = T0 - 62_000
  t.like(await other.service.verify(early), { ok: false, reason: 'not-yet-valid' })
})

test('a flipped signature byte is a bad signature', async t => {
  const { service } = await setup()
  const [h, p, s] = parts(service.issue('alice', access).token)
  const signature = Buffer.from(s, 'base64url')
  signature[10]! ^= 1
  t.like(await service.verify(`${h}.${p}.${signature.toString('base64url')}`), { ok: false, reason: 'bad-signature' })
})

test('alg none with an empty signature is malformed', async t => {
  const { service, keys } = await setup()
  const [, p] = parts(service.issue('alice', access).token)
  t.like(await service.verify(`${b64({ typ: 'JWT', alg: 'none', kid: keys.signingKey().kid })}.${p}.`), { ok: false, reason: 'malformed' })
  t.like(await service.verify(`${b64({ typ: 'JWT', alg: 'none' })}.${p}.`), { ok: false, reason: 'malformed' })
})

test('HS256 signed with the public key as the HMAC secret is refused', async t => {
  const { service, keys } = await setup()
  const kid = keys.signingKey().kid
  const [, p] = parts(service.issue('alice', access).token)
  for (const secret of [
    keys.signingKey().publicKey.export({ type: 'spki', format: 'pem' }),
    keys.signingKey().publicKey.export({ type: 'spki', format: 'der' }),
  ]) {
    const input = `${b64({ typ: 'JWT', alg: 'HS256', kid })}.${p}`
    const mac = createHmac('sha256', secret).update(input).digest('base64url')
    t.like(await service.verify(`${input}.${mac}`), { ok: false, reason: 'malformed' })
    // Even if the header claimed ES256, a 32-byte MAC is not a signature.
    const input2 = `${b64({ typ: 'JWT', alg: 'ES256', kid })}.${p}`
    t.like(await service.verify(`${input2}.${createHmac('sha256', secret).update(input2).digest('base64url')}`), { ok: false, reason: 'malformed' })
  }
})

test('a payload or header edited to widen the scope does not verify', async t => {
  const { service } = await setup()
  const [h, p, s] = parts(service.issue('alice', [{ type: 'repository', name: 'alice/app', actions: ['pull'] }]).token)
  const widened = { ...json(p), access: [{ type: 'repository', name: 'alice/app', actions: ['pull', 'push', 'delete'] }] }
  t.like(await service.verify(`${h}.${b64(widened)}.${s}`), { ok: false, reason: 'bad-signature' })
  const otherRepo = { ...json(p), access: [{ type: 'repository', name: 'bob/app', actions: ['pull'] }] }
  t.like(await service.verify(`${h}.${b64(otherRepo)}.${s}`), { ok: false, reason: 'bad-signature' })
  // The same header re-encoded with whitespace: other bytes, so another signing input.
  const spaced = Buffer.from(JSON.stringify(json(h), null, 1)).toString('base64url')
  t.like(await service.verify(`${spaced}.${p}.${s}`), { ok: false, reason: 'bad-signature' })
  // Padding or non-canonical base64url of the same bytes.
  t.like(await service.verify(`${h}.${p}=.${s}`), { ok: false, reason: 'malformed' })
  t.like(await service.verify(`${h}.${p}.${s}==`), { ok: false, reason: 'malformed' })
})

/** Signs claims with the service's own key: only the claim checks stand between them and acceptance. */
function forge(keys: TokenKeys, claims: Record<string, unknown>, header: Record<string, unknown> = {}): string {
  const key = keys.signingKey()
  const input = `${b64({ typ: 'JWT', alg: 'ES256', kid: key.kid, ...header })}.${b64(claims)}`
  return `${input}.${sign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`
}

test('a token for another audience or from another issuer is refused, even well signed', async t => {
  const { service, keys } = await setup()
  const claims = json(parts(service.issue('alice', access).token)[1])
  t.true((await service.verify(forge(keys, claims))).ok)
  t.like(await service.verify(forge(keys, { ...claims, aud: 'other.example' })), { ok: false, reason: 'wrong-audience' })
  t.like(await service.verify(forge(keys, { ...claims, aud: ['registry.example'] })), { ok: false, reason: 'wrong-audience' })
  t.like(await service.verify(forge(keys, { ...claims, iss: 'someone' })), { ok: false, reason: 'wrong-issuer' })
  t.like(await service.verify(forge(keys, { ...claims, exp: String(claims.exp) })), { ok: false, reason: 'bad-claims' })
  t.like(await service.verify(forge(keys, { ...claims, exp: undefined })), { ok: false, reason: 'bad-claims' })
  t.like(await service.verify(forge(keys, { ...claims, access: [{ type: 'repository', name: 'x', actions: 'pull' }] })), { ok: false, reason: 'bad-claims' })
  t.like(await service.verify(forge(keys, { ...claims, access: {} })), { ok: false, reason: 'bad-claims' })
  t.like(await service.verify(forge(keys, claims, { crit: ['exp'] })), { ok: false, reason: 'malformed' })
  t.like(await service.verify(forge(keys, claims, { typ: 'at+jwt' })), { ok: false, reason: 'malformed' })
})

test('a token signed by a key that is not ours is refused as an unknown key', async t => {
  const { service, keys } = await setup()
  const claims = json(parts(service.issue('alice', access).token)[1])
  const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const input = `${b64({ typ: 'JWT', alg: 'ES256', kid: 'A'.repeat(43) })}.${b64(claims)}`
  const token = `${input}.${sign('sha256', Buffer.from(input), { key: stranger.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`
  t.like(await service.verify(token), { ok: false, reason: 'unknown-key' })
  // The stranger's key under our kid: a bad signature.
  const ours = `${b64({ typ: 'JWT', alg: 'ES256', kid: keys.signingKey().kid })}.${b64(claims)}`
  const mixed = `${ours}.${sign('sha256', Buffer.from(ours), { key: stranger.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`
  t.like(await service.verify(mixed), { ok: false, reason: 'bad-signature' })
})

test('garbage is refused as malformed, never thrown', async t => {
  const { service } = await setup()
  for (const garbage of [
    '',
    '.',
    '..',
    'a.b.c',
    'a.b',
    'a.b.c.d',
    '!!!.???.###',
    `${b64([1, 2])}.${b64({})}.${'A'.repeat(86)}`,
    `${b64('x')}.${b64({})}.${'A'.repeat(86)}`,
    `${Buffer.from('{"alg":"ES256",').toString('base64url')}.${b64({})}.${'A'.repeat(86)}`,
    `${Buffer.from([0xff, 0xfe]).toString('base64url')}.${b64({})}.${'A'.repeat(86)}`,
    'x'.repeat(MAX_TOKEN_BYTES + 1),
    `${b64({ alg: 'ES256', kid: '../../etc/passwd' })}.${b64({})}.${'A'.repeat(86)}`,
    `${b64({ alg: 'ES256', kid: 7 })}.${b64({})}.${'A'.repeat(86)}`,
    `${b64({ alg: 'ES256', kid: 'abc', alg2: 1 })}.${b64({})}.${'A'.repeat(86)}`,
  ]) {
    t.like(await service.verify(garbage), { ok: false, reason: 'malformed' }, garbage.slice(0, 80))
  }
})

test('a verified token is served from the cache until it expires; the cache is bounded', async t => {
  const clock = { now: T0 }
  const store = new DriverCertStore(new InMemoryDriver(), '/certs')
  const keys = await TokenKeys.open(store, { maintainEveryMs: 0, now: () => clock.now })
  let lookups = 0
  const counting = { signingKey: () => keys.signingKey(), publicKey: (kid: string) => (lookups++, keys.publicKey(kid)) }
  const service = new TokenService({ keys: counting, issuer: 'berth', service: 'registry.example', cacheSize: 2, now: () => clock.now })
  const [a, b, c] = ['a', 'b', 'c'].map(user => service.issue(user, access).token) as [string, string, string]
  const first = await service.verify(a)
  t.is(await service.verify(a), first)
  t.is(lookups, 1)
  await service.verify(b)
  await service.verify(c)
  t.is(lookups, 3)
  await service.verify(a)
  t.is(lookups, 4, 'a was evicted by b and c')
  clock.now = T0 + 331_000
  t.like(await service.verify(a), { ok: false, reason: 'expired' })
})

test('the lifetime must be at least 60 s', async t => {
  const { keys } = await setup()
  t.throws(() => new TokenService({ keys, issuer: 'i', service: 's', ttlSeconds: 30 }), { instanceOf: RangeError })
})

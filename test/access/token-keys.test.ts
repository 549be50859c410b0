import test from 'ava'
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { TokenKeys } from '../../src/access/token-keys.js'
import { TokenService } from '../../src/access/token-service.js'
import { FileCertStore } from '../../src/edge/tls/cert-store.js'

const DAY = 24 * 60 * 60 * 1000
const T0 = Date.UTC(2027, 0, 1)
const access = [{ type: 'repository', name: 'app', actions: ['pull'] }]

async function folder(t: { teardown: (fn: () => Promise<void>) => void }): Promise<FileCertStore> {
  const root = await mkdtemp(join(tmpdir(), 'berth-token-keys-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const store = new FileCertStore(root, { lockPollMs: 10 })
  await store.init()
  return store
}

test('the first open makes one key, stored 0600 under token/keys/<kid>.json', async t => {
  const store = await folder(t)
  const keys = await TokenKeys.open(store, { maintainEveryMs: 0 })
  const kid = keys.signingKey().kid
  t.regex(kid, /^[A-Za-z0-9_-]{43}$/)
  t.deepEqual(await readdir(join(store.root, 'token/keys')), [`${kid}.json`])
  t.is((await stat(join(store.root, `token/keys/${kid}.json`))).mode & 0o777, 0o600)
  t.is((await stat(join(store.root, 'token/keys'))).mode & 0o777, 0o700)
  const stored = JSON.parse((await store.load(`token/keys/${kid}.json`)).toString()) as Record<string, string>
  t.is(stored.kid, kid)
  t.regex(stored.privateKeyPem!, /^-----BEGIN PRIVATE KEY-----/)
  // A second open loads it rather than making another.
  const again = await TokenKeys.open(store, { maintainEveryMs: 0 })
  t.is(again.signingKey().kid, kid)
})

test('two instances opening an empty store at once make one key', async t => {
  const store = await folder(t)
  const other = new FileCertStore(store.root, { lockPollMs: 10 })
  const [a, b] = await Promise.all([TokenKeys.open(store, { maintainEveryMs: 0 }), TokenKeys.open(other, { maintainEveryMs: 0 })])
  t.is(a.signingKey().kid, b.signingKey().kid)
  t.is((await readdir(join(store.root, 'token/keys'))).length, 1)
})

test('a key made by another instance is accepted after one reload; unknown kids reload at most once per interval', async t => {
  const store = await folder(t)
  const clock = { now: T0 }
  const now = () => clock.now
  const first = await TokenKeys.open(store, { maintainEveryMs: 0, now })
  const second = await TokenKeys.open(new FileCertStore(store.root, { lockPollMs: 10 }), { maintainEveryMs: 0, now })
  const verifier = new TokenService({ keys: first, issuer: 'berth', service: 's', now })
  clock.now += 31 * DAY
  await second.maintain()
  t.not(second.signingKey().kid, first.signingKey().kid)
  const token = new TokenService({ keys: second, issuer: 'berth', service: 's', now }).issue('alice', access).token
  t.like(await verifier.verify(token), { ok: true, subject: 'alice' })
  t.deepEqual(first.kids(), second.kids())

  // Made-up kids: one reload, then none until the interval has passed.
  clock.now += 10_000
  t.is(await first.publicKey('B'.repeat(43)), undefined)
  const third = await TokenKeys.open(new FileCertStore(store.root, { lockPollMs: 10 }), { maintainEveryMs: 0, now })
  await third.rotate()
  const kid = third.signingKey().kid
  t.is(await first.publicKey(kid), undefined, 'within 5 s of the last reload')
  clock.now += 5_000
  t.truthy(await first.publicKey(kid))
})

test('a token signed before a rotation stays valid after it, until its own expiry; retired keys are deleted later', async t => {
  const store = await folder(t)
  const clock = { now: T0 }
  const now = () => clock.now
  const keys = await TokenKeys.open(store, { maintainEveryMs: 0, now, retainMs: DAY })
  const service = new TokenService({ keys, issuer: 'berth', service: 's', now, cacheSize: 0 })
  const before = keys.signingKey().kid
  clock.now += 30 * DAY - 60_000
  const old = service.issue('alice', access).token
  clock.now += 60_000
  await keys.maintain()
  const after = keys.signingKey().kid
  t.not(after, before)
  t.like(await service.verify(old), { ok: true, subject: 'alice' })
  t.like(await service.verify(service.issue('bob', access).token), { ok: true, subject: 'bob' })
  t.is(JSON.parse(Buffer.from(service.issue('bob', access).token.split('.')[0]!, 'base64url').toString()).kid, after)
  // Retired one day after its successor appeared, not before.
  clock.now += DAY
  await keys.maintain()
  t.deepEqual(keys.kids(), [after, before])
  clock.now += 1
  await keys.maintain()
  t.deepEqual(keys.kids(), [after])
  t.deepEqual(await readdir(join(store.root, 'token/keys')), [`${after}.json`])
})

test('rotate makes a new signing key at once; the previous one keeps verifying', async t => {
  const store = await folder(t)
  const keys = await TokenKeys.open(store, { maintainEveryMs: 0 })
  const service = new TokenService({ keys, issuer: 'berth', service: 's' })
  const token = service.issue('alice', access).token
  const before = keys.signingKey().kid
  await keys.rotate()
  t.not(keys.signingKey().kid, before)
  t.like(await service.verify(token), { ok: true })
})

test('an unreadable or mismatched key file is skipped with an error, and a usable key is made', async t => {
  const store = await folder(t)
  await store.store('token/keys/AAAA.json', '{"kid":"AAAA","createdAt":"2027-01-01T00:00:00Z","privateKeyPem":"nope"}')
  const errors: string[] = []
  const logger = { debug() {}, info() {}, warn() {}, error: (message: string) => void errors.push(message) }
  const keys = await TokenKeys.open(store, { maintainEveryMs: 0, logger })
  t.not(keys.signingKey().kid, 'AAAA')
  t.deepEqual(errors, ['token signing key unreadable; ignored'])
  t.is(await keys.publicKey('AAAA'), undefined)
})

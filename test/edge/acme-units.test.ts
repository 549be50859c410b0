/**
 * The ACME parts that need no CA: renewal timing (injected clock), retry schedule, ARI (RFC 9773)
 * identifiers and parsing (pebble 2.4 has no ARI), option checks, and the certificate store's
 * atomic writes, permissions and lock.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, stat, writeFile, readdir, utimes } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import fc from 'fast-check'
import { renewalDecision, retryDelay, selectInWindow, jittered, DEFAULT_RETRY_DELAYS_MS } from '../../src/edge/tls/renewal.js'
import { ariCertId, ariCertIdFrom, parseRenewalInfo, parseRetryAfter, renewalInfoUrl, AriError } from '../../src/edge/tls/acme-ari.js'
import { assertAcmeOptions, AcmeError, resolveAcmeDirectory } from '../../src/edge/tls/acme-options.js'
import { FileCertStore, CertStoreNotFoundError, issuerKey, certKeys, type CertStore } from '../../src/edge/tls/cert-store.js'
import { SharedChallengeLookup } from '../../src/edge/tls/acme-challenges.js'
import { AcmeCertificateProvider } from '../../src/edge/tls/acme-provider.js'
import { withDeadline } from '../helpers/procs.js'

const run = promisify(execFile)
const DAY = 86_400_000

const tempDirs: string[] = []
test.after.always(async () => {
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true })
})
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-acme-unit-'))
  tempDirs.push(dir)
  return dir
}

// --- renewal timing -------------------------------------------------------------------------------

const issued = Date.parse('2027-01-01T00:00:00Z')
const ninetyDays = { notBefore: new Date(issued), notAfter: new Date(issued + 90 * DAY - 1000) }

test('renews when a third of the lifetime remains (90 days → 30 days before expiry)', t => {
  t.false(renewalDecision(ninetyDays, issued + 59 * DAY).due)
  const at60 = renewalDecision(ninetyDays, issued + 60 * DAY + 1000)
  t.true(at60.due)
  t.is(at60.reason, 'lifetime')
  t.is(at60.at.toISOString(), new Date(issued + 60 * DAY).toISOString())
  const fortyFive = { notBefore: new Date(issued), notAfter: new Date(issued + 45 * DAY - 1000) }
  t.is(renewalDecision(fortyFive, issued).at.toISOString(), new Date(issued + 30 * DAY).toISOString(), '45-day certificates renew 15 days ahead')
  t.is(renewalDecision(ninetyDays, issued + 91 * DAY).reason, 'expired')
})

test('ARI: renews at the selected time (one check interval early), but never later than the emergency point', t => {
  const ari = (selectedAt: number) => ({ windowStart: '', windowEnd: '', selectedAt: new Date(selectedAt).toISOString(), nextFetchAt: '' })
  const early = issued + 10 * DAY // e.g. a CA asking for renewal ahead of a revocation
  const decision = renewalDecision(ninetyDays, issued + 10 * DAY - 5 * 60_000, { ari: ari(early), checkIntervalMs: 10 * 60_000 })
  t.true(decision.due)
  t.is(decision.reason, 'ari')
  t.false(renewalDecision(ninetyDays, issued + 9 * DAY, { ari: ari(early) }).due)
  // ARI pointing past the emergency window (1/20 of the lifetime left) is overridden.
  const late = renewalDecision(ninetyDays, issued + 86 * DAY, { ari: ari(issued + 89 * DAY) })
  t.true(late.due)
  t.is(late.reason, 'emergency')
})

test('retry delays grow, cap at the last step, and respect Retry-After', t => {
  t.is(retryDelay(1), 60_000)
  t.is(retryDelay(2), 120_000)
  t.is(retryDelay(5), 600_000)
  t.is(retryDelay(1000), 6 * 3_600_000)
  t.is(retryDelay(1, DEFAULT_RETRY_DELAYS_MS, 3_600_000), 3_600_000, "a rate limit's Retry-After wins over a short step")
  fc.assert(fc.property(fc.integer({ min: 1, max: 200 }), n => retryDelay(n + 1) >= retryDelay(n)))
})

test('jitter stays within ±10 % and window selection stays inside the window', t => {
  fc.assert(
    fc.property(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), r => {
      const value = jittered(600_000, 0.1, () => r)
      return value >= 540_000 && value <= 660_000
    }),
  )
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 1e9 }), fc.integer({ min: 0, max: 1e9 }), fc.double({ min: 0, max: 1, noNaN: true }), (start, length, r) => {
      const now = 5e8
      const selected = selectInWindow(start, start + length, now, () => r)
      return start + length <= now ? selected === now : selected >= Math.max(start, now) && selected <= start + length
    }),
  )
  t.pass()
})

// --- ARI ------------------------------------------------------------------------------------------

test('ARI certID encodes the AKI and serial as RFC 9773 §4.1 shows', t => {
  const aki = Buffer.from('69885B6B87464041E1B37B847BA0AE2CDE01C8D4', 'hex')
  const serial = Buffer.from('0087654321', 'hex')
  t.is(ariCertIdFrom(aki, serial), 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE')
})

test('ARI certID is read from a real certificate (openssl-made, serial with the high bit set)', async t => {
  const dir = await tempDir()
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    join(dir, 'k.pem'),
    '-out',
    join(dir, 'c.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=x',
    '-set_serial',
    '0x87654321',
  ])
  const text = (await run('openssl', ['x509', '-in', join(dir, 'c.pem'), '-noout', '-text'])).stdout
  const akiHex = /Authority Key Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)/.exec(text)?.[1]?.replace(/:/g, '')
  t.truthy(akiHex)
  const pem = await readFile(join(dir, 'c.pem'), 'utf8')
  t.is(ariCertId(pem), `${Buffer.from(akiHex!, 'hex').toString('base64url')}.AIdlQyE`)
})

test('ARI certID refuses a certificate without an authority key identifier', async t => {
  const dir = await tempDir()
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    join(dir, 'k.pem'),
    '-out',
    join(dir, 'c.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=x',
    '-addext',
    'authorityKeyIdentifier=none',
    '-addext',
    'subjectKeyIdentifier=none',
  ])
  const pem = await readFile(join(dir, 'c.pem'), 'utf8')
  t.throws(() => ariCertId(pem), { instanceOf: AriError })
})

test('renewalInfo responses are parsed, Retry-After honoured and clamped, junk refused', t => {
  const now = Date.parse('2027-03-01T00:00:00Z')
  const info = parseRenewalInfo(
    { suggestedWindow: { start: '2027-03-10T00:00:00Z', end: '2027-03-12T00:00:00Z' }, explanationURL: 'https://ca.example/why' },
    '21600',
    now,
  )
  t.is(info.windowStart.toISOString(), '2027-03-10T00:00:00.000Z')
  t.is(info.windowEnd.toISOString(), '2027-03-12T00:00:00.000Z')
  t.is(info.explanationUrl, 'https://ca.example/why')
  t.is(info.retryAfterMs, 21_600_000)
  t.is(parseRenewalInfo({ suggestedWindow: { start: '2027-03-10T00:00:00Z', end: '2027-03-12T00:00:00Z' } }, undefined, now).retryAfterMs, 6 * 3_600_000)
  t.is(parseRenewalInfo({ suggestedWindow: { start: '2027-03-10T00:00:00Z', end: '2027-03-12T00:00:00Z' } }, '1', now).retryAfterMs, 60_000)
  t.is(parseRetryAfter('Mon, 01 Mar 2027 01:00:00 GMT', now), 3_600_000)
  t.throws(() => parseRenewalInfo({}, null, now), { instanceOf: AriError })
  t.throws(() => parseRenewalInfo({ suggestedWindow: { start: '2027-03-12T00:00:00Z', end: '2027-03-10T00:00:00Z' } }, null, now), { instanceOf: AriError })
  t.throws(() => parseRenewalInfo({ suggestedWindow: { start: 'soon', end: 'later' } }, null, now), { instanceOf: AriError })
  t.is(renewalInfoUrl('https://ca.example/renewal-info/', 'abc.def'), 'https://ca.example/renewal-info/abc.def')
})

// --- options --------------------------------------------------------------------------------------

test('without --acme-agree-tos Berth refuses with one line naming the flag and the CA', t => {
  const error = t.throws(() => assertAcmeOptions({ domains: ['registry.example.com'] }), { instanceOf: AcmeError })
  t.is(error?.code, 'TOS_NOT_AGREED')
  t.regex(error?.message ?? '', /^--acme needs --acme-agree-tos: .*https:\/\/acme-v02\.api\.letsencrypt\.org\/directory/)
  t.false(error?.message.includes('\n'))
  t.throws(() => new AcmeCertificateProvider({ domains: ['registry.example.com'], agreeTos: false }), { instanceOf: AcmeError })
})

test('options: presets, custom directories, domains, email and EAB are checked', t => {
  t.is(resolveAcmeDirectory(undefined), 'https://acme-v02.api.letsencrypt.org/directory')
  t.is(resolveAcmeDirectory('letsencrypt-staging'), 'https://acme-staging-v02.api.letsencrypt.org/directory')
  t.is(resolveAcmeDirectory('https://ca.internal:14000/dir'), 'https://ca.internal:14000/dir')
  t.throws(() => resolveAcmeDirectory('http://ca.internal/dir'), { message: /https:\/\// })
  t.throws(() => resolveAcmeDirectory('lets-encrypt'), { message: /letsencrypt, letsencrypt-staging, zerossl or an https:\/\// })
  const ok = assertAcmeOptions({
    domains: ['Registry.Example.com', 'registry.example.com.', 'r2.example.com'],
    agreeTos: true,
    email: 'me@example.com',
    eabKid: 'kid',
    eabHmac: 'c2VjcmV0',
  })
  t.deepEqual(ok.domains, ['registry.example.com', 'r2.example.com'], 'several names share one certificate; case and duplicates folded')
  t.deepEqual(ok.eab, { kid: 'kid', hmacKey: 'c2VjcmV0' })
  t.throws(() => assertAcmeOptions({ domains: ['*.example.com'], agreeTos: true }), { message: /wildcard.*DNS-01/ })
  t.throws(() => assertAcmeOptions({ domains: ['203.0.113.7'], agreeTos: true }), { message: /IP address/ })
  t.throws(() => assertAcmeOptions({ domains: ['bad_name.example.com'], agreeTos: true }), { message: /not a valid DNS name/ })
  t.throws(() => assertAcmeOptions({ domains: [], agreeTos: true }), { message: /at least one --domain/ })
  t.throws(() => assertAcmeOptions({ domains: ['a.example.com'], agreeTos: true, email: 'nope' }), { message: /not an email address/ })
  t.throws(() => assertAcmeOptions({ domains: ['a.example.com'], agreeTos: true, eabKid: 'kid' }), { message: /go together/ })
})

test("the CA's host and path are in the layout, so staging never overwrites production", t => {
  const production = issuerKey(resolveAcmeDirectory('letsencrypt'))
  const staging = issuerKey(resolveAcmeDirectory('letsencrypt-staging'))
  t.is(production, 'acme-v02.api.letsencrypt.org-directory')
  t.is(staging, 'acme-staging-v02.api.letsencrypt.org-directory')
  t.not(certKeys.siteCert(production, 'registry.example.com'), certKeys.siteCert(staging, 'registry.example.com'))
  t.is(
    certKeys.siteCert(production, 'registry.example.com'),
    'certificates/acme-v02.api.letsencrypt.org-directory/registry.example.com/registry.example.com.crt',
  )
})

// --- certificate store ----------------------------------------------------------------------------

test('store: atomic 0600 files in 0700 folders, no temp files left, traversal refused', async t => {
  const root = join(await tempDir(), 'certs')
  const store = new FileCertStore(root)
  await store.init()
  await store.store('acme/ca/account.key', 'secret')
  await store.store('acme/ca/account.key', 'secret-2')
  t.is((await store.load('acme/ca/account.key')).toString(), 'secret-2')
  t.is((await stat(join(root, 'acme/ca/account.key'))).mode & 0o777, 0o600)
  t.is((await stat(join(root, 'acme/ca'))).mode & 0o777, 0o700)
  t.is((await stat(root)).mode & 0o777, 0o700)
  t.deepEqual(await readdir(join(root, 'acme/ca')), ['account.key'])
  t.deepEqual(await store.list('acme/ca'), ['acme/ca/account.key'])
  await t.throwsAsync(store.load('acme/ca/missing'), { instanceOf: CertStoreNotFoundError })
  await t.throwsAsync(store.load('../etc/passwd'), { instanceOf: TypeError })
  await t.throwsAsync(store.store('acme/../../x', 'x'), { instanceOf: TypeError })
  await store.delete('acme')
  t.false(await store.exists('acme/ca/account.key'))
})

test('store: an unwritable certs folder is reported at start', async t => {
  const file = join(await tempDir(), 'not-a-folder')
  await writeFile(file, 'x')
  await t.throwsAsync(new FileCertStore(join(file, 'certs')).init(), { message: /not writable|ENOTDIR|EEXIST/ })
})

test('lock: one holder at a time, across store instances (as across processes)', async t => {
  const root = join(await tempDir(), 'certs')
  const a = new FileCertStore(root, { lockPollMs: 20 })
  const b = new FileCertStore(root, { lockPollMs: 20 })
  const events: string[] = []
  const unlockA = await a.lock('issue_cert_x')
  const waiting = b.lock('issue_cert_x').then(unlock => {
    events.push('b acquired')
    return unlock
  })
  await new Promise(r => setTimeout(r, 150))
  t.deepEqual(events, [], 'b waits while a holds the lock')
  events.push('a releases')
  await unlockA()
  const unlockB = await waiting
  t.deepEqual(events, ['a releases', 'b acquired'])
  await unlockB()
  // Aborting a waiter rejects with the signal's reason.
  const unlockAgain = await a.lock('issue_cert_x')
  const controller = new AbortController()
  const aborted = b.lock('issue_cert_x', controller.signal)
  controller.abort(new Error('stopping'))
  await t.throwsAsync(aborted, { message: 'stopping' })
  await unlockAgain()
})

test('lock: a lock left by a crashed process is taken over once stale; a live one is kept fresh by its heartbeat', async t => {
  const root = join(await tempDir(), 'certs')
  // Stale means "not updated for lockStaleMs": a lock last updated 10 minutes ago is stale already, so it
  // is taken over on the first look instead of after watching it for another lockStaleMs (60 s here).
  const store = new FileCertStore(root, { lockPollMs: 20, lockStaleMs: 60_000, lockHeartbeatMs: 50 })
  await store.init()
  const lockPath = join(root, 'locks', 'issue_cert_y.lock')
  await store.store(
    'locks/issue_cert_y.lock',
    JSON.stringify({ pid: 999999, host: 'gone', nonce: 'dead', created: Date.now() - 600_000, updated: Date.now() - 600_000 }),
  )
  const unlock = await withDeadline(store.lock('issue_cert_y'), 20_000, 'a stale lock was not taken over at once (it waited for lockStaleMs)')
  // While held, the heartbeat keeps it fresh, so another waiter does not steal it.
  const staleMs = 2_000
  const other = new FileCertStore(root, { lockPollMs: 20, lockStaleMs: staleMs })
  let stolen = false
  const waiting = other.lock('issue_cert_y').then(u => {
    stolen = true
    return u
  })
  // Well past the point where a lock without a heartbeat would be stale to `other`.
  await new Promise(r => setTimeout(r, staleMs * 1.5))
  t.false(stolen, 'a live lock is not taken over')
  const held = JSON.parse(await readFile(lockPath, 'utf8')) as { updated: number; created: number }
  t.true(held.updated > held.created, 'the heartbeat updated the lock')
  await unlock()
  await (
    await waiting
  )()
  // An unreadable lock file is judged by its mtime.
  await writeFile(lockPath, '{half')
  const old = new Date(Date.now() - 60_000)
  await utimes(lockPath, old, old)
  await (
    await store.lock('issue_cert_y')
  )()
  t.pass()
})

test('shared challenge lookup: answers from the store, at most maxInFlight at once and perSecond on average', async t => {
  let now = 1_000_000
  const loads: string[] = []
  const gates: Array<() => void> = []
  const lookup = new SharedChallengeLookup({
    load: async token => {
      loads.push(token)
      await new Promise<void>(resolve => gates.push(resolve))
      return token === 'known' ? { name: 'registry.example.com', keyAuthorization: 'known.thumb' } : undefined
    },
    mayOrder: () => true,
    maxInFlight: 2,
    perSecond: 3,
    now: () => now,
  })
  const first = lookup.keyAuthorization('known')
  const second = lookup.keyAuthorization('other')
  t.is(await lookup.keyAuthorization('third'), undefined, 'a third at once is refused without a read')
  t.deepEqual(loads, ['known', 'other'])
  for (const open of gates.splice(0)) open()
  t.is(await first, 'known.thumb')
  t.is(await second, undefined)

  // The budget (3 a second) was spent on two reads; one more now, then none until time passes.
  const third = lookup.keyAuthorization('known')
  t.is(await lookup.keyAuthorization('known'), undefined, 'over the per-second budget: refused without a read')
  gates.splice(0).forEach(open => open())
  t.is(await third, 'known.thumb')
  t.is(loads.length, 3)
  now += 1000
  const later = lookup.keyAuthorization('known')
  gates.splice(0).forEach(open => open())
  t.is(await later, 'known.thumb', 'the budget refills with time')
})

test('shared challenge lookup: no read while no order can be running, and a failing store is a miss', async t => {
  let reads = 0
  let ordering = false
  const lookup = new SharedChallengeLookup({
    load: async () => {
      reads++
      throw new Error('store down')
    },
    mayOrder: () => ordering,
  })
  t.is(await lookup.keyAuthorization('token'), undefined)
  t.is(reads, 0, 'a certificate far from renewal: port 80 never reads the store for a stranger')
  ordering = true
  t.is(await lookup.keyAuthorization('token'), undefined)
  t.is(reads, 1)
})

test('with a shared store, port 80 answers a token another instance stored; with the file store, only its own', async t => {
  const directory = 'https://acme.example.test/directory'
  const stored = new Map<string, string>()
  const shared: CertStore = {
    load: async key => {
      const value = stored.get(key)
      if (value === undefined) throw new CertStoreNotFoundError(key)
      return Buffer.from(value)
    },
    store: async (key, value) => void stored.set(key, String(value)),
    delete: async key => void stored.delete(key),
    exists: async key => stored.has(key),
    list: async () => [],
    lock: async () => async () => {},
  }
  const options = { domains: ['registry.example.com'], agreeTos: true, directory }
  const token = 'tok_en-A1'
  stored.set(certKeys.challenge(issuerKey(directory), token), JSON.stringify({ token, name: 'registry.example.com', keyAuthorization: `${token}.thumb` }))

  const provider = new AcmeCertificateProvider({ ...options, store: shared })
  t.is(await provider.challenges.keyAuthorization(token), `${token}.thumb`, 'no certificate yet: the store is asked')
  t.is(await provider.challenges.keyAuthorization('unknown'), undefined)

  const dir = await tempDir()
  const alone = new AcmeCertificateProvider({ ...options, certsDir: dir })
  t.is(await alone.challenges.keyAuthorization(token), undefined, 'one instance: nothing is looked up')
})

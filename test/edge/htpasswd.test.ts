import test from 'ava'
import type { ExecutionContext } from 'ava'
import { execFileSync } from 'node:child_process'
import bcrypt from 'bcryptjs'
import { BcryptPool } from '../../src/edge/auth/bcrypt-pool.js'
import { CredentialVerifier, formatHtpasswdLine, hashPassword, HtpasswdError, parseHtpasswd } from '../../src/edge/auth/htpasswd.js'
import { parseBasicAuthorization, throttleKey } from '../../src/edge/auth/basic-auth.js'
import { LoginThrottle } from '../../src/edge/auth/throttle.js'

test('a file written by Apache htpasswd -B ($2y$) is accepted and verifies', async t => {
  const line = execFileSync('htpasswd', ['-nbB', 'alice', 'wonderland'], { encoding: 'utf8' }).trim()
  t.regex(line, /^alice:\$2y\$05\$/)
  const users = parseHtpasswd(`# comment\n\n${line}\r\nbob:${hashPassword('builder', 4)}\n`)
  t.deepEqual([...users.keys()], ['alice', 'bob'])
  const verifier = await CredentialVerifier.create(users)
  t.true(await verifier.verify('alice', 'wonderland'))
  t.false(await verifier.verify('alice', 'wrong'))
  t.true(await verifier.verify('bob', 'builder'))
  t.false(await verifier.verify('mallory', 'wonderland'))
})

test('$2a$ and $2b$ hashes are accepted too', async t => {
  const b = hashPassword('pw', 4)
  t.regex(b, /^\$2b\$04\$/)
  const a = b.replace(/^\$2b\$/, '$2a$')
  const verifier = await CredentialVerifier.create(parseHtpasswd(`x:${a}\ny:${b}\n`))
  t.true(await verifier.verify('x', 'pw'))
  t.true(await verifier.verify('y', 'pw'))
})

for (const [flag, kind] of [
  ['-m', /MD5 \(\$apr1\$\)/],
  ['-s', /SHA-1 \(\{SHA\}\)/],
  ['-5', /SHA-512-crypt/],
  ['-2', /SHA-256-crypt/],
  ['-p', /plain-text/],
] as const) {
  test(`a line written by htpasswd ${flag} is refused with its line number`, t => {
    const line = execFileSync('htpasswd', ['-nb', flag, 'carol', 'secret'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    const text = `alice:${hashPassword('a', 4)}\n${line}\n`
    const error = t.throws(() => parseHtpasswd(text, '/data/htpasswd'), { instanceOf: HtpasswdError })
    t.is(error?.line, 2)
    t.regex(error?.message ?? '', /^\/data\/htpasswd line 2: user "carol" has /)
    t.regex(error?.message ?? '', kind)
    t.notRegex(error?.message ?? '', /secret/)
  })
}

test('malformed lines and duplicate users are refused', t => {
  t.is(t.throws(() => parseHtpasswd('just-a-name\n'), { instanceOf: HtpasswdError })?.line, 1)
  const hash = hashPassword('x', 4)
  t.is(t.throws(() => parseHtpasswd(`a:${hash}\n\na:${hash}\n`), { instanceOf: HtpasswdError })?.line, 3)
})

test('hashPassword defaults to cost 10 and refuses what bcrypt cannot store', t => {
  t.is(bcrypt.getRounds(hashPassword('pw')), 10)
  t.throws(() => hashPassword(''), { instanceOf: RangeError })
  t.throws(() => hashPassword('x'.repeat(73)), { instanceOf: RangeError, message: /72 bytes/ })
  t.throws(() => hashPassword('pw', 3), { instanceOf: RangeError })
})

test('formatHtpasswdLine writes a line Apache htpasswd -v accepts', t => {
  const line = formatHtpasswdLine('dave', 'p4ss word', 5)
  t.regex(line, /^dave:\$2b\$05\$/)
  t.throws(() => formatHtpasswdLine('a:b', 'pw'), { instanceOf: RangeError })
  t.throws(() => formatHtpasswdLine('', 'pw'), { instanceOf: RangeError })
  const dir = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim()
  execFileSync('sh', ['-c', `printf '%s\\n' "$1" > "$2/h"`, 'sh', line, dir])
  // htpasswd -v exits 0 when the password matches (it reads $2b$ through the system crypt/apr-util).
  t.notThrows(() => execFileSync('htpasswd', ['-vb', `${dir}/h`, 'dave', 'p4ss word'], { stdio: 'pipe' }))
  t.throws(() => execFileSync('htpasswd', ['-vb', `${dir}/h`, 'dave', 'wrong'], { stdio: 'pipe' }))
  execFileSync('rm', ['-rf', dir])
})

/** A pool that records the hash of every compare and the cost of every hash it is asked for. */
class RecordingPool extends BcryptPool {
  readonly compares: string[] = []
  readonly hashedCosts: number[] = []
  override compare(key: string, password: string, hash: string) {
    this.compares.push(hash)
    return super.compare(key, password, hash)
  }
  override hash(key: string, password: string, cost: number) {
    this.hashedCosts.push(cost)
    return super.hash(key, password, cost)
  }
}

function recordingPool(t: ExecutionContext): RecordingPool {
  const pool = new RecordingPool({ size: 1 })
  t.teardown(() => pool.close())
  return pool
}

test('verified credentials are cached: the second check does not run bcrypt', async t => {
  const pool = recordingPool(t)
  const verifier = await CredentialVerifier.create(parseHtpasswd(`u:${hashPassword('pw', 10)}\n`), { pool })
  pool.compares.splice(0) // the one that timed the dummy hash
  t.is(verifier.cached('u', 'pw'), undefined)
  t.true(await verifier.verify('u', 'pw'))
  t.is(pool.compares.length, 1, 'the first check runs bcrypt once')
  t.true(verifier.cached('u', 'pw'))
  const second = verifier.verify('u', 'pw')
  t.is(pool.pending, 0, 'the cached check queues no compare')
  t.true(await second)
  t.is(pool.compares.length, 1, 'the second check ran no bcrypt compare')
  // A wrong password is not served from the right one's entry.
  t.false(await verifier.verify('u', 'other'))
  t.is(pool.compares.length, 2)
})

test('unknown users cost as much as the costliest user: one compare against a dummy hash of the highest cost in the file', async t => {
  // Counted here; auth-controller.test.ts times it.
  const pool = recordingPool(t)
  const users = parseHtpasswd(`u:${hashPassword('pw', 5)}\nv:${hashPassword('pw2', 5)}\nw:${hashPassword('pw3', 8)}\n`)
  const verifier = await CredentialVerifier.create(users, { pool })
  t.deepEqual(pool.hashedCosts, [8], 'the dummy hash has the highest cost, not the most common one')
  pool.compares.splice(0) // the one that timed the dummy hash
  t.false(await verifier.verify('u', 'wrong'))
  t.false(await verifier.verify('nobody', 'wrong'))
  t.false(await verifier.verify('nobody-else', 'pw'))
  t.is(pool.compares.length, 3, 'an unknown user runs a compare like a known one')
  const [known, unknown, unknown2] = pool.compares as [string, string, string]
  t.is(bcrypt.getRounds(known), 5)
  t.is(bcrypt.getRounds(unknown), 8)
  t.is(unknown2, unknown)
  t.false([...users.values()].includes(unknown), "not a real user's hash")
})

test('concurrent identical checks share one compare', async t => {
  const pool = recordingPool(t)
  const verifier = await CredentialVerifier.create(parseHtpasswd(`u:${hashPassword('pw', 8)}\n`), { pool })
  pool.compares.splice(0)
  const checks = Array.from({ length: 5 }, () => verifier.verify('u', 'pw'))
  t.is(pool.pending, 1)
  t.deepEqual(await Promise.all(checks), [true, true, true, true, true])
  t.is(pool.pending, 0)
  t.is(pool.compares.length, 1)
})

test('parseBasicAuthorization decodes user:password, password may contain colons', t => {
  const header = 'Basic ' + Buffer.from('me:a:b').toString('base64')
  t.deepEqual(parseBasicAuthorization(header), { user: 'me', password: 'a:b' })
  t.deepEqual(parseBasicAuthorization('basic ' + Buffer.from('x:').toString('base64')), { user: 'x', password: '' })
  t.is(parseBasicAuthorization('Bearer abc'), undefined)
  t.is(parseBasicAuthorization('Basic ' + Buffer.from('nocolon').toString('base64')), undefined)
  t.is(parseBasicAuthorization(undefined), undefined)
})

test('the login throttle counts distinct wrong passwords per address and user', t => {
  let now = 0
  const throttle = new LoginThrottle({ burst: 3, refillMs: 1000, addressBurst: 5, addressRefillMs: 1000, now: () => now })
  for (let i = 0; i < 3; i++) t.is(throttle.admit('1.1.1.1', 'alice', `s${i}`), 0)
  t.true(throttle.admit('1.1.1.1', 'alice', 's3') > 0, 'a fourth distinct secret waits')
  t.is(throttle.admit('1.1.1.1', 'alice', 's1'), 0, 'a secret already counted is not charged again')
  t.is(throttle.admit('1.1.1.1', 'bob', 'b0'), 0, 'another user behind the same address is not blocked')
  t.is(throttle.admit('2.2.2.2', 'alice', 's3'), 0, 'another address is not blocked')
  t.is(throttle.admit('1.1.1.1', 'carol', 'c0'), 0)
  t.true(throttle.admit('1.1.1.1', 'dave', 'd0') > 0, 'the address bucket (5) bounds guesses spread over user names')
  now += 1000
  t.is(throttle.admit('1.1.1.1', 'alice', 's3'), 0)
  // A success forgives the user's failures from that address.
  throttle.succeeded('1.1.1.1', 'alice', 's3')
  t.is(throttle.retryAfterMs('1.1.1.1', 'alice'), 0)
})

test('throttle keys: IPv4 as is, mapped IPv4 unwrapped, IPv6 by /64', t => {
  t.is(throttleKey('203.0.113.7'), '203.0.113.7')
  t.is(throttleKey('::ffff:203.0.113.7'), '203.0.113.7')
  t.is(throttleKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64')
  t.is(throttleKey('2001:db8:1:2::9'), '2001:db8:1:2::/64')
  t.is(throttleKey('2001:db8::1'), '2001:db8:0:0::/64')
  t.is(throttleKey('::1'), '0:0:0:0::/64')
  t.is(throttleKey('fe80::1%eth0'), 'fe80:0:0:0::/64')
})

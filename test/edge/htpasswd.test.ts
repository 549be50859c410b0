import test from 'ava'
import { execFileSync } from 'node:child_process'
import bcrypt from 'bcryptjs'
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

/**
 * Records every bcrypt compare the verifier makes (it calls bcryptjs through the module object, so
 * replacing the property is seen by it). Only for serial tests: ava runs those before the others, so
 * no concurrent test's compare is counted.
 */
async function recordingCompares<T>(run: (compares: string[]) => Promise<T>): Promise<T> {
  const original = bcrypt.compare
  const compares: string[] = []
  bcrypt.compare = ((password: string, hash: string, ...rest: unknown[]) => {
    compares.push(hash)
    return (original as (...args: unknown[]) => unknown)(password, hash, ...rest)
  }) as typeof bcrypt.compare
  try {
    return await run(compares)
  } finally {
    bcrypt.compare = original
  }
}

test.serial('verified credentials are cached: the second check does not run bcrypt', async t => {
  const verifier = await CredentialVerifier.create(parseHtpasswd(`u:${hashPassword('pw', 10)}\n`))
  t.is(verifier.cached('u', 'pw'), undefined)
  await recordingCompares(async compares => {
    t.true(await verifier.verify('u', 'pw'))
    t.is(compares.length, 1, 'the first check runs bcrypt once')
    t.true(verifier.cached('u', 'pw'))
    const second = verifier.verify('u', 'pw')
    t.is(verifier.pending, 0, 'the cached check queues no compare')
    t.true(await second)
    t.is(compares.length, 1, 'the second check ran no bcrypt compare')
    // A wrong password is not served from the right one's entry.
    t.false(await verifier.verify('u', 'other'))
    t.is(compares.length, 2)
  })
})

test.serial('unknown users cost as much as known ones: one compare against a dummy hash of the file\'s cost', async t => {
  // Counted, not timed: a compare's cost is set by the hash's cost factor, so an unknown user must run
  // exactly one compare, against a hash of the same cost as the users' (timings on a shared CI machine
  // are too noisy to tell 8 rounds from 4).
  const users = parseHtpasswd(`u:${hashPassword('pw', 8)}\nv:${hashPassword('pw2', 8)}\nw:${hashPassword('pw3', 5)}\n`)
  const verifier = await CredentialVerifier.create(users)
  await recordingCompares(async compares => {
    t.false(await verifier.verify('u', 'wrong'))
    t.false(await verifier.verify('nobody', 'wrong'))
    t.false(await verifier.verify('nobody-else', 'pw'))
    t.is(compares.length, 3, 'an unknown user runs a compare like a known one')
    const [known, unknown, unknown2] = compares as [string, string, string]
    t.is(bcrypt.getRounds(known), 8)
    t.is(bcrypt.getRounds(unknown), 8, 'the dummy hash has the most common cost in the file')
    t.is(unknown2, unknown)
    t.false([...users.values()].includes(unknown), 'not a real user\'s hash')
  })
})

test('concurrent identical checks share one compare', async t => {
  const verifier = await CredentialVerifier.create(parseHtpasswd(`u:${hashPassword('pw', 8)}\n`))
  const checks = Array.from({ length: 5 }, () => verifier.verify('u', 'pw'))
  t.is(verifier.pending, 1)
  t.deepEqual(await Promise.all(checks), [true, true, true, true, true])
  t.is(verifier.pending, 0)
})

test('parseBasicAuthorization decodes user:password, password may contain colons', t => {
  const header = 'Basic ' + Buffer.from('me:a:b').toString('base64')
  t.deepEqual(parseBasicAuthorization(header), { user: 'me', password: 'a:b' })
  t.deepEqual(parseBasicAuthorization('basic ' + Buffer.from('x:').toString('base64')), { user: 'x', password: '' })
  t.is(parseBasicAuthorization('Bearer abc'), undefined)
  t.is(parseBasicAuthorization('Basic ' + Buffer.from('nocolon').toString('base64')), undefined)
  t.is(parseBasicAuthorization(undefined), undefined)
})

test('the login throttle slows one address without touching others', t => {
  let now = 0
  const throttle = new LoginThrottle({ burst: 3, refillMs: 1000, now: () => now })
  for (let i = 0; i < 3; i++) {
    t.is(throttle.retryAfterMs('1.1.1.1'), 0)
    throttle.fail('1.1.1.1')
  }
  t.true(throttle.retryAfterMs('1.1.1.1') > 0)
  t.is(throttle.retryAfterMs('2.2.2.2'), 0)
  now += 1000
  t.is(throttle.retryAfterMs('1.1.1.1'), 0)
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

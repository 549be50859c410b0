/** Session cookies: signed, expiring, revocable; CSRF tokens bound to the session; the key kept in the CertStore. */
import test from 'ava'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { FileCertStore } from '../../src/edge/tls/cert-store.js'
import { cookieValue, loadSessionKey, sessionCookie, Sessions } from '../../src/web/sessions.js'

test('a cookie verifies until it expires or is revoked; a changed byte or another key fails', t => {
  let now = 1_000_000
  const sessions = new Sessions({ key: Buffer.alloc(32, 1), ttlMs: 60_000, now: () => now })
  const { session, cookie } = sessions.issue('alice')
  t.is(sessions.verify(cookie)?.user, 'alice')
  t.is(sessions.verify(cookie.slice(0, -2) + (cookie.endsWith('A') ? 'BB' : 'AA')), undefined)
  const [payload, signature] = cookie.split('.')
  const forged = Buffer.from(JSON.stringify({ v: 1, sid: session.sid, u: 'root', exp: session.expiresAt })).toString('base64url')
  t.is(sessions.verify(`${forged}.${signature}`), undefined)
  t.is(new Sessions({ key: Buffer.alloc(32, 2), now: () => now }).verify(cookie), undefined)
  t.is(sessions.verify(`${payload}`), undefined)
  t.is(sessions.verify('x'.repeat(5000)), undefined)
  t.true(sessions.isValidCsrf(session, sessions.csrfToken(session)))
  t.false(sessions.isValidCsrf(session, sessions.csrfToken(sessions.issue('alice').session)))
  now += 60_001
  t.is(sessions.verify(cookie), undefined)
  now -= 60_001
  sessions.revoke(session)
  t.is(sessions.verify(cookie), undefined)
  t.is(sessions.verify(sessions.issue(undefined).cookie)?.user, undefined)
})

test('cookie parsing and the Set-Cookie line', t => {
  t.is(cookieValue('a=1; berth_session=abc.def; b=2', 'berth_session'), 'abc.def')
  t.is(cookieValue('berth_sessionx=1', 'berth_session'), undefined)
  t.is(sessionCookie('v', { secure: true, maxAgeSeconds: 10 }), 'berth_session=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=10; Secure')
  t.false(sessionCookie('v', { secure: false, maxAgeSeconds: 10 }).includes('Secure'))
})

test('the key is made once and then read back from the CertStore', async t => {
  const root = await mkdtemp(path.join(tmpdir(), 'berth-session-key-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const store = new FileCertStore(root)
  const [one, two] = await Promise.all([loadSessionKey(store), loadSessionKey(store)])
  t.deepEqual(one, two)
  t.deepEqual(await loadSessionKey(new FileCertStore(root)), one)
  t.is(one.length, 32)
})

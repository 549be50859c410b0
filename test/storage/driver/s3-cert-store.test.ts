/**
 * The ACME certificate store in the bucket (DriverCertStore over the S3 driver, on Ceph RGW):
 * key/value behaviour as the provider uses it, a lock that one holder at a time gets across
 * "instances" (separate store objects), and the takeover of a lock whose holder died.
 */
import test from 'ava'
import { CERT_STORE_ROOT, CertStoreNotFoundError, DriverCertStore } from '../../../src/edge/tls/cert-store.js'
import type { S3Driver } from '../../../src/storage/driver/s3.js'
import { uniquePrefix } from '../../helpers/ceph.js'
import { s3DriverFor as driverFor, s3ForFile } from '../../helpers/s3.js'

const started = s3ForFile(test)

function storeFor(driver: S3Driver, options: { lockStaleMs?: number } = {}): DriverCertStore {
  return new DriverCertStore(driver, CERT_STORE_ROOT, { lockPollMs: 50, lockHeartbeatMs: 200, ...options })
}

test('keys: store, load, exists, list (files only, one level), delete; a missing key is CertStoreNotFoundError', async t => {
  const s3 = await started
  const store = storeFor(driverFor(s3, uniquePrefix('certs')))
  await store.store('acme/ca-dir/account.json', '{"url":"x"}')
  await store.store('acme/ca-dir/challenges/tok1.json', '{}')
  await store.store('acme/ca-dir/challenges/tok2.json', '{}')
  t.is((await store.load('acme/ca-dir/account.json')).toString(), '{"url":"x"}')
  t.true(await store.exists('acme/ca-dir/account.json'))
  t.false(await store.exists('acme/ca-dir/challenges'), 'a folder is not a key')
  t.deepEqual(await store.list('acme/ca-dir'), ['acme/ca-dir/account.json'])
  t.deepEqual(await store.list('acme/ca-dir/challenges'), ['acme/ca-dir/challenges/tok1.json', 'acme/ca-dir/challenges/tok2.json'])
  t.deepEqual(await store.list('nothing/here'), [])
  await store.delete('acme/ca-dir/challenges/tok1.json')
  await store.delete('acme/ca-dir/challenges/missing.json')
  await t.throwsAsync(store.load('acme/ca-dir/challenges/tok1.json'), { instanceOf: CertStoreNotFoundError })
})

test('one holder at a time across instances; the lock is free again after unlock', async t => {
  const s3 = await started
  const prefix = uniquePrefix('locks')
  const stores = Array.from({ length: 4 }, () => storeFor(driverFor(s3, prefix)))
  let inside = 0
  let most = 0
  await Promise.all(
    stores.map(async store => {
      const unlock = await store.lock('issue_cert_x')
      inside++
      most = Math.max(most, inside)
      await new Promise(resolve => setTimeout(resolve, 150))
      inside--
      await unlock()
    }),
  )
  t.is(most, 1)
})

test('a lock whose holder stopped updating it is taken over; a waiter can be aborted', async t => {
  const s3 = await started
  const driver = driverFor(s3, uniquePrefix('stale'))
  // A holder that died a minute ago.
  const old = Date.now() - 60_000
  await driver.putContent(
    '/berth/certs/locks/issue_cert_y.lock',
    Buffer.from(JSON.stringify({ nonce: 'dead', host: 'gone', pid: 1, created: old, updated: old })),
  )
  const store = storeFor(driver, { lockStaleMs: 1000 })
  const unlock = await store.lock('issue_cert_y')
  const waiting = new AbortController()
  const other = storeFor(driver).lock('issue_cert_y', waiting.signal)
  setTimeout(() => waiting.abort(new Error('gave up')), 300)
  await t.throwsAsync(other, { message: 'gave up' })
  await unlock()
})

import test from 'ava'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { ConnectionLimits, MAX_REFUSED, connectionLimitFor, readFileLimit } from '../../src/edge/connection-limits.js'

test('a connection beyond the per-address limit is dropped; other addresses are not affected', t => {
  const limits = new ConnectionLimits({ maxConnections: 100, maxConnectionsPerAddress: 2 })
  const a = [limits.admit('203.0.113.7'), limits.admit('::ffff:203.0.113.7')]
  t.deepEqual(
    a.map(c => c.admission),
    ['admit', 'admit'],
  )
  t.is(limits.admit('203.0.113.7').admission, 'drop')
  t.is(limits.admit('203.0.113.8').admission, 'admit')
  a[0]!.release()
  a[0]!.release() // idempotent
  t.is(limits.admit('203.0.113.7').admission, 'admit')
  t.is(limits.open, 3)
})

test('IPv6 addresses of one /64 share the per-address limit', t => {
  const limits = new ConnectionLimits({ maxConnections: 100, maxConnectionsPerAddress: 2 })
  t.is(limits.admit('2001:db8:1:2::1').admission, 'admit')
  t.is(limits.admit('2001:db8:1:2:ffff::9').admission, 'admit')
  t.is(limits.admit('2001:db8:1:2::77').admission, 'drop')
  t.is(limits.admit('2001:db8:1:3::1').admission, 'admit')
})

test('beyond the total, connections are refused (answered 503), and beyond MAX_REFUSED of those, dropped', t => {
  const limits = new ConnectionLimits({ maxConnections: 3, maxConnectionsPerAddress: 1 })
  const admitted = [1, 2, 3].map(i => limits.admit(`192.0.2.${i}`))
  t.true(admitted.every(c => c.admission === 'admit'))
  const refused = Array.from({ length: MAX_REFUSED }, (_, i) => limits.admit(`198.51.100.${i}`))
  t.true(refused.every(c => c.admission === 'refuse'))
  t.is(limits.admit('203.0.113.1').admission, 'drop')
  t.is(limits.open, 3 + MAX_REFUSED)
  refused[0]!.release()
  t.is(limits.admit('203.0.113.1').admission, 'refuse')
  admitted[0]!.release()
  t.is(limits.admit('203.0.113.2').admission, 'admit')
})

test('unix-socket connections (no address) count in the total only', t => {
  const limits = new ConnectionLimits({ maxConnections: 2, maxConnectionsPerAddress: 1 })
  t.is(limits.admit(undefined).admission, 'admit')
  t.is(limits.admit(undefined).admission, 'admit')
  t.is(limits.admit(undefined).admission, 'refuse')
})

test('limits must be positive integers', t => {
  t.throws(() => new ConnectionLimits({ maxConnections: 0, maxConnectionsPerAddress: 1 }), { instanceOf: RangeError })
  t.throws(() => new ConnectionLimits({ maxConnections: 10, maxConnectionsPerAddress: 1.5 }), { instanceOf: RangeError })
})

test('the total stays below the open-file limit with room for a file per connection', t => {
  for (const fileLimit of [160, 256, 1024, 20_000, 1_048_576]) {
    const total = connectionLimitFor(fileLimit)
    t.true(2 * total + MAX_REFUSED + 64 <= fileLimit, `${fileLimit}: ${total}`)
  }
  t.is(connectionLimitFor(1024), 464)
  t.is(connectionLimitFor(10), 16)
})

test('readFileLimit reads the soft limit of /proc/self/limits', async t => {
  const dir = await mkdtemp(path.join(tmpdir(), 'berth-limits-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'limits')
  await writeFile(
    file,
    'Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \n',
  )
  t.is(await readFileLimit(file), 1024)
  await writeFile(file, 'Max open files            unlimited            unlimited            files     \n')
  t.is(await readFileLimit(file), undefined)
  t.is(await readFileLimit(path.join(dir, 'missing')), undefined)
  if (process.platform === 'linux') t.true(((await readFileLimit()) ?? 0) > 0)
})

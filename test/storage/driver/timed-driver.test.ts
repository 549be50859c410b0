import test from 'ava'
import { RegistryMetrics } from '../../../src/metrics/registry-metrics.js'
import { InMemoryDriver } from '../../../src/storage/driver/in-memory.js'
import { PathNotFoundError, type StorageDriver } from '../../../src/storage/driver/storage-driver.js'
import { TimedDriver } from '../../../src/storage/driver/timed-driver.js'
import { storageDriverSuite } from '../../suites/storage-driver.js'

// The decorator keeps the driver contract: the whole suite passes through it.
storageDriverSuite('timed in-memory', {
  create: async () => new TimedDriver(new InMemoryDriver(), new RegistryMetrics({ processMetrics: false }).storageTimers('in-memory')),
})

async function samples(metrics: RegistryMetrics): Promise<Map<string, number>> {
  const { body } = await metrics.exposition()
  const map = new Map<string, number>()
  for (const line of body.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    map.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return map
}

const count = (s: Map<string, number>, action: string): number | undefined =>
  s.get(`registry_storage_action_seconds_count{driver="in-memory",action="${action}"}`)

test('every call is timed under distribution name and labels, failures included', async t => {
  const metrics = new RegistryMetrics({ processMetrics: false })
  const driver = new TimedDriver(new InMemoryDriver(), metrics.storageTimers('in-memory'))
  await driver.putContent('/a/b', Buffer.from('hello'))
  await driver.putContent('/a/c', Buffer.from('world'))
  t.false(await driver.putContentIfAbsent('/a/b', Buffer.from('again')))
  t.is((await driver.getContent('/a/b')).toString(), 'hello')
  await t.throwsAsync(driver.getContent('/a/missing'), { instanceOf: PathNotFoundError })
  await driver.stat('/a/b')
  await driver.touch('/a/b')
  t.deepEqual((await driver.list('/a')).sort(), ['/a/b', '/a/c'])
  await driver.move('/a/c', '/a/d')
  const reader = await driver.reader('/a/b')
  reader.resume()
  const writer = await driver.writer('/a/e')
  await writer.write(Buffer.from('x'))
  await writer.commit()
  const visited: string[] = []
  await driver.walk('/a', info => void visited.push(info.path))
  const lock = await driver.lock('/locks/one', { heartbeatMs: 60_000 })
  await lock.release()
  await driver.delete('/a/d')

  const s = await samples(metrics)
  t.is(count(s, 'PutContent'), 2)
  t.is(count(s, 'PutContentIfAbsent'), 1)
  t.is(count(s, 'GetContent'), 2, 'the failed read is timed too')
  for (const action of ['Stat', 'Touch', 'List', 'Move', 'Reader', 'Writer', 'Walk', 'Lock', 'Delete']) t.is(count(s, action), 1, action)
  t.is(count(s, 'URLFor'), 0, 'in-memory has no redirect URLs')
  t.is(s.get('registry_storage_action_seconds_bucket{le="+Inf",driver="in-memory",action="PutContent"}'), 2)
  // Durations depend on the machine's load: only the bounds and their order are checked.
  const buckets = ['0.0005', '0.005', '10', '60', '+Inf'].map(le =>
    s.get(`registry_storage_action_seconds_bucket{le="${le}",driver="in-memory",action="PutContent"}`),
  )
  t.false(buckets.includes(undefined), "distribution's bucket bounds are kept, with finer ones below and two above")
  t.deepEqual(
    [...(buckets as number[])].sort((a, b) => a - b),
    buckets as number[],
    'cumulative',
  )
})

test('name, capabilities and optional methods are those of the wrapped driver', async t => {
  const plain = new InMemoryDriver()
  const timed = new TimedDriver(plain, new RegistryMetrics({ processMetrics: false }).storageTimers('in-memory'))
  t.is(timed.name, 'in-memory')
  t.is(timed.capabilities, plain.capabilities)
  t.is(timed.redirectUrl, undefined)
  t.is(timed.abortIncompleteWrites, undefined)

  const calls: string[] = []
  const withOptional: StorageDriver = Object.assign(new InMemoryDriver(), {
    name: 'bucket',
    redirectUrl: async (path: string) => (calls.push(path), `https://bucket.example/${path}`),
    abortIncompleteWrites: async () => 3,
  })
  const metrics = new RegistryMetrics({ processMetrics: false })
  const wrapped = new TimedDriver(withOptional, metrics.storageTimers(withOptional.name))
  t.is(await wrapped.redirectUrl?.('/x'), 'https://bucket.example//x')
  t.is(await wrapped.abortIncompleteWrites?.(new Date()), 3)
  t.deepEqual(calls, ['/x'])
  t.is((await samples(metrics)).get('registry_storage_action_seconds_count{driver="bucket",action="URLFor"}'), 1)
})

import test from 'ava'
import { CachedCheck } from '../src/health.js'
import { createLogger } from '../src/log.js'
import { InMemoryDriver } from '../src/storage/driver/in-memory.js'
import { probeStorage } from '../src/storage/storage-probe.js'

function check(probe: () => Promise<void>, logs: string[] = []) {
  const logger = createLogger({ level: 'debug', write: line => logs.push(line) })
  return new CachedCheck({ name: 'storage', probe, failureText: 'not writable', intervalMs: 60_000, timeoutMs: 50, logger })
}

test('a cached check: not ready before its first attempt; then the last result; a change logged once', async t => {
  const logs: string[] = []
  let fails = false
  const cached = check(async () => {
    if (fails) throw new Error('EACCES: permission denied')
  }, logs)
  t.is(cached.failure(), 'not checked yet')
  await cached.start()
  t.teardown(() => cached.stop())
  t.is(cached.failure(), undefined)
  fails = true
  await cached.runNow()
  await cached.runNow()
  t.is(cached.failure(), 'not writable')
  fails = false
  await cached.runNow()
  t.is(cached.failure(), undefined)
  t.is(logs.length, 2, logs.join('\n'))
  t.regex(logs[0]!, /WARN {2}storage check failed reason="not writable" error="EACCES: permission denied"/)
  t.regex(logs[1]!, /INFO {2}storage check passes again/)
})

test('a cached check whose attempt hangs: not answering after the timeout, and no second attempt meanwhile', async t => {
  const keepAlive = setInterval(() => {}, 1000) // the check's own timers never hold the process
  t.teardown(() => clearInterval(keepAlive))
  let attempts = 0
  let release = (): void => {}
  const cached = check(() => {
    attempts++
    return new Promise<void>(resolve => (release = resolve))
  })
  await cached.start()
  t.teardown(() => cached.stop())
  t.is(cached.failure(), 'not answering')
  await cached.runNow()
  t.is(attempts, 1)
  release()
  await new Promise(resolve => setImmediate(resolve))
  t.is(cached.failure(), undefined, 'the late answer counts')
})

test('the storage probe writes and deletes its own object outside the registry tree', async t => {
  const driver = new InMemoryDriver()
  const written: string[] = []
  const putContent = driver.putContent.bind(driver)
  driver.putContent = (path, content) => {
    written.push(path)
    return putContent(path, content)
  }
  await probeStorage(driver, 'instance-1')
  t.deepEqual(written, ['/berth/health/instance-1'])
  await t.throwsAsync(driver.stat('/berth/health/instance-1'))
  driver.putContent = () => Promise.reject(new Error('read-only file system'))
  await t.throwsAsync(probeStorage(driver, 'instance-1'), { message: 'read-only file system' })
})

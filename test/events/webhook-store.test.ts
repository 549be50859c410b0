/**
 * The webhook queue in the store: two processes on one store each deliver only their own records
 * while both live (one adopts the other's once it stops), and `berth events` lists, retries and
 * drops deliveries on a datadir.
 */
import test from 'ava'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { runCli } from '../../src/cli/program.js'
import type { RegistryEvent } from '../../src/events/events.js'
import { WebhookQueue } from '../../src/events/webhook-queue.js'
import { Webhooks, type WebhooksOptions } from '../../src/events/webhooks.js'
import { silentLogger } from '../../src/log.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import type { StorageDriver } from '../../src/storage/driver/storage-driver.js'
import { startReceiver } from './receiver.js'

function options(driver: StorageDriver, url: string, extra: Partial<WebhooksOptions> = {}): WebhooksOptions {
  return {
    driver,
    endpoints: [{ url }],
    logger: silentLogger,
    timeoutMs: 2000,
    maxAttempts: 10,
    maxAgeMs: 3600_000,
    retryMinMs: 20,
    retryMaxMs: 200,
    maxQueued: 100,
    maxUnwritten: 1000,
    heartbeatMs: 100,
    leaseMs: 300,
    ...extra,
  }
}

const push = (tag: string): RegistryEvent => ({ action: 'push', repository: 'team/app', digest: 'sha256:' + 'b'.repeat(64), mediaType: 'x', size: 1, tag })

async function eventually(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

test('two processes on one store: each sends only its own while both live; a stopped one’s are adopted once', async t => {
  const receiver = await startReceiver(t, () => 503)
  const driver = new InMemoryDriver()
  const queue = new WebhookQueue(driver)
  const slow = { retryMinMs: 400, retryMaxMs: 400 }
  const a = await Webhooks.start(options(driver, receiver.url, slow))
  const b = await Webhooks.start(options(driver, receiver.url, slow))
  t.teardown(() => Promise.all([a.close(100), b.close(100)]))
  a.emit(push('from-a'))
  b.emit(push('from-b'))
  // Several lease periods: B never adopts A's record (A's lock is alive), nor the other way round.
  await new Promise(resolve => setTimeout(resolve, 1200))
  const owners = (await queue.list()).map(item => `${item.record.tag}@${item.instance === a.instance ? 'a' : item.instance === b.instance ? 'b' : '?'}`)
  t.deepEqual(owners.sort(), ['from-a@a', 'from-b@b'])
  const tries = (tag: string) => receiver.received.filter(r => r.json.events[0].target.tag === tag).length
  // Each record is tried by one process only: about 1200/400 tries, never twice as many.
  t.true(tries('from-a') <= 5 && tries('from-b') <= 5, `${tries('from-a')} ${tries('from-b')}`)

  // A stops: B adopts its record and delivers both.
  await a.close()
  receiver.answer = () => 200
  await eventually(async () => (await queue.list()).length === 0)
  const delivered = receiver.received.filter((r, index) => index >= 0 && r.json.events[0].target.tag === 'from-a')
  t.true(delivered.length >= 1)
})

function captureIo(cwd: string) {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let out = ''
  let err = ''
  stdout.on('data', chunk => (out += String(chunk)))
  stderr.on('data', chunk => (err += String(chunk)))
  return { io: { stdout, stderr, stdin: new PassThrough(), env: {}, cwd }, out: () => out, err: () => err }
}

test('berth events lists pending and failed deliveries, retries and drops them', async t => {
  const datadir = await mkdtemp(path.join(tmpdir(), 'berth-events-cli-'))
  t.teardown(() => rm(datadir, { recursive: true, force: true }))
  await mkdir(path.join(datadir, 'data'))
  const receiver = await startReceiver(t, () => 500)
  const driver = new FilesystemDriver(path.join(datadir, 'data'))
  const webhooks = await Webhooks.start(options(driver, receiver.url + '?token=hidden', { maxAttempts: 2, leaseMs: 60_000 }))
  webhooks.emit(push('1.0'))
  const queue = new WebhookQueue(driver)
  await eventually(async () => (await queue.list()).some(item => item.state === 'failed'))
  await webhooks.close()
  const pending = await Webhooks.start(options(driver, receiver.url + '?token=hidden', { retryMinMs: 60_000, retryMaxMs: 60_000 }))
  pending.emit(push('2.0'))
  await eventually(async () => (await queue.list()).some(item => item.state === 'pending' && item.record.attempts === 1))
  await pending.close()

  const list = captureIo(datadir)
  t.is(await runCli(['node', 'berth', 'events', '--datadir', datadir], list.io), 0, list.err())
  t.regex(list.out(), /^ID\s+STATE\s+ENDPOINT\s+ACTION\s+REPOSITORY\s+TAG\s+ATTEMPTS\s+NEXT TRY\s+LAST ERROR/)
  t.regex(list.out(), /failed\s+http:\/\/127\.0\.0\.1:\d+\/hook\s+push\s+team\/app\s+1\.0\s+2\s+gave up\s+HTTP 500/)
  t.regex(list.out(), /pending\s+http:\/\/127\.0\.0\.1:\d+\/hook\s+push\s+team\/app\s+2\.0\s+1\s+\d{4}-\d\d-\d\dT/)
  t.regex(list.out(), /1 pending, 1 failed/)
  t.false(list.out().includes('hidden'))

  const json = captureIo(datadir)
  t.is(await runCli(['node', 'berth', 'events', 'list', '--json', '--datadir', datadir], json.io), 0)
  const listed = JSON.parse(json.out()) as { id: string; state: string; tag: string; body?: string }[]
  t.deepEqual(
    listed.map(item => [item.state, item.tag, item.body]),
    [
      ['failed', '1.0', undefined],
      ['pending', '2.0', undefined],
    ],
  )

  const retry = captureIo(datadir)
  t.is(await runCli(['node', 'berth', 'events', 'retry', '--datadir', datadir], retry.io), 0)
  t.regex(retry.out(), /1 failed delivery queued again/)
  t.deepEqual(
    (await queue.list()).map(item => [item.state, item.record.attempts]),
    [
      ['pending', 0],
      ['pending', 1],
    ],
  )

  const usage = captureIo(datadir)
  t.is(await runCli(['node', 'berth', 'events', 'drop', '--datadir', datadir], usage.io), 2)
  const drop = captureIo(datadir)
  t.is(await runCli(['node', 'berth', 'events', 'drop', listed[1]!.id, '--datadir', datadir], drop.io), 0)
  t.regex(drop.out(), /1 delivery dropped/)
  t.deepEqual(
    (await queue.list()).map(item => item.record.tag),
    ['1.0'],
  )
})

/**
 * Webhooks: a push through the engine reaches a real HTTP receiver as distribution's envelope, signed;
 * filters by event and repository glob; retries with backoff, dead letters, a restart that resumes,
 * a receiver that hangs without slowing pushes, bounded memory with a dead endpoint, no secret in logs.
 */
import test, { type ExecutionContext } from 'ava'
import { createHmac } from 'node:crypto'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { loadConfig } from '../../src/config/load.js'
import type { WebhookSetting } from '../../src/config/values.js'
import { fanOut, type EventSink, type RegistryEvent } from '../../src/events/events.js'
import { DISTRIBUTION_EVENTS_TYPE } from '../../src/events/webhook-payload.js'
import { WebhookQueue } from '../../src/events/webhook-queue.js'
import { retryDelay, Webhooks, type WebhooksOptions } from '../../src/events/webhooks.js'
import { createLogger, silentLogger, type Logger } from '../../src/log.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import type { StorageDriver } from '../../src/storage/driver/storage-driver.js'
import { request } from '../helpers/http.js'
import { imageManifest, OCI_MANIFEST, putManifest, startApp } from '../registry/fixtures.js'
import { startReceiver } from './receiver.js'

const SECRET = 'hook-secret-7f3a9c'

function options(driver: StorageDriver, endpoints: WebhookSetting[], extra: Partial<WebhooksOptions> = {}): WebhooksOptions {
  return {
    driver,
    endpoints,
    logger: silentLogger,
    timeoutMs: 2000,
    maxAttempts: 10,
    maxAgeMs: 3600_000,
    retryMinMs: 20,
    retryMaxMs: 200,
    maxQueued: 100,
    maxUnwritten: 1000,
    heartbeatMs: 1000,
    leaseMs: 5000,
    ...extra,
  }
}

async function startWebhooks(t: ExecutionContext, opts: WebhooksOptions): Promise<Webhooks> {
  const webhooks = await Webhooks.start(opts)
  t.teardown(() => webhooks.close(100))
  return webhooks
}

async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

const push = (repository: string, tag?: string): RegistryEvent => ({
  action: 'push',
  repository,
  digest: 'sha256:' + 'a'.repeat(64),
  mediaType: OCI_MANIFEST,
  size: 123,
  tag,
})

test('a push with a tag reaches the receiver as distribution’s envelope, signed with the endpoint’s secret', async t => {
  const receiver = await startReceiver(t)
  const driver = new InMemoryDriver()
  const webhooks = await startWebhooks(t, options(driver, [{ url: receiver.url, secret: SECRET }]))
  const { server } = await startApp(t, { events: webhooks })
  const image = await imageManifest(server, 'team/app')
  t.is((await putManifest(server, 'team/app', '1.0', image.manifest, OCI_MANIFEST)).status, 201)
  await receiver.waitFor(1)

  const [delivery] = receiver.received
  t.is(delivery!.headers['content-type'], DISTRIBUTION_EVENTS_TYPE)
  const expected = 'sha256=' + createHmac('sha256', SECRET).update(delivery!.body).digest('hex')
  t.is(delivery!.headers['x-berth-signature-256'], expected)
  t.is(delivery!.json.events.length, 1)
  const event = delivery!.json.events[0]
  t.is(event.action, 'push')
  t.regex(event.id, /^[0-9a-f-]{36}$/)
  t.is(delivery!.headers['x-berth-delivery'], event.id)
  t.true(Math.abs(Date.parse(event.timestamp) - Date.now()) < 60_000)
  t.like(event.target, {
    mediaType: OCI_MANIFEST,
    digest: image.digest,
    size: image.manifest.byteLength,
    length: image.manifest.byteLength,
    repository: 'team/app',
    tag: '1.0',
  })
  t.regex(event.target.url, new RegExp(`^http://127\\.0\\.0\\.1:\\d+/v2/team/app/manifests/${image.digest}$`))
  t.is(event.request.method, 'PUT')
  t.is(event.request.addr, '127.0.0.1')
  t.regex(event.request.host, /^127\.0\.0\.1:\d+$/)
  t.is(typeof event.request.id, 'string')
  t.is(typeof event.request.useragent, 'string')
  t.deepEqual(event.actor, {})
  t.is(event.source.instanceID, webhooks.instance)
  t.is(typeof event.source.addr, 'string')
  // Delivered: nothing left in the store.
  await eventually(async () => (await new WebhookQueue(driver).list()).length === 0)
})

test('events and repository globs choose the endpoints; pulls only for an endpoint that asks, and only to it', async t => {
  const all = await startReceiver(t)
  const teamDeletes = await startReceiver(t)
  const pulls = await startReceiver(t)
  const webhooks = await startWebhooks(
    t,
    options(new InMemoryDriver(), [
      { url: all.url },
      { url: teamDeletes.url, events: ['delete'], repositories: ['team/*'] },
      { url: pulls.url, events: ['pull'], format: 'cloudevents' },
    ]),
  )
  t.true(webhooks.wantsPulls)
  const seen: RegistryEvent[] = []
  const audit: EventSink = { emit: event => void seen.push(event) }
  const { server } = await startApp(t, { events: fanOut([audit, webhooks]) })
  for (const name of ['team/app', 'other/app']) {
    const image = await imageManifest(server, name)
    t.is((await putManifest(server, name, 'v1', image.manifest, OCI_MANIFEST)).status, 201)
    t.is((await request(server, `/v2/${name}/manifests/v1`, { headers: { accept: OCI_MANIFEST } })).status, 200)
    t.is((await request(server, `/v2/${name}/manifests/v1`, { method: 'HEAD', headers: { accept: OCI_MANIFEST } })).status, 200)
    t.is((await request(server, `/v2/${name}/manifests/v1`, { method: 'DELETE' })).status, 202)
  }
  await all.waitFor(4)
  await teamDeletes.waitFor(1)
  await pulls.waitFor(2)
  await new Promise(resolve => setTimeout(resolve, 200))
  // Default events: push and delete, every repository, in order.
  t.deepEqual(
    all.received.map(r => `${r.json.events[0].action} ${r.json.events[0].target.repository}:${r.json.events[0].target.tag}`),
    ['push team/app:v1', 'delete team/app:v1', 'push other/app:v1', 'delete other/app:v1'],
  )
  t.is(teamDeletes.received.length, 1)
  t.like(teamDeletes.received[0]!.json.events[0], { action: 'delete', target: { repository: 'team/app', tag: 'v1' } })
  // Pulls: one per GET (not HEAD), as CloudEvents.
  t.is(pulls.received.length, 2)
  t.is(pulls.received[0]!.headers['content-type'], 'application/cloudevents+json; charset=utf-8')
  t.like(pulls.received[0]!.json, {
    specversion: '1.0',
    type: 'berth.artifact.pulled',
    subject: 'team/app:v1',
    data: { action: 'pull', target: { tag: 'v1' } },
  })
  // The sink that did not ask for pulls never got one.
  t.false(seen.some(event => event.action === 'pull'))
})

test('a receiver failing twice gets the event on the third try, after growing waits', async t => {
  const receiver = await startReceiver(t, index => (index < 2 ? 503 : 204))
  const driver = new InMemoryDriver()
  const webhooks = await startWebhooks(t, options(driver, [{ url: receiver.url }], { retryMinMs: 50, random: () => 0.5 }))
  webhooks.emit(push('team/app', '1.0'))
  webhooks.emit(push('team/app', '2.0'))
  await receiver.waitFor(4)
  // In order: the first event is retried before the second is sent.
  t.deepEqual(
    receiver.received.map(r => r.json.events[0].target.tag),
    ['1.0', '1.0', '1.0', '2.0'],
  )
  // Waits of at least 50 ms, then 200 ms (4 times longer).
  const [a, b, c] = receiver.received.map(r => r.at)
  t.true(b! - a! >= 45, `first wait ${b! - a!} ms`)
  t.true(c! - b! >= 190, `second wait ${c! - b!} ms`)
  await eventually(async () => (await new WebhookQueue(driver).list()).length === 0)
  // The waits: min × 4^(n−1), at most max, ±20% jitter.
  t.is(retryDelay(1, 1000, 3600_000, 0.5), 1000)
  t.is(retryDelay(2, 1000, 3600_000, 0.5), 4000)
  t.is(retryDelay(3, 1000, 3600_000, 0), 12_800)
  t.is(retryDelay(9, 1000, 3600_000, 0.5), 3600_000)
  t.true(retryDelay(30, 1000, 3600_000, 0.999_999) <= 4_320_000)
})

test('after the last try the delivery is a dead letter: listed, retried on demand, dropped', async t => {
  const receiver = await startReceiver(t, () => 500)
  const driver = new InMemoryDriver()
  const queue = new WebhookQueue(driver)
  const webhooks = await startWebhooks(t, options(driver, [{ url: receiver.url }], { maxAttempts: 3, leaseMs: 100 }))
  webhooks.emit(push('team/app', '1.0'))
  await eventually(async () => (await queue.list()).some(item => item.state === 'failed'))
  t.is(receiver.received.length, 3)
  const [failed] = await queue.list()
  t.like(failed, { state: 'failed', record: { action: 'push', repository: 'team/app', tag: '1.0', attempts: 3, lastError: 'HTTP 500' } })
  t.is(typeof failed!.record.failedAt, 'string')

  // `berth events retry`: back in the queue, adopted by the serving process, delivered.
  receiver.answer = () => 200
  t.deepEqual(await queue.retry('all', new Date()), [failed!.record.id])
  await receiver.waitFor(4)
  await eventually(async () => (await queue.list()).length === 0)

  // `berth events drop --failed`
  receiver.answer = () => 500
  webhooks.emit(push('team/app', '2.0'))
  await eventually(async () => (await queue.list()).some(item => item.state === 'failed'))
  t.is((await queue.drop('failed')).length, 1)
  t.deepEqual(await queue.list(), [])
})

test('a pending delivery survives a restart: the next process on the same folder sends it', async t => {
  const root = await mkdtemp(path.join(tmpdir(), 'berth-webhooks-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const receiver = await startReceiver(t, () => 503)
  const first = await Webhooks.start(options(new FilesystemDriver(root), [{ url: receiver.url }], { retryMinMs: 60_000, retryMaxMs: 60_000 }))
  first.emit(push('team/app', '1.0'))
  await receiver.waitFor(1)
  await first.close()
  const pendingFolder = path.join(root, 'berth', 'events', 'pending')
  t.is((await readdir(pendingFolder)).length, 1)

  receiver.answer = () => 200
  const driver = new FilesystemDriver(root)
  const second = await startWebhooks(t, options(driver, [{ url: receiver.url }]))
  await receiver.waitFor(2)
  t.is(receiver.received[1]!.json.events[0].id, receiver.received[0]!.json.events[0].id)
  await eventually(async () => (await new WebhookQueue(driver).list()).length === 0)
  t.not(second.instance, first.instance)
})

test('a receiver that never answers does not hold up pushes', async t => {
  const receiver = await startReceiver(t, () => 'hang')
  const webhooks = await startWebhooks(t, options(new InMemoryDriver(), [{ url: receiver.url }], { timeoutMs: 60_000 }))
  const { server } = await startApp(t, { events: webhooks })
  const first = await imageManifest(server, 'team/app')
  t.is((await putManifest(server, 'team/app', '1', first.manifest, OCI_MANIFEST)).status, 201)
  await receiver.waitFor(1)
  // The receiver holds the first delivery open; more pushes complete meanwhile.
  for (const tag of ['2', '3', '4']) {
    const image = await imageManifest(server, 'team/app')
    t.is((await putManifest(server, 'team/app', tag, image.manifest, OCI_MANIFEST)).status, 201)
  }
  t.is(receiver.received.length, 1)
  await eventually(() => webhooks.queued === 4)
})

test('a dead endpoint and many events: memory holds at most the bound, the store holds the rest', async t => {
  const driver = new InMemoryDriver()
  const webhooks = await startWebhooks(
    t,
    options(driver, [{ url: 'http://127.0.0.1:9/hook' }], { maxQueued: 5, maxUnwritten: 50, retryMinMs: 60_000, retryMaxMs: 60_000 }),
  )
  let peak = 0
  for (let i = 0; i < 300; i++) {
    webhooks.emit(push('team/app', `t${i}`))
    peak = Math.max(peak, webhooks.queued)
    if (i % 40 === 39) await new Promise(resolve => setTimeout(resolve, 30))
  }
  t.true(peak <= 50 + 5, `peak ${peak}`)
  const queue = new WebhookQueue(driver)
  await eventually(async () => webhooks.queued <= 5 && (await queue.list()).length > 0)
  const stored = (await queue.list()).length
  t.true(webhooks.queued <= 5)
  t.true(stored >= 50, `stored ${stored}`)
})

test('the secret never appears in logs, failures included', async t => {
  const lines: string[] = []
  const logger: Logger = createLogger({ level: 'debug', write: line => lines.push(line) })
  const receiver = await startReceiver(t, () => 500)
  const driver = new InMemoryDriver()
  const webhooks = await startWebhooks(
    t,
    options(driver, [{ url: receiver.url + '?token=' + SECRET, secret: SECRET, headers: { Authorization: `Bearer ${SECRET}` } }], {
      logger,
      maxAttempts: 2,
    }),
  )
  webhooks.emit(push('team/app', '1.0'))
  await eventually(async () => (await new WebhookQueue(driver).list()).some(item => item.state === 'failed'))
  t.true(lines.length >= 2)
  t.false(lines.some(line => line.includes(SECRET)))
  t.is(receiver.received[0]!.headers.authorization, `Bearer ${SECRET}`)
  // A bad value is refused without echoing the secret.
  const error = await t.throwsAsync(loadConfig({ flags: { local: true, webhook: [`ftp://x/${SECRET}`] }, env: {} }))
  t.false(error!.message.includes(SECRET))
})

test('settings: --webhook flags, BERTH_WEBHOOK, webhooks: in the file, the shared secret and the defaults', async t => {
  const fromFlags = await loadConfig({ flags: { local: true, webhook: ['http://a.test/hook'], webhookSecret: SECRET }, env: {} })
  t.deepEqual(fromFlags.webhooks, [{ url: 'http://a.test/hook', secret: SECRET, events: ['push', 'delete'] }])
  const fromEnv = await loadConfig({ flags: { local: true }, env: { BERTH_WEBHOOK: 'http://a.test/1,https://b.test/2' } })
  t.deepEqual(
    fromEnv.webhooks.map(hook => hook.url),
    ['http://a.test/1', 'https://b.test/2'],
  )
  const root = await mkdtemp(path.join(tmpdir(), 'berth-webhook-config-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const file = path.join(root, 'berth.yml')
  await writeFile(
    file,
    'local: true\nwebhook-secret: shared\nwebhooks:\n  - http://a.test/hook\n  - url: https://ci.test/hook\n    secret: own\n    events: [push, pull, gc]\n    repositories: ["team/*", "**/release"]\n    headers: {Authorization: Bearer x}\n    timeout: 30s\n    format: cloudevents\n',
  )
  const fromFile = await loadConfig({ configFile: file, env: {} })
  t.deepEqual(fromFile.webhooks, [
    { url: 'http://a.test/hook', secret: 'shared', events: ['push', 'delete'] },
    {
      url: 'https://ci.test/hook',
      secret: 'own',
      events: ['push', 'pull', 'gc'],
      repositories: ['team/*', '**/release'],
      headers: { Authorization: 'Bearer x' },
      timeoutMs: 30_000,
      format: 'cloudevents',
    },
  ])
  await writeFile(file, 'local: true\nwebhooks:\n  - url: http://a.test\n    repositories: ["Team/*"]\n')
  await t.throwsAsync(loadConfig({ configFile: file, env: {} }), {
    message: /invalid webhook in berth\.yml: expected webhook repositories as globs: uppercase/,
  })
  await writeFile(file, 'local: true\nwebhooks:\n  - url: http://a.test\n    events: [push, tag]\n')
  await t.throwsAsync(loadConfig({ configFile: file, env: {} }), { message: /webhook events among push, delete, pull, gc/ })
  await t.throwsAsync(loadConfig({ flags: { local: true, webhook: ['http://u:p@a.test/'] }, env: {} }), { message: /without user:password/ })
  const warned = await loadConfig({ flags: { local: true, webhookSecret: 'x' }, env: {} })
  t.true(warned.warnings.some(line => line.includes('--webhook-secret ignored without --webhook')))
})

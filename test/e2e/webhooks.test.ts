/**
 * Webhooks as a deployment sees them: `berth serve --local --webhook <receiver> --webhook-secret s`
 * as a child process with one htpasswd user, skopeo pushing, and a receiver of the test's own on
 * 127.0.0.1.
 *
 * 1. One push → exactly one push event: tag, digest, size and user, a valid signature, and the
 *    envelope in distribution's shape (the JSON keys of `notifications/event.go`'s Envelope, Event,
 *    Target (with the embedded Descriptor), RequestRecord, ActorRecord and SourceRecord, with the
 *    types Go's encoding/json needs to decode them).
 * 2. The receiver goes down for a minute: two more tags are pushed; half-way Berth restarts on the
 *    same datadir (the new process adopts the stored deliveries with their retry state) and a
 *    fourth tag is pushed to it; the receiver comes back on the same port after 60 s: the three
 *    events arrive in push order, once each.
 *
 * The retry schedule is the shipped one (DEFAULTS.webhookRetryMin 1 s, ×4 per failure, ±20%: tries
 * about 0, 1, 5, 21 and 85 s after the first failure), so the first try after the receiver returns
 * is the fifth, 68 to 102 s after it went down: the test takes about 90 s. A shorter cap on the
 * backoff would make it faster but is no setting: with the 10 tries a delivery gets, a small cap
 * would give deliveries up within minutes of an outage.
 */
import test from 'ava'
import { createHmac } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import path from 'node:path'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { startBerth } from '../helpers/berth.js'
import { OciLayout } from '../helpers/images.js'
import { freePort, makeTempDir, removeDir } from '../helpers/procs.js'
import { copy, type RegistryAccess } from '../helpers/skopeo.js'

const SECRET = 's'
const EVENTS_TYPE = 'application/vnd.docker.distribution.events.v1+json'

interface Delivery {
  readonly headers: IncomingHttpHeaders
  readonly body: Buffer
  readonly at: number
}

/** A receiver on 127.0.0.1:`port` that answers 200 and appends to `into`; `close()` drops it (the port refuses connections). */
async function listen(port: number, into: Delivery[]): Promise<{ close: () => Promise<void> }> {
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      into.push({ headers: request.headers, body: Buffer.concat(chunks), at: Date.now() })
      response.writeHead(200).end()
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', resolve)
  })
  let closed: Promise<void> | undefined
  return {
    close: () =>
      (closed ??= new Promise<void>(resolve => {
        server.close(() => resolve())
        server.closeAllConnections()
      })),
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, Math.max(0, ms)))
}

async function waitForCount(deliveries: Delivery[], count: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (deliveries.length < count) {
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs / 1000} s for ${count} webhook deliveries, got ${deliveries.length}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

type Json = Record<string, unknown>

/** The one event of a delivery, after checking the envelope, the content type and the signature. */
function eventOf(t: import('ava').ExecutionContext, delivery: Delivery): Json {
  t.is(delivery.headers['content-type'], EVENTS_TYPE)
  const expected = 'sha256=' + createHmac('sha256', SECRET).update(delivery.body).digest('hex')
  t.is(delivery.headers['x-berth-signature-256'], expected, 'signed with the secret over the exact body')
  const envelope = JSON.parse(delivery.body.toString('utf8')) as { events: Json[] }
  t.deepEqual(Object.keys(envelope), ['events'])
  t.is(envelope.events.length, 1)
  return envelope.events[0]!
}

/**
 * The keys and JSON types of distribution's notifications structs (`json:"..."` tags), so that its
 * own types decode the body: a string where Go has `string`, a number for `int64`, an RFC 3339 time
 * for `time.Time`, an object for a struct. Berth sends no key distribution does not define, except
 * `gc` on its own `gc` action.
 */
function assertDistributionShape(t: import('ava').ExecutionContext, event: Json): void {
  const allowed = (record: Json, keys: readonly string[], what: string) =>
    t.deepEqual(
      Object.keys(record).filter(key => !keys.includes(key)),
      [],
      `${what}: only distribution's keys`,
    )
  allowed(event, ['id', 'timestamp', 'action', 'target', 'request', 'actor', 'source'], 'Event')
  t.is(typeof event.id, 'string')
  t.regex(String(event.timestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/, 'timestamp: RFC 3339 (Go time.Time)')
  t.is(typeof event.action, 'string')
  const target = event.target as Json
  // Target: the embedded distribution.Descriptor (mediaType, digest, size, urls, annotations, platform) plus its own fields.
  allowed(
    target,
    ['mediaType', 'digest', 'size', 'urls', 'annotations', 'platform', 'length', 'repository', 'fromRepository', 'url', 'tag', 'references'],
    'Target',
  )
  for (const key of ['mediaType', 'digest', 'repository', 'url', 'tag']) t.is(typeof target[key], 'string', `target.${key}: string`)
  for (const key of ['size', 'length']) t.true(Number.isSafeInteger(target[key]), `target.${key}: int64`)
  const request = event.request as Json
  allowed(request, ['id', 'addr', 'host', 'method', 'useragent'], 'RequestRecord')
  for (const key of ['id', 'addr', 'host', 'method', 'useragent']) t.is(typeof request[key], 'string', `request.${key}: string`)
  const actor = event.actor as Json
  allowed(actor, ['name'], 'ActorRecord')
  t.is(typeof actor.name, 'string')
  const source = event.source as Json
  allowed(source, ['addr', 'instanceID'], 'SourceRecord')
  for (const key of ['addr', 'instanceID']) t.is(typeof source[key], 'string', `source.${key}: string`)
}

test('a push is one signed event with tag, digest, size and user; events queued while the receiver is down survive a restart and arrive in order', async t => {
  const started = Date.now()
  const work = await makeTempDir('e2e-webhooks')
  t.teardown(() => removeDir(work))
  const datadir = path.join(work, 'datadir')
  const htpasswd = path.join(work, 'htpasswd')
  await writeFile(htpasswd, `alice:${hashPassword('wonderland', 5)}\n`)
  const layout = await OciLayout.create(path.join(work, 'layout'))
  const images = [
    await layout.addImage({ tag: 'one', layers: [32 * 1024, 100] }),
    await layout.addImage({ tag: 'two', layers: [16 * 1024] }),
    await layout.addImage({ tag: 'three', layers: [8 * 1024] }),
    await layout.addImage({ tag: 'four', layers: [4 * 1024] }),
  ]

  const receiverPort = await freePort()
  const hook = `http://127.0.0.1:${receiverPort}/hook`
  const deliveries: Delivery[] = []
  let receiver = await listen(receiverPort, deliveries)
  t.teardown(() => receiver.close())
  const args = ['--htpasswd', htpasswd, '--webhook', hook, '--webhook-secret', SECRET]
  let berth = await startBerth({ datadir, args })
  t.teardown(() => berth.stop())
  const dest: RegistryAccess = { tlsVerify: false, creds: 'alice:wonderland' }
  const repository = 'team/app'
  const remote = `docker://${berth.hostPort}/${repository}`

  // 1. One push, one event.
  await copy(layout.ref('one'), `${remote}:one`, { dest })
  await waitForCount(deliveries, 1, 10_000)
  await sleep(1500)
  t.is(deliveries.length, 1, 'exactly one event for one push (none for the blobs)')
  const first = eventOf(t, deliveries[0]!)
  assertDistributionShape(t, first)
  t.is(first.action, 'push')
  t.like(first.target as Json, {
    repository,
    tag: 'one',
    digest: images[0]!.manifest.digest,
    size: images[0]!.manifestBytes.byteLength,
    length: images[0]!.manifestBytes.byteLength,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    url: `http://${berth.hostPort}/v2/${repository}/manifests/${images[0]!.manifest.digest}`,
  })
  t.deepEqual(first.actor, { name: 'alice' })
  t.like(first.request as Json, { method: 'PUT', addr: '127.0.0.1', host: berth.hostPort })
  const firstInstance = (first.source as Json).instanceID
  t.log(`first event after ${Date.now() - started} ms from the start`)

  // 2. Receiver down for a minute: two pushes; a restart half-way; a push to the new process.
  await receiver.close()
  const downAt = Date.now()
  await copy(layout.ref('two'), `${remote}:two`, { dest })
  await copy(layout.ref('three'), `${remote}:three`, { dest })
  await sleep(downAt + 30_000 - Date.now())
  await berth.stop()
  t.regex(berth.output(), /webhook not delivered; trying again/, 'tries failed before the restart')
  berth = await startBerth({ datadir, port: berth.port, args })
  await copy(layout.ref('four'), `${remote}:four`, { dest })
  await sleep(downAt + 60_000 - Date.now())
  t.is(deliveries.length, 1, 'nothing delivered while the receiver was down')
  receiver = await listen(receiverPort, deliveries)
  const upAt = Date.now()
  t.log(`receiver down for ${upAt - downAt} ms (two pushes, a restart after 30 s, a push to the new process)`)
  await waitForCount(deliveries, 4, 60_000)
  t.log(`the queued events arrived ${Date.now() - upAt} ms after the receiver came back (the fifth try)`)
  await sleep(1500)
  t.is(deliveries.length, 4, 'each event once')
  const later = deliveries.slice(1).map(delivery => eventOf(t, delivery))
  for (const event of later) assertDistributionShape(t, event)
  t.deepEqual(
    later.map(event => [event.action, (event.target as Json).tag, (event.target as Json).digest]),
    [
      ['push', 'two', images[1]!.manifest.digest],
      ['push', 'three', images[2]!.manifest.digest],
      ['push', 'four', images[3]!.manifest.digest],
    ],
    'in push order',
  )
  t.true(
    later.every(event => (event.actor as Json).name === 'alice'),
    'the user survives the restart',
  )
  t.not((later[0]!.source as Json).instanceID, undefined)
  t.is((later[0]!.source as Json).instanceID, firstInstance, 'the body is the one rendered before the restart (source: the process that took the push)')
  t.is((later[1]!.source as Json).instanceID, firstInstance)
  t.not((later[2]!.source as Json).instanceID, firstInstance, 'the fourth push was taken by the restarted process')
  t.log(`whole test: ${Date.now() - started} ms`)
})

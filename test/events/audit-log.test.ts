/**
 * The audit trail: the edge and the engine in this process write one JSON line per committed change
 * (push with its tag, a tag moved with where it pointed before, deletes) and per password check
 * (new login, failure), with user, address and request id; the file is 0600, appended to across
 * restarts, and reopened after a rotation.
 */
import test from 'ava'
import { mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { startEdge } from '../../src/edge/edge.js'
import { AuditLog } from '../../src/events/audit-log.js'
import { silentLogger } from '../../src/log.js'
import { createRegistryApp } from '../../src/registry/app.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import { LOCAL_TEST_EDGE } from '../helpers/edge.js'
import { request } from '../helpers/http.js'
import { imageManifest, OCI_MANIFEST } from '../registry/fixtures.js'

const ALICE = { authorization: 'Basic ' + Buffer.from('alice:alice-password').toString('base64') }

async function lines(file: string): Promise<Record<string, unknown>[]> {
  const text = await readFile(file, 'utf8')
  return text
    .split('\n')
    .filter(line => line !== '')
    .map(line => JSON.parse(line) as Record<string, unknown>)
}

test('pushes, tag moves, deletes and logins each write one line with who and from where', async t => {
  const root = await mkdtemp(path.join(tmpdir(), 'berth-audit-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const file = path.join(root, 'logs', 'audit.jsonl')
  const audit = await AuditLog.open(file, silentLogger)
  const htpasswd = path.join(root, 'htpasswd')
  await writeFile(htpasswd, `alice:${hashPassword('alice-password', 4)}\n`)
  const app = createRegistryApp({ driver: new InMemoryDriver(), events: audit })
  const edge = await startEdge({ ...LOCAL_TEST_EDGE, htpasswdPath: htpasswd, engine: app.serve, events: audit })
  t.teardown(async () => {
    await edge.close()
    await app.close()
  })
  const base = edge.urls.local!
  t.is((await request(base, '/v2/', { headers: { authorization: 'Basic ' + Buffer.from('alice:wrong').toString('base64') } })).status, 401)

  // Config and layers go straight to the engine; the manifests, which the events are about, through the edge.
  const engine = http.createServer(app.handle)
  await new Promise<void>(resolve => engine.listen(0, '127.0.0.1', resolve))
  t.teardown(() => engine.close())
  const direct = `http://127.0.0.1:${(engine.address() as AddressInfo).port}`
  const one = await imageManifest(direct, 'team/app')
  const two = await imageManifest(direct, 'team/app')
  const put = (tag: string, manifest: Buffer) =>
    request(base, `/v2/team/app/manifests/${tag}`, { method: 'PUT', headers: { ...ALICE, 'content-type': OCI_MANIFEST }, body: manifest })
  t.is((await put('1.0', one.manifest)).status, 201)
  t.is((await put('1.0', two.manifest)).status, 201)
  t.is((await request(base, '/v2/team/app/manifests/1.0', { method: 'DELETE', headers: ALICE })).status, 202)
  t.is((await request(base, `/v2/team/app/manifests/${one.digest}`, { method: 'DELETE', headers: ALICE })).status, 202)
  await audit.close()

  const written = await lines(file)
  const common = { user: 'alice', address: '127.0.0.1' }
  t.like(written[0], { action: 'login', outcome: 'failed', userName: 'alice', address: '127.0.0.1' })
  t.is(written[0]!.user, undefined, 'a failed login is nobody yet')
  t.like(written[1], { action: 'login', outcome: 'ok', userName: 'alice', ...common })
  t.like(written[2], {
    action: 'push',
    repository: 'team/app',
    tag: '1.0',
    digest: one.digest,
    mediaType: OCI_MANIFEST,
    size: one.manifest.byteLength,
    ...common,
  })
  t.is(written[2]!.previous, undefined)
  t.like(written[3], { action: 'push', tag: '1.0', digest: two.digest, previous: one.digest, ...common })
  t.like(written[4], { action: 'delete', repository: 'team/app', target: 'tag', reference: '1.0', ...common })
  t.like(written[5], { action: 'delete', target: 'manifest', reference: one.digest, ...common })
  t.is(written.length, 6, 'one login line: later requests are answered from the credential cache')
  for (const line of written) t.regex(String(line.id), /^[0-9a-f-]{36}$/)
})

test('the file is 0600, appended across reopenings, and a rotated file is reopened fresh', async t => {
  const root = await mkdtemp(path.join(tmpdir(), 'berth-audit-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const file = path.join(root, 'audit.jsonl')
  await writeFile(file, '{"earlier":true}\n', { mode: 0o644 })
  const audit = await AuditLog.open(file, silentLogger)
  t.is((await stat(file)).mode & 0o777, 0o600, 'an existing file is narrowed to 0600')
  audit.emit({ action: 'delete', repository: 'a/b', target: 'tag', reference: 'v1' }, { user: 'alice', address: '192.0.2.1', requestId: 'r1' })
  await rename(file, file + '.1')
  await audit.reopen()
  audit.emit({ action: 'gc', blobsDeleted: 2, bytesFreed: 2048, manifestsDeleted: 1, seconds: 0.5 })
  await audit.close()
  const rotated = await lines(file + '.1')
  t.is(rotated.length, 2)
  t.like(rotated[1], { action: 'delete', repository: 'a/b', target: 'tag', reference: 'v1', user: 'alice', address: '192.0.2.1', id: 'r1' })
  t.regex(String(rotated[1]!.time), /^\d{4}-\d\d-\d\dT/)
  const fresh = await lines(file)
  t.is(fresh.length, 1)
  t.like(fresh[0], { action: 'gc', blobsDeleted: 2, bytesFreed: 2048 })
  t.is((await stat(file)).mode & 0o777, 0o600)
})

/**
 * Regression (found by the hardening review of crash windows): deleting a manifest by digest
 * removed its revision link first and its tags second. A crash between the two left tags that
 * `tags/list` showed but that no longer resolved (404), and a retried DELETE answered 404 without
 * removing them: a half-visible tag forever. Tags now go first, so a crash at any step leaves a
 * consistent store and the retried DELETE finishes the job.
 *
 * The crash is simulated by a driver whose n-th delete throws (as a killed process would stop).
 */
import test from 'ava'
import { createServer } from 'node:http'
import { createRegistryApp } from '../../src/registry/app.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import { request } from '../helpers/http.js'
import { pushImage } from './common.js'

class CrashingDriver extends InMemoryDriver {
  deletes = 0
  crashAt = Infinity
  override async delete(path: string): Promise<void> {
    if (++this.deletes === this.crashAt) throw new Error('simulated crash')
    return super.delete(path)
  }
}

for (const step of [1, 2, 3]) {
  test(`a manifest DELETE interrupted at delete step ${step} leaves no dangling tag, and the retry completes`, async t => {
    const driver = new CrashingDriver()
    const app = createRegistryApp({ driver })
    const server = createServer(app.handle)
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    t.teardown(() => new Promise<void>(resolve => server.close(() => resolve())))
    const url = `http://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}`
    const image = await pushImage(url, 'del/repo', 'one', [Buffer.from('layer')])
    const manifest = await request(url, '/v2/del/repo/manifests/one')
    t.is(
      (
        await request(url, '/v2/del/repo/manifests/two', {
          method: 'PUT',
          headers: { 'Content-Type': String(manifest.headers['content-type']) },
          body: manifest.body,
        })
      ).status,
      201,
    )

    driver.deletes = 0
    driver.crashAt = step
    const first = await request(url, `/v2/del/repo/manifests/${image.digest}`, { method: 'DELETE' })
    driver.crashAt = Infinity
    // Whatever the interrupted DELETE left: every listed tag resolves.
    const listed = await request(url, '/v2/del/repo/tags/list')
    for (const tag of (listed.json?.tags ?? []) as string[]) {
      t.is(
        (await request(url, `/v2/del/repo/manifests/${tag}`)).status,
        200,
        `tag ${tag} listed but not served after a crash at step ${step} (first DELETE: ${first.status})`,
      )
    }
    // The retry finishes: the manifest and both tags are gone.
    const retry = await request(url, `/v2/del/repo/manifests/${image.digest}`, { method: 'DELETE' })
    t.true(retry.status === 202 || (first.status === 202 && retry.status === 404), `retry: ${retry.status}`)
    t.is((await request(url, `/v2/del/repo/manifests/${image.digest}`)).status, 404)
    const after = await request(url, '/v2/del/repo/tags/list')
    t.deepEqual(after.json?.tags ?? [], [])
  })
}

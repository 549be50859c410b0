/**
 * The pull-through mirror with real parts on loopback: upstream A is Debian's docker-registry
 * (distribution 2.8.2) filled by skopeo, behind a counting proxy (the count of upstream requests
 * is read there, and the proxy plays an upstream that is down or answers 429); upstream B is a
 * second Berth with an htpasswd user (Basic). Berth runs as `berth serve --config` with both
 * mirrors; clients are skopeo and raw HTTP (containerd's `?ns=`).
 */
import test from 'ava'
import { createHash } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { startBerth, type Berth } from '../helpers/berth.js'
import { countingProxy, type CountingProxy } from '../helpers/counting-proxy.js'
import { request } from '../helpers/http.js'
import { OciLayout } from '../helpers/images.js'
import { makeTempDir, removeDir } from '../helpers/procs.js'
import { startRegistry2, type Registry2 } from '../helpers/registry2.js'
import { copy, inspectRaw, type RegistryAccess } from '../helpers/skopeo.js'

const plain: RegistryAccess = { tlsVerify: false }

let work: string
let registry: Registry2
let proxy: CountingProxy
let privateBerth: Berth
let mirror: Berth
let layout: OciLayout
let startupOutput = ''

test.before(async () => {
  work = await makeTempDir('e2e-mirror')
  registry = await startRegistry2({ rootDirectory: path.join(work, 'upstream-a') })
  proxy = await countingProxy(registry.url)
  const htpasswd = path.join(work, 'htpasswd')
  await writeFile(htpasswd, `robot:${hashPassword('pull-secret', 5)}\n`)
  privateBerth = await startBerth({ datadir: path.join(work, 'upstream-b'), args: ['--htpasswd', htpasswd] })
  layout = await OciLayout.create(path.join(work, 'layout'))
  await layout.addImage({ tag: 'app', layers: [2 * 1024 * 1024, 64 * 1024] })
  await layout.addImage({ tag: 'big', layers: [256 * 1024 * 1024] })
  await layout.addIndex({
    tag: 'multi',
    platforms: [
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux', variant: 'v8' },
    ],
    layers: [128 * 1024],
  })
  await layout.addImage({ tag: 'other', layers: [32 * 1024] })
  for (const [tag, name] of [
    ['app', 'library/app:1'],
    ['app', 'library/app:2'],
    ['big', 'library/big:1'],
    ['other', 'library/other:1'],
  ] as const) {
    await copy(layout.ref(tag), `docker://${registry.hostPort}/${name}`, { dest: plain })
  }
  await copy(layout.ref('multi'), `docker://${registry.hostPort}/library/multi:latest`, { all: true, dest: plain })
  await copy(layout.ref('app'), `docker://${privateBerth.hostPort}/team/app:1`, { dest: { tlsVerify: false, creds: 'robot:pull-secret' } })
  const config = path.join(work, 'berth.yml')
  await writeFile(
    config,
    [
      'mirror:',
      `  - hub.test=${proxy.url}`,
      '  - prefix: private.test',
      `    url: ${privateBerth.url}`,
      '    username: robot',
      '    password: pull-secret',
      'mirror-default: hub.test',
      'mirror-tag-ttl: 1s',
      '',
    ].join('\n'),
  )
  mirror = await startBerth({ datadir: path.join(work, 'mirror'), args: ['--config', config] })
  startupOutput = mirror.output()
})

test.after.always(async () => {
  await Promise.allSettled([mirror?.stop(), privateBerth?.stop(), registry?.stop(), proxy?.close()])
  if (work) await removeDir(work)
})

test.serial('skopeo copies through the prefix: manifests and index byte for byte as upstream, digests identical', async t => {
  for (const name of ['library/app:1', 'library/multi:latest']) {
    const direct = await inspectRaw(`docker://${registry.hostPort}/${name}`, plain)
    const mirrored = await inspectRaw(`docker://${mirror.hostPort}/hub.test/${name}`, plain)
    t.deepEqual(mirrored, direct, name)
  }
  const out = path.join(work, 'pulled')
  await copy(`docker://${mirror.hostPort}/hub.test/library/app:1`, `oci:${out}:app`, { src: plain })
  await copy(`docker://${mirror.hostPort}/hub.test/library/multi:latest`, `oci:${out}:multi`, { all: true, src: plain })
  t.pass()
  t.regex(startupOutput, /mirror {6}localhost:\d+\/hub\.test\/<name> and \?ns=hub\.test, and names that are no repository here from http/)
})

test.serial('20 clients of one uncached 256 MiB layer: one upstream blob GET', async t => {
  const manifest = JSON.parse((await inspectRaw(`docker://${registry.hostPort}/library/big:1`, plain)).toString()) as { layers: { digest: string }[] }
  const layer = manifest.layers[0]!.digest
  await request(mirror.url, `/v2/hub.test/library/big/manifests/1`)
  const started = Date.now()
  const digests = await Promise.all(
    Array.from(
      { length: 20 },
      () =>
        new Promise<string>((resolve, reject) => {
          http
            .get(`${mirror.url}/v2/hub.test/library/big/blobs/${layer}`, { agent: false }, response => {
              const hash = createHash('sha256')
              response.on('data', chunk => hash.update(chunk as Buffer))
              response.on('end', () => resolve(`sha256:${hash.digest('hex')}`))
              response.on('error', reject)
            })
            .on('error', reject)
        }),
    ),
  )
  const ms = Date.now() - started
  for (const digest of digests) t.is(digest, layer)
  t.is(proxy.count('GET', `/blobs/${layer}`), 1)
  // Peak resident memory of the whole Berth process (VmHWM): bounded by the clients' queues (20 × 8 MiB) and
  // buffers, never by the layer (20 × 256 MiB would be 5 GiB; clients detached to storage once held what
  // they had read there). Quiet runs peak near 120 MiB, busy ones near 200 MiB.
  const status = mirror.pid === undefined ? '' : await readFile(`/proc/${mirror.pid}/status`, 'utf8').catch(() => '')
  const peak = /VmHWM:\s+(\d+) kB/.exec(status)?.[1]
  if (peak !== undefined) t.true(Number(peak) < 384 * 1024, `peak RSS ${peak} kB`)
  t.log(`20 × 256 MiB through the mirror in ${ms} ms, upstream blob GETs: ${proxy.count('GET', `/blobs/${layer}`)}, Berth peak RSS ${peak ?? '?'} kB`)
})

test.serial("containerd's ?ns= and the default prefix (docker's registry-mirrors) reach the upstream", async t => {
  const direct = await request(registry.url, '/v2/library/other/manifests/1', { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } })
  const byNs = await request(mirror.url, '/v2/library/other/manifests/1?ns=hub.test', { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } })
  t.is(byNs.status, 200)
  t.deepEqual(byNs.body, direct.body)
  const byDefault = await inspectRaw(`docker://${mirror.hostPort}/library/app:2`, plain)
  t.deepEqual(byDefault, await inspectRaw(`docker://${registry.hostPort}/library/app:2`, plain))
})

test.serial('an upstream with Basic auth is read with the credentials from the config file', async t => {
  const direct = await inspectRaw(`docker://${privateBerth.hostPort}/team/app:1`, { tlsVerify: false, creds: 'robot:pull-secret' })
  t.deepEqual(await inspectRaw(`docker://${mirror.hostPort}/private.test/team/app:1`, plain), direct)
  await copy(`docker://${mirror.hostPort}/private.test/team/app:1`, `oci:${path.join(work, 'pulled-b')}:app`, { src: plain })
})

test.serial('a push into a mirror prefix is refused with a clear error', async t => {
  const error = await t.throwsAsync(copy(layout.ref('other'), `docker://${mirror.hostPort}/hub.test/library/mine:1`, { dest: plain }))
  t.regex(error.message, /hub\.test\/ is a read-only mirror of http:\/\/127\.0\.0\.1:\d+/)
  await copy(layout.ref('other'), `docker://${mirror.hostPort}/local/mine:1`, { dest: plain })
})

test.serial('upstream answering 429, then stopped: cached tags still pull, an uncached one fails clearly', async t => {
  await new Promise(resolve => setTimeout(resolve, 1100)) // past the 1 s tag TTL
  proxy.mode = '429'
  await copy(`docker://${mirror.hostPort}/hub.test/library/app:1`, `oci:${path.join(work, 'stale-429')}:app`, { src: plain })
  t.true(proxy.count('HEAD', '/manifests/1') >= 2, 'the tag was checked and the 429 seen')
  proxy.mode = 'ok'
  await registry.stop()
  await new Promise(resolve => setTimeout(resolve, 1100))
  await copy(`docker://${mirror.hostPort}/hub.test/library/app:1`, `oci:${path.join(work, 'stale-down')}:app`, { src: plain })
  await copy(`docker://${mirror.hostPort}/hub.test/library/multi:latest`, `oci:${path.join(work, 'stale-down')}:multi`, { all: true, src: plain })
  t.regex(mirror.output(), /mirror: upstream unavailable, serving the cached tag/)
  const miss = await request(mirror.url, '/v2/hub.test/library/never/manifests/1')
  t.is(miss.status, 502)
  t.regex(miss.json.errors[0].message, /upstream http:\/\/127\.0\.0\.1:\d+ is unreachable or failed: .*not cached here/)
  const error = await t.throwsAsync(inspectRaw(`docker://${mirror.hostPort}/hub.test/library/never:1`, plain))
  t.regex(error.message, /502 Bad Gateway/, 'skopeo shows the status only; the body above says why')
})

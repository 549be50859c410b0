/**
 * Real clients through Berth's pull-through mirror, as the README sets them up: docker (a private
 * dockerd 20.10 with `registry-mirrors` in its daemon.json), containerd's `ctr` with a `hosts.toml`
 * mirror entry (it sends `?ns=docker.io`), and podman with the path prefix. The upstream is Debian's
 * docker-registry on loopback standing in for Docker Hub (there is no internet here, so a pull that
 * did not go through Berth fails). Every client ends with the upstream's manifest digest.
 */
import test from 'ava'
import { createHash } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { MAIN, REPO_ROOT, startBerth, type Berth } from '../helpers/berth.js'
import { request } from '../helpers/http.js'
import { startDockerd, type Dockerd } from '../helpers/dockerd.js'
import { OciLayout } from '../helpers/images.js'
import { createPodman } from '../helpers/podman.js'
import { makeTempDir, removeDir, run } from '../helpers/procs.js'
import { startRegistry2, type Registry2 } from '../helpers/registry2.js'
import { copy, inspectRaw } from '../helpers/skopeo.js'

const plain = { tlsVerify: false }

let work: string
let registry: Registry2
let berth: Berth
let dockerd: Dockerd | undefined
/** Tag → the upstream's manifest digest. */
const digests = new Map<string, string>()

test.before(async () => {
  work = await makeTempDir('e2e-mirror-clients')
  registry = await startRegistry2({ rootDirectory: path.join(work, 'upstream') })
  const layout = await OciLayout.create(path.join(work, 'layout'))
  await layout.addImage({ tag: 'app', layers: [1024 * 1024, 32 * 1024] })
  for (const tag of ['1', '2', '3']) {
    await copy(layout.ref('app'), `docker://${registry.hostPort}/library/app:${tag}`, { dest: plain })
    const raw = await inspectRaw(`docker://${registry.hostPort}/library/app:${tag}`, plain)
    digests.set(tag, `sha256:${createHash('sha256').update(raw).digest('hex')}`)
  }
  berth = await startBerth({
    datadir: path.join(work, 'mirror'),
    // other.test: a second prefix (the same upstream), to tell ?ns= routing from the default prefix.
    args: ['--mirror', `docker.io=${registry.url}`, '--mirror', `other.test=${registry.url}`, '--mirror-default', 'docker.io', '--mirror-max-size', '1g'],
  })
})

test.after.always(async () => {
  await Promise.allSettled([dockerd?.stop(), berth?.stop(), registry?.stop()])
  if (work) await removeDir(work)
})

test.serial("docker: registry-mirrors with Berth's http URL; `docker pull app:1` comes through the default mirror", async t => {
  dockerd = await startDockerd({ baseImage: false, daemonConfig: { 'registry-mirrors': [berth.url] } })
  const info = await dockerd.docker(['info', '--format', '{{json .RegistryConfig.Mirrors}}'])
  t.deepEqual(JSON.parse(info.stdout) as string[], [`${berth.url}/`])
  await dockerd.docker(['pull', 'app:1'], { timeoutMs: 120_000 })
  const image = await dockerd.inspectImage('app:1')
  t.deepEqual(image.RepoDigests, [`app@${digests.get('1')!}`])
  t.regex(berth.output(), /method=HEAD path=\/v2\/library\/app\/manifests\/1 status=200/, 'dockerd asked Berth, not the internet')
})

test.serial('containerd ctr: hosts.toml mirrors for docker.io and other.test; Berth routes by the ?ns= ctr sends', async t => {
  if (dockerd === undefined) dockerd = await startDockerd({ baseImage: false })
  const hostsDir = path.join(work, 'certs.d')
  for (const server of ['docker.io', 'other.test']) {
    await mkdir(path.join(hostsDir, server), { recursive: true })
    await writeFile(path.join(hostsDir, server, 'hosts.toml'), `[host."${berth.url}"]\n  capabilities = ["pull", "resolve"]\n`)
  }
  const ctr = (args: string[]) =>
    dockerd!.inNamespace('ctr', ['-a', path.join(dockerd!.dir, 'exec', 'containerd', 'containerd.sock'), '-n', 'berth-mirror', ...args], { timeoutMs: 120_000 })
  await ctr(['images', 'pull', '--hosts-dir', hostsDir, 'docker.io/library/app:2'])
  // The default prefix would store this under docker.io/ too: other.test/ shows Berth followed ?ns=other.test.
  await ctr(['images', 'pull', '--hosts-dir', hostsDir, 'other.test/library/app:2'])
  const listed = (await ctr(['images', 'ls'])).stdout.split('\n')
  for (const name of ['docker.io/library/app:2', 'other.test/library/app:2']) {
    const line = listed.find(row => row.startsWith(`${name} `))
    t.truthy(line, listed.join('\n'))
    t.true(line!.includes(digests.get('2')!), line)
  }
  const catalog = (await request(berth.url, '/v2/_catalog')).json as { repositories: string[] }
  t.true(catalog.repositories.includes('other.test/library/app'), catalog.repositories.join(' '))
  t.regex(berth.output(), /method=GET path=\/v2\/library\/app\/manifests\/sha256:[0-9a-f]{64} status=200/)
})

test.serial('podman: the path prefix 127.0.0.1:<port>/docker.io/library/app', async t => {
  const podman = await createPodman()
  try {
    await podman.pull(`${berth.hostPort}/docker.io/library/app:3`, plain, { timeoutMs: 120_000 })
    const inspected = await podman.podman(['image', 'inspect', '--format', '{{.Digest}}', `${berth.hostPort}/docker.io/library/app:3`])
    t.is(inspected.stdout.trim(), digests.get('3')!)
  } finally {
    await podman.cleanup()
  }
  // berth du tells cached repositories and bytes from pushed ones.
  await copy(`docker://${registry.hostPort}/library/app:1`, `docker://${berth.hostPort}/team/app:1`, { src: plain, dest: plain })
  const du = await run(process.execPath, ['--import', 'tsx', MAIN, 'du', '--datadir', berth.datadir], { cwd: REPO_ROOT, timeoutMs: 120_000 })
  t.log(du.stdout)
  t.regex(du.stdout, /docker\.io\/library\/app\s+cached\s/)
  t.regex(du.stdout, /team\/app\s+pushed\s/)
  t.regex(du.stdout, /^cached: .* only the 2 pull-through cache repositories use/m)
  t.regex(du.stdout, /^pushed: .* shared with the cache/m)
})

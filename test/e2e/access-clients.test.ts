/**
 * Access rules with the real clients other than docker (test/e2e/access-docker.test.ts has docker):
 * skopeo, podman and containerd's `ctr` (its own resolver, parallel requests, the token flow with
 * POST first), against `berth serve --local --access <file>`. Each client runs the same matrix:
 * anonymous pull of `public/*` works and anonymous push is refused; a user pushes where the rules
 * let them and is denied elsewhere; a tag under `release/*` never moves (push without overwrite).
 */
import test, { type ExecutionContext } from 'ava'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { startBerth, type Berth } from '../helpers/berth.js'
import { startDockerd, type Dockerd } from '../helpers/dockerd.js'
import { OciLayout, type BuiltImage } from '../helpers/images.js'
import { createPodman, type Podman } from '../helpers/podman.js'
import { makeTempDir, removeDir, type RunResult } from '../helpers/procs.js'
import { copy, inspect, skopeo, type RegistryAccess } from '../helpers/skopeo.js'

const ACCESS = `
groups:
  devs: [alice, bob]
rules:
  - repository: "public/**"       # alice publishes; everyone else only pulls (next rule)
    who: [alice]
    can: [pull, push, overwrite]
  - repository: "public/**"
    who: [anonymous, authenticated]
    can: [pull]
  - repository: "alice/**"
    who: [alice]
    can: [pull, push, overwrite, delete]
  - repository: "release/**"
    who: [group:devs]
    can: [pull, push, delete]     # no overwrite: a release tag never moves
  - repository: "**"
    who: [authenticated]
    can: [pull]
`
const PASSWORDS = { alice: 'alice-secret', bob: 'bob-secret' } as const
const anonymous: RegistryAccess = { tlsVerify: false }
const as = (user: keyof typeof PASSWORDS): RegistryAccess => ({ tlsVerify: false, creds: `${user}:${PASSWORDS[user]}` })

let work: string | undefined
let berth: Berth | undefined
let layout: OciLayout | undefined
let images: BuiltImage[] = []

test.before(async () => {
  work = await makeTempDir('e2e-access-clients')
  const datadir = path.join(work, 'datadir')
  const access = path.join(work, 'access.yml')
  await writeFile(access, ACCESS)
  layout = await OciLayout.create(path.join(work, 'layout'))
  images = [
    await layout.addImage({ tag: 'one', layers: [64 * 1024, 100] }),
    await layout.addImage({ tag: 'two', layers: [32 * 1024] }),
    await layout.addImage({ tag: 'three', layers: [1000] }),
  ]
  const htpasswd = path.join(work, 'htpasswd')
  await writeFile(
    htpasswd,
    Object.entries(PASSWORDS).map(([user, password]) => `${user}:${hashPassword(password, 5)}\n`),
  )
  berth = await startBerth({ datadir, args: ['--access', access, '--htpasswd', htpasswd, '--certs', path.join(work, 'certs')] })
  // What every client then pulls anonymously.
  await copy(layout.ref('one'), `docker://${berth.hostPort}/public/app:v1`, { dest: as('alice') })
})

test.after.always(async () => {
  await berth?.stop()
  if (work) await removeDir(work)
})

function env(): { berth: Berth; layout: OciLayout; work: string } {
  if (!berth || !layout || !work) throw new Error('setup failed')
  return { berth, layout, work }
}

function failed(t: ExecutionContext, result: RunResult, pattern: RegExp, what: string): void {
  t.not(result.exitCode, 0, `${what} should fail`)
  t.regex(result.stderr + result.stdout, pattern, what)
}

test.serial('skopeo: anonymous pull of public/*, denied push, immutable release tags, delete', async t => {
  const { berth, layout } = env()
  const host = berth.hostPort
  t.is((await inspect(`docker://${host}/public/app:v1`, anonymous)).Digest, images[0]!.manifest.digest)
  const tags = await skopeo(['list-tags', '--tls-verify=false', `docker://${host}/public/app`])
  t.deepEqual(JSON.parse(tags.stdout).Tags, ['v1'])

  failed(
    t,
    await copy(layout.ref('two'), `docker://${host}/public/app:v2`, { dest: anonymous }, { allowFailure: true }),
    /authentication required|unauthorized/i,
    'anonymous push',
  )
  failed(
    t,
    await skopeo(['inspect', '--tls-verify=false', `docker://${host}/alice/app:v1`], { allowFailure: true }),
    /authentication required|unauthorized/i,
    'anonymous pull of a private repository',
  )

  await copy(layout.ref('two'), `docker://${host}/alice/app:v1`, { dest: as('alice') })
  t.is((await inspect(`docker://${host}/alice/app:v1`, as('bob'))).Digest, images[1]!.manifest.digest, 'every user may pull (last rule)')
  failed(t, await copy(layout.ref('two'), `docker://${host}/bob/app:v1`, { dest: as('alice') }, { allowFailure: true }), /denied/i, 'alice pushing to bob/')

  await copy(layout.ref('one'), `docker://${host}/release/app:1.0`, { dest: as('bob') })
  failed(
    t,
    await copy(layout.ref('three'), `docker://${host}/release/app:1.0`, { dest: as('alice') }, { allowFailure: true }),
    /denied/i,
    'moving release/app:1.0',
  )
  t.is((await inspect(`docker://${host}/release/app:1.0`, as('bob'))).Digest, images[0]!.manifest.digest, 'the release tag did not move')
  await copy(layout.ref('three'), `docker://${host}/release/app:1.1`, { dest: as('alice') })
  await copy(layout.ref('one'), `docker://${host}/release/app:1.0`, { dest: as('alice') }) // the same image again is not a move

  failed(
    t,
    await skopeo(['delete', '--tls-verify=false', '--creds', `bob:${PASSWORDS.bob}`, `docker://${host}/alice/app:v1`], { allowFailure: true }),
    /denied/i,
    'bob deleting alice/app',
  )
  await skopeo(['delete', '--tls-verify=false', '--creds', `alice:${PASSWORDS.alice}`, `docker://${host}/alice/app:v1`])
  failed(
    t,
    await skopeo(['inspect', '--tls-verify=false', '--creds', `alice:${PASSWORDS.alice}`, `docker://${host}/alice/app:v1`], { allowFailure: true }),
    /manifest unknown/i,
    'deleted',
  )
})

test.serial('podman: anonymous pull, refused push; login, push where allowed, denied elsewhere; logout', async t => {
  const { berth } = env()
  const host = berth.hostPort
  const podman: Podman = await createPodman()
  try {
    await podman.pull(`${host}/public/app:v1`, anonymous)
    t.is(await podman.imageId(`${host}/public/app:v1`), images[0]!.config.digest.slice('sha256:'.length))
    await podman.podman(['tag', `${host}/public/app:v1`, `${host}/public/app:podman`, `${host}/bob/podman:v1`, `${host}/alice/podman:v1`])
    failed(
      t,
      await podman.push(`${host}/public/app:podman`, `docker://${host}/public/app:podman`, anonymous, { allowFailure: true }),
      /authentication required|unauthorized/i,
      'anonymous podman push',
    )

    const wrong = await podman.login(host, 'alice', 'not-her-password', anonymous, { allowFailure: true })
    failed(t, wrong, /invalid username\/password/i, 'podman login with a wrong password')
    await podman.login(host, 'alice', PASSWORDS.alice, anonymous)
    await podman.push(`${host}/alice/podman:v1`, `docker://${host}/alice/podman:v1`, anonymous)
    failed(
      t,
      await podman.push(`${host}/bob/podman:v1`, `docker://${host}/bob/podman:v1`, anonymous, { allowFailure: true }),
      /denied/i,
      'alice pushing to bob/',
    )
    await podman.podman(['logout', '--authfile', path.join(podman.dir, 'auth.json'), host])
    failed(t, await podman.pull(`${host}/alice/podman:v1`, anonymous, { allowFailure: true }), /authentication required|unauthorized/i, 'pull after logout')
  } finally {
    await podman.cleanup()
  }
})

test.serial('ctr (containerd): anonymous pull, push with --user where allowed, denied elsewhere, release tags immutable', async t => {
  const { berth } = env()
  const host = berth.hostPort
  const dockerd: Dockerd = await startDockerd({ baseImage: false })
  const ctr = (args: string[], allowFailure = false) =>
    dockerd.inNamespace('ctr', ['-a', path.join(dockerd.dir, 'exec', 'containerd', 'containerd.sock'), '-n', 'berth-test', ...args], {
      allowFailure,
      timeoutMs: 120_000,
    })
  try {
    await ctr(['images', 'pull', '--plain-http', `${host}/public/app:v1`])
    await ctr(['images', 'tag', `${host}/public/app:v1`, `${host}/alice/ctr:v1`])
    await ctr(['images', 'tag', `${host}/public/app:v1`, `${host}/bob/ctr:v1`])
    await ctr(['images', 'tag', `${host}/public/app:v1`, `${host}/release/app:1.1`])
    failed(t, await ctr(['images', 'push', '--plain-http', `${host}/alice/ctr:v1`], true), /unauthorized|authorization/i, 'anonymous ctr push')
    await ctr(['images', 'push', '--plain-http', '--user', `alice:${PASSWORDS.alice}`, `${host}/alice/ctr:v1`])
    t.is((await inspect(`docker://${host}/alice/ctr:v1`, as('alice'))).Digest, images[0]!.manifest.digest)
    failed(
      t,
      await ctr(['images', 'push', '--plain-http', '--user', `alice:${PASSWORDS.alice}`, `${host}/bob/ctr:v1`], true),
      /denied|forbidden|403/i,
      'alice pushing to bob/',
    )
    // release/app:1.1 was pushed by skopeo with image three; this is image one under the same tag.
    failed(
      t,
      await ctr(['images', 'push', '--plain-http', '--user', `bob:${PASSWORDS.bob}`, `${host}/release/app:1.1`], true),
      /denied|forbidden|403/i,
      'moving release/app:1.1',
    )
    t.is((await inspect(`docker://${host}/release/app:1.1`, as('bob'))).Digest, images[2]!.manifest.digest, 'the release tag did not move')
    await ctr(['images', 'rm', `${host}/alice/ctr:v1`])
    await ctr(['images', 'pull', '--plain-http', '--user', `bob:${PASSWORDS.bob}`, `${host}/alice/ctr:v1`])
  } finally {
    await dockerd.stop()
  }
})

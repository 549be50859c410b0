/**
 * Access rules (issue #14) with the real docker CLI: Berth in https mode, exactly as
 * https-docker.test.ts runs it (a test CA, `berth.test` resolving to ::1 in a private dockerd, an
 * htpasswd file written by Apache's `htpasswd -Bbn`), plus `--access <file>`. Docker then talks to
 * Berth's own token realm (`/token`): anonymous tokens without a login, Basic at the realm after
 * `docker login`.
 *
 * The access file is the issue's example with a CI user, and one rule more at the top: alice may
 * push `public/**`, so the test can seed `public/app` with docker itself (as alice, then logs out).
 *
 * The matrix, in order (serial: one docker config, one login at a time):
 *   anonymous: pull public/app works, push public/app refused
 *   docker login alice: a wrong password refused first; push alice/app works, push bob/app denied;
 *     release/app:1.0 pushed, a different image as release/app:1.0 refused (no overwrite), 1.1 works
 *   docker login ci: push ci/x works, push alice/y denied
 *   docker logout: anonymous again (pull public/app works, pull alice/app refused)
 * and, on a second instance whose rules give bob nothing at all, `docker login` as bob still works.
 */
import test from 'ava'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { startBerth, type Berth } from '../helpers/berth.js'
import { BASE_IMAGE, DOCKER_TLS_NAME, startDockerd, type Dockerd } from '../helpers/dockerd.js'
import { makeTempDir, removeDir, run, type RunResult } from '../helpers/procs.js'
import { createTestPki, type TestPki } from '../helpers/tls.js'

const PASSWORDS = { alice: 'alice-secret', bob: 'bob-secret', ci: 'ci-secret' } as const
type User = keyof typeof PASSWORDS

const ACCESS_FILE = `groups:
  devs: [alice, bob]
rules:
  # Only so that the test can seed public/app with docker as alice; not in the issue's example.
  - repository: "public/**"
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
    can: [pull, push]
  - repository: "ci/**"
    who: [ci]
    can: [pull, push, overwrite]
  - repository: "**"
    who: [authenticated]
    can: [pull]
`

/** The second instance: bob is a valid user, but no rule names him (nor authenticated). */
const NOTHING_FOR_BOB = `rules:
  - repository: "alice/**"
    who: [alice]
    can: [pull, push]
`

/** What docker 20.10 prints when the registry answers 403 DENIED (the spec's message). */
const DENIED = 'denied: requested access to the resource is denied'

let work: string | undefined
let dockerd: Dockerd | undefined
let berth: Berth | undefined
let bare: Berth | undefined
let pki: TestPki | undefined

test.before(async () => {
  work = await makeTempDir('e2e-access-docker')
  const dir = work
  const htpasswdFile = path.join(dir, 'htpasswd')
  const [startedDockerd, createdPki] = await Promise.all([
    startDockerd(),
    createTestPki(path.join(dir, 'pki'), [DOCKER_TLS_NAME]),
    (async () => {
      let text = ''
      for (const [user, password] of Object.entries(PASSWORDS)) text += (await run('htpasswd', ['-Bbn', user, password])).stdout.trim() + '\n'
      await writeFile(htpasswdFile, text)
      await writeFile(path.join(dir, 'access.yml'), ACCESS_FILE)
      await writeFile(path.join(dir, 'nothing-for-bob.yml'), NOTHING_FOR_BOB)
    })(),
  ])
  dockerd = startedDockerd
  pki = createdPki
  // --certs of their own: the token signing keys go there (the default ./certs is the repository's).
  const start = (name: string, accessFile: string) =>
    startBerth({
      datadir: path.join(dir, name, 'datadir'),
      host: '::1',
      https: { domain: DOCKER_TLS_NAME, certFile: createdPki.certPath, keyFile: createdPki.keyPath, htpasswd: htpasswdFile },
      args: ['--access', accessFile, '--certs', path.join(dir, name, 'certs')],
    })
  const [main, second] = await Promise.allSettled([start('main', path.join(dir, 'access.yml')), start('bare', path.join(dir, 'nothing-for-bob.yml'))])
  if (main.status === 'fulfilled') berth = main.value
  if (second.status === 'fulfilled') bare = second.value
  if (main.status === 'rejected') throw main.reason
  if (second.status === 'rejected') throw second.reason
  await dockerd.addCa(main.value.hostPort, createdPki.ca.cert)
  await dockerd.addCa(second.value.hostPort, createdPki.ca.cert)
})

/** A failing test shows Berth's last requests (status, user), to tell a client's mistake from Berth's. */
test.afterEach.always(t => {
  if (!t.passed && berth)
    t.log(
      berth
        .output()
        .split('\n')
        .filter(l => / request |WARN|ERROR/.test(l))
        .slice(-40)
        .join('\n'),
    )
})

test.after.always(async () => {
  await Promise.allSettled([dockerd?.stop(), berth?.stop(), bare?.stop()])
  if (work) await removeDir(work)
})

function env(): { dockerd: Dockerd; berth: Berth; bare: Berth } {
  if (!dockerd || !berth || !bare || !pki) throw new Error('setup failed')
  return { dockerd, berth, bare }
}

function login(registry: string, user: User, password: string = PASSWORDS[user]): Promise<RunResult> {
  return env().dockerd.docker(['login', '--username', user, '--password-stdin', registry], { input: password, allowFailure: true })
}

function docker(args: string[]): Promise<RunResult> {
  return env().dockerd.docker(args, { allowFailure: true })
}

/** stdout and stderr together: docker prints push errors on stderr, some progress lines on stdout. */
function said(result: RunResult): string {
  return `${result.stdout}\n${result.stderr}`
}

/** Pushes `source` as `<host>/<repository>`; the result, for assertions on failure. */
async function pushAs(source: string, repository: string): Promise<RunResult> {
  const reference = `${env().berth.hostPort}/${repository}`
  await env().dockerd.docker(['tag', source, reference])
  return docker(['push', reference])
}

test.serial('seed: alice pushes public/app (the extra first rule), then logs out', async t => {
  const { berth } = env()
  t.is((await login(berth.hostPort, 'alice')).exitCode, 0)
  const push = await pushAs(BASE_IMAGE, 'public/app')
  t.is(push.exitCode, 0, said(push))
  t.regex(push.stdout, /digest: sha256:[0-9a-f]{64}/)
  t.is((await docker(['logout', berth.hostPort])).exitCode, 0)
  await env().dockerd.docker(['rmi', `${berth.hostPort}/public/app`])
})

test.serial('without a login: docker pull public/app works, docker push to it is refused', async t => {
  const { dockerd, berth } = env()
  const reference = `${berth.hostPort}/public/app`
  const pull = await docker(['pull', reference])
  t.is(pull.exitCode, 0, said(pull))
  t.is((await dockerd.inspectImage(reference)).Id, (await dockerd.inspectImage(BASE_IMAGE)).Id)

  const push = await docker(['push', reference])
  t.log('anonymous push:', push.stderr.trim())
  t.not(push.exitCode, 0)
  // The anonymous token holds pull only: the manifest PUT gets 401 with error="insufficient_scope"
  // (docker reads it as DENIED) and the body's UNAUTHORIZED, and docker prints both, as for an
  // anonymous push to any registry with a token service.
  t.regex(push.stderr, /^errors:\ndenied: requested access to the resource is denied\nunauthorized\n/)
  t.notRegex(said(push), /Pushed|digest: sha256/)
})

test.serial('docker login as alice: a wrong password is refused, the right one accepted', async t => {
  const { berth } = env()
  const bad = await login(berth.hostPort, 'alice', 'not-her-password')
  t.log('wrong password:', bad.stderr.trim())
  t.not(bad.exitCode, 0)
  t.regex(bad.stderr, /unauthorized: incorrect username or password/)

  const good = await login(berth.hostPort, 'alice')
  t.is(good.exitCode, 0, good.stderr)
  t.regex(good.stdout, /Login Succeeded/)
})

test.serial('alice: push to alice/app works, push to bob/app is denied', async t => {
  const own = await pushAs(BASE_IMAGE, 'alice/app')
  t.is(own.exitCode, 0, said(own))
  t.regex(own.stdout, /latest: digest: sha256:[0-9a-f]{64}/)

  const other = await pushAs(BASE_IMAGE, 'bob/app')
  t.log('alice pushing bob/app:', other.stderr.trim())
  t.not(other.exitCode, 0)
  t.true(other.stderr.includes(DENIED), said(other))
})

test.serial('alice: release/app:1.0 pushed once never moves (no overwrite); a new tag 1.1 works', async t => {
  const { dockerd, berth } = env()
  const first = await pushAs(BASE_IMAGE, 'release/app:1.0')
  t.is(first.exitCode, 0, said(first))
  const digest = /1\.0: digest: (sha256:[0-9a-f]{64})/.exec(first.stdout)?.[1]
  t.truthy(digest, first.stdout)

  // Pushing the same image again moves nothing: allowed.
  const again = await docker(['push', `${berth.hostPort}/release/app:1.0`])
  t.is(again.exitCode, 0, said(again))

  await dockerd.importImage('other:latest', { hello: 'another image\n', 'etc/app-release': 'app 2\n' })
  const moved = await pushAs('other:latest', 'release/app:1.0')
  t.log('moving release/app:1.0:', moved.stderr.trim())
  t.not(moved.exitCode, 0)
  t.regex(moved.stderr, /denied: tag 1\.0 of release\/app already points at sha256:[0-9a-f]{64}/)
  t.true(moved.stderr.includes(digest ?? '-'), 'names the digest the tag keeps')

  const newTag = await pushAs('other:latest', 'release/app:1.1')
  t.is(newTag.exitCode, 0, said(newTag))
  t.regex(newTag.stdout, /1\.1: digest: sha256:[0-9a-f]{64}/)

  // The tag still points at the first image.
  await dockerd.docker(['rmi', `${berth.hostPort}/release/app:1.0`])
  const pull = await docker(['pull', `${berth.hostPort}/release/app:1.0`])
  t.is(pull.exitCode, 0, said(pull))
  t.is((await dockerd.inspectImage(`${berth.hostPort}/release/app:1.0`)).Id, (await dockerd.inspectImage(BASE_IMAGE)).Id)
})

test.serial('ci: push to ci/x works, push to alice/y is denied', async t => {
  const { berth } = env()
  const good = await login(berth.hostPort, 'ci')
  t.is(good.exitCode, 0, good.stderr)

  const own = await pushAs(BASE_IMAGE, 'ci/x')
  t.is(own.exitCode, 0, said(own))
  t.regex(own.stdout, /latest: digest: sha256:[0-9a-f]{64}/)

  const other = await pushAs(BASE_IMAGE, 'alice/y')
  t.not(other.exitCode, 0)
  t.true(other.stderr.includes(DENIED), said(other))

  // ci may pull anything (the last rule) but not push it.
  await env().dockerd.docker(['rmi', `${berth.hostPort}/alice/app`])
  const pull = await docker(['pull', `${berth.hostPort}/alice/app`])
  t.is(pull.exitCode, 0, said(pull))
})

test.serial('after docker logout: anonymous again, public/app pulls, alice/app is refused', async t => {
  const { dockerd, berth } = env()
  t.is((await docker(['logout', berth.hostPort])).exitCode, 0)
  await dockerd.docker(['rmi', `${berth.hostPort}/public/app`, `${berth.hostPort}/alice/app`])

  const pub = await docker(['pull', `${berth.hostPort}/public/app`])
  t.is(pub.exitCode, 0, said(pub))

  const own = await docker(['pull', `${berth.hostPort}/alice/app`])
  t.log('anonymous pull of alice/app:', own.stderr.trim())
  t.not(own.exitCode, 0)
  t.regex(own.stderr, /pull access denied for berth\.test:\d+\/alice\/app, repository does not exist or may require 'docker login'/)
  await t.throwsAsync(dockerd.inspectImage(`${berth.hostPort}/alice/app`))

  const push = await pushAs(BASE_IMAGE, 'alice/anon')
  t.not(push.exitCode, 0)
  t.true(push.stderr.includes(DENIED), said(push))
  t.notRegex(said(push), /Pushed|digest: sha256/)
})

test.serial('docker login works when the rules give the user nothing on any repository', async t => {
  const { bare } = env()
  const good = await login(bare.hostPort, 'bob')
  t.is(good.exitCode, 0, good.stderr)
  t.regex(good.stdout, /Login Succeeded/)
  const bad = await login(bare.hostPort, 'bob', 'wrong')
  t.not(bad.exitCode, 0)
  t.regex(bad.stderr, /unauthorized: incorrect username or password/)

  // Logged in, and still refused everywhere: 403, not a login prompt.
  const pull = await docker(['pull', `${bare.hostPort}/alice/app`])
  t.not(pull.exitCode, 0)
  t.true(pull.stderr.includes(DENIED), said(pull))
  await docker(['logout', bare.hostPort])
})

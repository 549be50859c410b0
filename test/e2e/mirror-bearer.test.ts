/**
 * The mirror in front of an upstream that speaks Docker's token flow: the upstream is a second
 * `berth serve --local --access <file> --htpasswd <file>` (its /v2/ answers anonymous callers with
 * `401 Bearer realm=…/token`), whose rules let the mirror's user `robot` pull `library/**` and
 * anonymous callers nothing. The mirror is `berth serve --config` with three prefixes on that one
 * upstream: `up.test` with robot's credentials, `wrong.test` with a wrong password and `anon.test`
 * with none. What a user relies on:
 * - pulls through `up.test/` work and keep the upstream's digests; the mirror fetched a token from
 *   the upstream's realm as robot and read the manifest with it (the upstream's access log);
 * - wrong credentials and anonymous access each fail with an error that says what is wrong.
 */
import test from 'ava'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { startBerth, type Berth } from '../helpers/berth.js'
import { request } from '../helpers/http.js'
import { OciLayout } from '../helpers/images.js'
import { makeTempDir, removeDir } from '../helpers/procs.js'
import { copy, inspectRaw, type RegistryAccess } from '../helpers/skopeo.js'

const ACCESS = `rules:
  - repository: "**"
    who: [publisher]
    can: [pull, push, overwrite]
  - repository: "library/**"
    who: [robot]
    can: [pull]
`
const plain: RegistryAccess = { tlsVerify: false }
const asRobot: RegistryAccess = { tlsVerify: false, creds: 'robot:pull-secret' }
const MANIFEST_TYPES = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json'

let work: string
let upstream: Berth
let mirror: Berth
let layout: OciLayout

test.before(async () => {
  work = await makeTempDir('e2e-mirror-bearer')
  const htpasswd = path.join(work, 'htpasswd')
  await writeFile(htpasswd, `robot:${hashPassword('pull-secret', 5)}\npublisher:${hashPassword('push-secret', 5)}\n`)
  const access = path.join(work, 'access.yml')
  await writeFile(access, ACCESS)
  upstream = await startBerth({
    datadir: path.join(work, 'upstream'),
    args: ['--access', access, '--htpasswd', htpasswd, '--certs', path.join(work, 'upstream-certs'), '--log-level', 'debug'],
  })
  layout = await OciLayout.create(path.join(work, 'layout'))
  await layout.addImage({ tag: 'app', layers: [1024 * 1024, 16 * 1024] })
  await layout.addIndex({
    tag: 'multi',
    platforms: [
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux', variant: 'v8' },
    ],
    layers: [64 * 1024],
  })
  const publisher: RegistryAccess = { tlsVerify: false, creds: 'publisher:push-secret' }
  await copy(layout.ref('app'), `docker://${upstream.hostPort}/library/app:1`, { dest: publisher })
  await copy(layout.ref('multi'), `docker://${upstream.hostPort}/library/multi:1`, { all: true, dest: publisher })
  await copy(layout.ref('app'), `docker://${upstream.hostPort}/team/app:1`, { dest: publisher })
  const config = path.join(work, 'berth.yml')
  const entry = (prefix: string, credentials: string[]) => [`  - prefix: ${prefix}`, `    url: ${upstream.url}`, ...credentials.map(line => `    ${line}`)]
  await writeFile(
    config,
    [
      'mirror:',
      ...entry('up.test', ['username: robot', 'password: pull-secret']),
      ...entry('wrong.test', ['username: robot', 'password: not-the-password']),
      ...entry('anon.test', []),
      '',
    ].join('\n'),
  )
  mirror = await startBerth({ datadir: path.join(work, 'mirror'), args: ['--config', config] })
})

test.after.always(async () => {
  await Promise.allSettled([mirror?.stop(), upstream?.stop()])
  if (work) await removeDir(work)
})

/** The upstream's access-log lines (text format) for `method path` since `from`. */
function accessLines(from: number, method: string, pathPart: string): string[] {
  return upstream
    .output()
    .slice(from)
    .split('\n')
    .filter(line => / request /.test(line) && line.includes(`method=${method}`) && line.includes(pathPart))
}

test.serial('pulls through the Bearer upstream keep its digests; the mirror used a token from its realm', async t => {
  t.regex((await request(upstream.url, '/v2/library/app/manifests/1')).headers['www-authenticate'] ?? '', /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token"/)
  const direct = new Map<string, Buffer>()
  for (const name of ['library/app:1', 'library/multi:1']) direct.set(name, await inspectRaw(`docker://${upstream.hostPort}/${name}`, asRobot))
  // From here on only the mirror talks to the upstream.
  const from = upstream.output().length
  for (const [name, bytes] of direct) t.deepEqual(await inspectRaw(`docker://${mirror.hostPort}/up.test/${name}`, plain), bytes, name)
  const out = path.join(work, 'pulled')
  await copy(`docker://${mirror.hostPort}/up.test/library/app:1`, `oci:${out}:app`, { src: plain })
  await copy(`docker://${mirror.hostPort}/up.test/library/multi:1`, `oci:${out}:multi`, { all: true, src: plain })

  const tokens = accessLines(from, 'GET', 'path=/token')
  t.true(
    tokens.some(line => /status=200/.test(line) && /user=robot/.test(line)),
    `a token issued to robot:\n${tokens.join('\n')}`,
  )
  const manifests = accessLines(from, 'GET', 'path=/v2/library/app/manifests/')
  t.true(
    manifests.some(line => /status=200/.test(line) && /user=robot/.test(line) && /auth=bearer/.test(line)),
    `a manifest GET with robot's token:\n${manifests.join('\n')}`,
  )
  const blobs = accessLines(from, 'GET', 'path=/v2/library/app/blobs/')
  t.true(
    blobs.some(line => /status=200/.test(line) && /auth=bearer/.test(line)),
    `a blob GET with the token:\n${blobs.join('\n')}`,
  )
})

test.serial("a repository outside the mirror user's rules is refused, naming the upstream", async t => {
  const answer = await request(mirror.url, '/v2/up.test/team/app/manifests/1', { headers: { Accept: MANIFEST_TYPES } })
  t.is(answer.status, 403)
  t.regex(answer.json.errors[0].message, /upstream http:\/\/127\.0\.0\.1:\d+ refused access to team\/app/)
})

test.serial('wrong credentials for the upstream give an error that says so', async t => {
  const answer = await request(mirror.url, '/v2/wrong.test/library/app/manifests/1', { headers: { Accept: MANIFEST_TYPES } })
  t.is(answer.status, 403)
  t.is(answer.json.errors[0].code, 'DENIED')
  t.regex(
    answer.json.errors[0].message,
    /^upstream http:\/\/127\.0\.0\.1:\d+ refused the mirror's credentials \(user robot; its token realm http:\/\/127\.0\.0\.1:\d+ answered 401\): check this mirror's username and password$/,
  )
  const error = await t.throwsAsync(inspectRaw(`docker://${mirror.hostPort}/wrong.test/library/app:1`, plain))
  t.regex(error.message, /refused the mirror's credentials \(user robot/, 'skopeo shows the message')
})

test.serial('anonymous access to an upstream that allows none gives an error that says so', async t => {
  const answer = await request(mirror.url, '/v2/anon.test/library/app/manifests/1', { headers: { Accept: MANIFEST_TYPES } })
  t.is(answer.status, 403)
  t.regex(answer.json.errors[0].message, /upstream http:\/\/127\.0\.0\.1:\d+ refused access to library\/app \(401\).*credentials/)
  const error = await t.throwsAsync(inspectRaw(`docker://${mirror.hostPort}/anon.test/library/app:1`, plain))
  t.regex(error.message, /denied|refused access/)
})

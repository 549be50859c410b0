/**
 * The seed's local flow with the real docker CLI (Debian's docker 20.10 and a private dockerd, see
 * test/helpers/dockerd.ts) against Berth in local mode on a random port:
 *
 *   docker tag app localhost:<port>/app && docker push localhost:<port>/app
 *   docker rmi app localhost:<port>/app && docker pull localhost:<port>/app
 *
 * The daemon reaches `localhost` over plain HTTP (127.0.0.0/8 is an insecure registry for dockerd),
 * which is what the seed's `docker-compose.local.yml` users do.
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { startLocalBerth, type Berth } from '../helpers/berth.js'
import { BASE_IMAGE, startDockerd, type Dockerd } from '../helpers/dockerd.js'
import { makeTempDir, removeDir } from '../helpers/procs.js'

let dockerd: Dockerd | undefined
let berth: Berth | undefined
let datadir: string | undefined

const REPOSITORIES = 'data/docker/registry/v2/repositories'

test.before(async () => {
  datadir = await makeTempDir('e2e-local-docker')
  ;[dockerd, berth] = await Promise.all([startDockerd(), startLocalBerth({ datadir })])
})

test.after.always(async () => {
  await Promise.allSettled([dockerd?.stop(), berth?.stop()])
  if (datadir) await removeDir(datadir)
})

function env(): { dockerd: Dockerd; berth: Berth; datadir: string } {
  if (!dockerd || !berth || !datadir) throw new Error('setup failed')
  return { dockerd, berth, datadir }
}

/** The digest docker prints at the end of a push: `latest: digest: sha256:… size: 123`. */
function pushedDigest(output: string): string {
  const match = /digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(output)
  if (!match?.[1]) throw new Error(`no digest in docker push output:\n${output}`)
  return match[1]
}

test.serial("the seed's local flow: tag, push, rmi, pull gives back the same image", async t => {
  const { dockerd, berth, datadir } = env()
  const reference = `localhost:${berth.port}/app`
  const original = await dockerd.inspectImage(BASE_IMAGE)

  await dockerd.docker(['tag', 'app', reference])
  const push = await dockerd.docker(['push', reference])
  const digest = pushedDigest(push.stdout)
  t.regex(push.stdout, /Pushed/)

  // Stored in distribution's layout under <datadir>/data, the tag pointing at the pushed manifest.
  const tagLink = await readFile(path.join(datadir, REPOSITORIES, 'app/_manifests/tags/latest/current/link'), 'utf8')
  t.is(tagLink, digest, 'tag link holds the digest, no newline')

  await dockerd.docker(['rmi', 'app', reference])
  await t.throwsAsync(dockerd.inspectImage(reference), undefined, 'the image is gone locally before the pull')

  const pull = await dockerd.docker(['pull', reference])
  t.regex(pull.stdout, new RegExp(`Digest: ${digest}`))
  const pulled = await dockerd.inspectImage(reference)
  t.is(pulled.Id, original.Id, 'same image id (same config and layers) after the round trip')
  t.deepEqual(pulled.RepoDigests, [`${reference}@${digest}`])
})

test.serial('a multi-layer image round-trips, by tag and by digest; a second push finds every layer already there', async t => {
  const { dockerd, berth } = env()
  const reference = `localhost:${berth.port}/team/multi`
  // FROM + COPY only: the classic builder commits layers without running anything.
  await dockerd.build(`${reference}:v1`, {
    Dockerfile: 'FROM scratch\nCOPY big.bin /big.bin\nCOPY small.txt /small.txt\nCOPY etc /etc\nLABEL org.berth.test=multi\n',
    'big.bin': randomBytes(3 * 1024 * 1024),
    'small.txt': 'small\n',
    'etc/release': `multi ${randomBytes(8).toString('hex')}\n`,
  })
  const built = await dockerd.inspectImage(`${reference}:v1`)

  const push = await dockerd.docker(['push', `${reference}:v1`])
  const digest = pushedDigest(push.stdout)
  t.is((push.stdout.match(/: Pushed/g) ?? []).length, 3, 'three layers uploaded')

  const again = await dockerd.docker(['push', `${reference}:v1`])
  t.is(pushedDigest(again.stdout), digest)
  t.is((again.stdout.match(/Layer already exists/g) ?? []).length, 3, 'HEAD on each blob says it is there')

  await dockerd.docker(['rmi', `${reference}:v1`])
  await dockerd.docker(['pull', `${reference}@${digest}`])
  const byDigest = await dockerd.inspectImage(`${reference}@${digest}`)
  t.is(byDigest.Id, built.Id)

  await dockerd.docker(['pull', `${reference}:v1`])
  t.is((await dockerd.inspectImage(`${reference}:v1`)).Id, built.Id)
})

test.serial('pushing the same image to another repository mounts its layers instead of uploading them', async t => {
  const { dockerd, berth } = env()
  const source = `localhost:${berth.port}/mount/source`
  const target = `localhost:${berth.port}/mount/target`
  await dockerd.build(source, { Dockerfile: 'FROM scratch\nCOPY layer.bin /layer.bin\n', 'layer.bin': randomBytes(64 * 1024) })
  const first = await dockerd.docker(['push', source])
  await dockerd.docker(['tag', source, target])
  const second = await dockerd.docker(['push', target])
  t.is(pushedDigest(second.stdout), pushedDigest(first.stdout))
  t.regex(second.stdout, /Mounted from mount\/source/, 'docker used POST …/blobs/uploads/?mount=…&from=…')
  t.notRegex(second.stdout, /: Pushed/)

  await dockerd.docker(['rmi', source, target])
  await dockerd.docker(['pull', target])
  t.pass()
})

test.serial('a Docker manifest list made with `docker manifest` is stored, inspected and pulled per platform', async t => {
  const { dockerd, berth } = env()
  const base = `localhost:${berth.port}/multi-platform`
  const amd64 = await dockerd.build(`${base}:amd64`, { Dockerfile: 'FROM scratch\nCOPY amd64.txt /\n', 'amd64.txt': randomBytes(16).toString('hex') })
  const arm64 = await dockerd.build(`${base}:arm64`, { Dockerfile: 'FROM scratch\nCOPY arm64.txt /\n', 'arm64.txt': randomBytes(16).toString('hex') })
  await dockerd.docker(['push', `${base}:amd64`])
  await dockerd.docker(['push', `${base}:arm64`])

  // `docker manifest` is the CLI's own registry client (not the daemon's): it reads and writes manifests itself.
  await dockerd.docker(['manifest', 'create', '--insecure', `${base}:list`, `${base}:amd64`, `${base}:arm64`])
  await dockerd.docker(['manifest', 'annotate', '--arch', 'arm64', `${base}:list`, `${base}:arm64`])
  const pushed = await dockerd.docker(['manifest', 'push', '--insecure', `${base}:list`])
  const listDigest = /sha256:[0-9a-f]{64}/.exec(pushed.stdout)?.[0]
  t.truthy(listDigest, pushed.stdout)

  const inspected = JSON.parse((await dockerd.docker(['manifest', 'inspect', '--insecure', `${base}:list`])).stdout) as {
    mediaType: string
    manifests: { platform: { architecture: string } }[]
  }
  t.is(inspected.mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json')
  t.deepEqual(
    inspected.manifests.map(entry => entry.platform.architecture),
    ['amd64', 'arm64'],
  )

  await dockerd.docker(['rmi', `${base}:amd64`, `${base}:arm64`])
  await dockerd.docker(['pull', `${base}:list`])
  const pulled = await dockerd.inspectImage(`${base}:list`)
  t.is(pulled.Id, amd64, 'the daemon picked its own platform from the list')
  t.true(pulled.RepoDigests.includes(`${base}@${listDigest}`))

  await dockerd.docker(['pull', '--platform', 'linux/arm64', `${base}:list`])
  t.is((await dockerd.inspectImage(`${base}:list`)).Id, arm64, '--platform picks the other entry')
})

test.serial('pulling a tag that does not exist fails with docker\'s "not found"', async t => {
  const { dockerd, berth } = env()
  const result = await dockerd.docker(['pull', `localhost:${berth.port}/app:no-such-tag`], { allowFailure: true })
  t.not(result.exitCode, 0)
  t.regex(result.stderr, /not found|manifest unknown/i)
})

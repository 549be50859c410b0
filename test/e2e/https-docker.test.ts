/**
 * The seed's HTTPS flow with the real docker CLI: Berth in https mode (certificate files from a test CA,
 * an htpasswd file written by Apache's `htpasswd -B`, as the seed's README does), then
 *
 *   docker login <name>   (bad password refused, good one accepted)
 *   docker tag app <name>/app && docker push <name>/app
 *   docker rmi app <name>/app && docker pull <name>/app
 *
 * Certificates are really checked: dockerd would treat 127.0.0.0/8 as an insecure registry and skip
 * the check, so the registry is reached as `berth.test:<port>`, a name that resolves to ::1 in the
 * daemon's private /etc/hosts, and the test CA goes into its private certs.d (test/helpers/dockerd.ts).
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { startBerth, type Berth } from '../helpers/berth.js'
import { BASE_IMAGE, DOCKER_TLS_NAME, startDockerd, type Dockerd } from '../helpers/dockerd.js'
import { makeTempDir, removeDir, run } from '../helpers/procs.js'
import { createTestPki, type TestPki } from '../helpers/tls.js'

const USER = 'testuser'
const PASSWORD = 'testpassword'

let work: string | undefined
let dockerd: Dockerd | undefined
let berth: Berth | undefined
let pki: TestPki | undefined

test.before(async () => {
  work = await makeTempDir('e2e-https-docker')
  const dir = work
  const htpasswdFile = path.join(dir, 'datadir', 'htpasswd')
  const [startedDockerd, createdPki] = await Promise.all([
    startDockerd(),
    createTestPki(path.join(dir, 'pki'), [DOCKER_TLS_NAME]),
    (async () => {
      // Exactly the seed's command (minus the container): bcrypt, batch, to stdout.
      const { stdout } = await run('htpasswd', ['-Bbn', USER, PASSWORD])
      await run('mkdir', ['-p', path.dirname(htpasswdFile)])
      await writeFile(htpasswdFile, stdout)
    })(),
  ])
  dockerd = startedDockerd
  pki = createdPki
  berth = await startBerth({
    datadir: path.join(dir, 'datadir'),
    host: '::1',
    https: { domain: DOCKER_TLS_NAME, certFile: createdPki.certPath, keyFile: createdPki.keyPath, htpasswd: htpasswdFile },
  })
})

test.after.always(async () => {
  await Promise.allSettled([dockerd?.stop(), berth?.stop()])
  if (work) await removeDir(work)
})

function env(): { dockerd: Dockerd; berth: Berth; pki: TestPki } {
  if (!dockerd || !berth || !pki) throw new Error('setup failed')
  return { dockerd, berth, pki }
}

function login(dockerd: Dockerd, registry: string, password: string) {
  return dockerd.docker(['login', '--username', USER, '--password-stdin', registry], { input: password, allowFailure: true })
}

test.serial('docker refuses the registry while it does not trust the CA', async t => {
  const { dockerd, berth } = env()
  const result = await login(dockerd, berth.hostPort, PASSWORD)
  t.not(result.exitCode, 0)
  t.regex(result.stderr, /x509|certificate signed by unknown authority/)
})

test.serial('docker login: a wrong password is refused, the right one accepted', async t => {
  const { dockerd, berth, pki } = env()
  await dockerd.addCa(berth.hostPort, pki.ca.cert)

  const bad = await login(dockerd, berth.hostPort, 'wrong-password')
  t.not(bad.exitCode, 0)
  t.regex(bad.stderr, /unauthorized|incorrect username or password/i)

  const good = await login(dockerd, berth.hostPort, PASSWORD)
  t.is(good.exitCode, 0, good.stderr)
  t.regex(good.stdout, /Login Succeeded/)
})

test.serial("the seed's flow over HTTPS: tag, push, rmi, pull gives back the same image", async t => {
  const { dockerd, berth } = env()
  const reference = `${berth.hostPort}/app`
  const original = await dockerd.inspectImage(BASE_IMAGE)

  await dockerd.docker(['tag', 'app', reference])
  const push = await dockerd.docker(['push', reference])
  const digest = /digest: (sha256:[0-9a-f]{64})/.exec(push.stdout)?.[1]
  t.truthy(digest, push.stdout)

  await dockerd.docker(['rmi', 'app', reference])
  await t.throwsAsync(dockerd.inspectImage(reference))
  await dockerd.docker(['pull', reference])
  const pulled = await dockerd.inspectImage(reference)
  t.is(pulled.Id, original.Id)
  t.deepEqual(pulled.RepoDigests, [`${reference}@${digest}`])
})

test.serial('a multi-layer image with a 24 MiB layer goes through the edge (TLS, auth, body limit, proxy) and back', async t => {
  const { dockerd, berth } = env()
  const reference = `${berth.hostPort}/team/big:v1`
  const built = await dockerd.build(reference, {
    Dockerfile: 'FROM scratch\nCOPY big.bin /big.bin\nCOPY small.txt /small.txt\n',
    'big.bin': randomBytes(24 * 1024 * 1024),
    'small.txt': 'small\n',
  })
  const push = await dockerd.docker(['push', reference])
  t.is((push.stdout.match(/: Pushed/g) ?? []).length, 2, push.stdout)
  await dockerd.docker(['rmi', reference])
  await dockerd.docker(['pull', reference])
  t.is((await dockerd.inspectImage(reference)).Id, built)
})

test.serial('after docker logout, pull and push are refused', async t => {
  const { dockerd, berth } = env()
  const reference = `${berth.hostPort}/app`
  await dockerd.docker(['logout', berth.hostPort])
  const pull = await dockerd.docker(['pull', reference], { allowFailure: true })
  t.not(pull.exitCode, 0)
  t.regex(pull.stderr, /no basic auth credentials|unauthorized|authentication required/i)
  const push = await dockerd.docker(['push', reference], { allowFailure: true })
  t.not(push.exitCode, 0)
  t.regex(push.stderr + push.stdout, /no basic auth credentials|unauthorized|authentication required/i)
})

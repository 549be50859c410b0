/**
 * The single binary (`npm run build:binary` → dist/berth, a Node SEA): copied alone into an empty
 * folder and run from there with an empty PATH — nothing else installed — it adds a user, serves
 * HTTPS with its own local CA and basic auth, and skopeo pushes and pulls through it.
 */
import { copyFile, mkdir, readdir, readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import test from 'ava'
import { REPO_ROOT } from '../helpers/berth.js'
import { OciLayout, fileDigest } from '../helpers/images.js'
import { freePort, makeTempDir, probeStatus, removeDir, run, startDaemon, waitFor, type Daemon } from '../helpers/procs.js'
import { copy, inspectRaw } from '../helpers/skopeo.js'

const BINARY = path.join(REPO_ROOT, 'dist', 'berth')

async function newestMtime(dir: string): Promise<number> {
  let newest = 0
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name)
    newest = Math.max(newest, entry.isDirectory() ? await newestMtime(file) : (await stat(file)).mtimeMs)
  }
  return newest
}

/** Builds dist/berth unless it is newer than every source file and the lockfile. */
async function ensureBinary(): Promise<void> {
  const built = await stat(BINARY).then(
    info => info.mtimeMs,
    () => 0,
  )
  const sources = Math.max(await newestMtime(path.join(REPO_ROOT, 'src')), (await stat(path.join(REPO_ROOT, 'package-lock.json'))).mtimeMs)
  if (built > sources) return
  await run('npm', ['run', 'build:binary'], { cwd: REPO_ROOT, timeoutMs: 180_000 })
}

let work: string | undefined
let daemon: Daemon | undefined

test.after.always(async () => {
  await daemon?.stop()
  if (work) await removeDir(work)
})

test('the single binary runs alone: htpasswd, HTTPS with a local CA, skopeo push and pull with login', async t => {
  await ensureBinary()
  work = await makeTempDir('e2e-binary')
  const home = path.join(work, 'srv')
  await mkdir(home)
  const berth = path.join(home, 'berth')
  await copyFile(BINARY, berth)
  const bare = { PATH: '', NODE_OPTIONS: undefined, NODE_PATH: undefined } // no node, no npm, no node_modules reachable

  const version = await run(berth, ['--version'], { cwd: home, env: bare })
  t.regex(version.stdout, /^\d+\.\d+\.\d+\n$/)
  await run(berth, ['htpasswd', 'add', 'builder', '--password-stdin'], { cwd: home, env: bare, input: 'binary-secret\n' })

  const httpsPort = await freePort()
  const httpPort = await freePort()
  let output = ''
  daemon = startDaemon(
    'berth-binary',
    berth,
    ['serve', '--self-signed', '--domain', 'localhost', '--host', '127.0.0.1', '--https-port', String(httpsPort), '--http-port', String(httpPort)],
    { cwd: home, env: bare, onOutput: text => (output += text) },
  )
  await waitFor('the binary to listen', async () => output.includes('Berth registry is running'), { timeoutMs: 90_000, daemon })
  t.regex(output, new RegExp(`listening +https://127\\.0\\.0\\.1:${httpsPort} \\(HTTPS\\)`))
  t.regex(output, /storing +.*srv\/datadir\/data/)
  t.regex(output, /users +.*srv\/datadir\/htpasswd \(1 user\)/)
  t.regex(output, new RegExp(`log in +docker login localhost:${httpsPort}`))
  t.regex(output, /certificate +self-signed \(local CA .*srv\/certs\/local-ca\/ca\.crt\): localhost/)

  // Clients trust the local CA the binary made under ./certs (skopeo --cert-dir takes *.crt as roots).
  const certDir = path.join(work, 'client-certs')
  await mkdir(certDir)
  await copyFile(path.join(home, 'certs', 'local-ca', 'ca.crt'), path.join(certDir, 'ca.crt'))
  const registry = `localhost:${httpsPort}`
  t.is(await probeStatus(`http://127.0.0.1:${httpPort}/v2/`), 301, 'port 80 redirects to HTTPS')

  const source = await OciLayout.create(path.join(work, 'source'))
  const image = await source.addImage({ tag: 'v1', layers: [2 * 1024 * 1024, 1000] })
  const noLogin = await copy(source.ref('v1'), `docker://${registry}/tools/hello:v1`, { dest: { certDir } }, { allowFailure: true })
  t.not(noLogin.exitCode, 0, 'push without credentials is refused')
  t.regex(noLogin.stderr, /unauthorized|authentication required/i)

  const dest = { certDir, creds: 'builder:binary-secret' }
  await copy(source.ref('v1'), `docker://${registry}/tools/hello:v1`, { dest })
  t.true((await inspectRaw(`docker://${registry}/tools/hello:v1`, dest)).equals(image.manifestBytes), 'manifest served byte for byte')
  const out = await OciLayout.create(path.join(work, 'out'))
  await copy(`docker://${registry}/tools/hello:v1`, out.ref('v1'), { src: dest })
  for (const blob of image.blobs) t.is(await fileDigest(out.blobPath(blob.digest)), blob.digest)
  t.true((await readFile(out.blobPath(image.manifest.digest))).equals(image.manifestBytes))

  await daemon.stop()
  t.regex(output, /shutting down/)
})

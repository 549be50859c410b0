/**
 * Issue #2's "done when": a newcomer's `npm start` followed by the seed's docker flow works.
 *
 * `npm start` runs in a copy of the checkout (src, package files, tsconfig; node_modules linked, as
 * `npm install` would have made it), so its build (prestart → dist/berth.cjs) and its default
 * `./datadir` never touch the working tree or race the binary test's build. The only departure from
 * the newcomer's defaults is BERTH_PORT (a free port instead of 5000, which may be taken). The
 * default listen address is 127.0.0.1, so docker's `localhost` (also ::1 in its /etc/hosts) has to
 * fall back to it, as it does on a newcomer's machine.
 */
import test from 'ava'
import { cp, mkdir, readFile, symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { REPO_ROOT } from '../helpers/berth.js'
import { startDockerd, type Dockerd } from '../helpers/dockerd.js'
import { freePort, makeTempDir, probeStatus, removeDir, startDaemon, waitFor, type Daemon } from '../helpers/procs.js'

let work: string | undefined
let dockerd: Dockerd | undefined
let npmStart: Daemon | undefined

test.after.always(async () => {
  await Promise.allSettled([npmStart?.stop(), dockerd?.stop()])
  if (work) await removeDir(work)
})

test("npm start serves the seed's local flow: docker tag, push, rmi, pull", async t => {
  work = await makeTempDir('e2e-npm-start')
  const checkout = path.join(work, 'berth')
  const dockerdStarting = startDockerd()
  for (const entry of ['src', 'package.json', 'package-lock.json', 'tsconfig.json']) {
    await cp(path.join(REPO_ROOT, entry), path.join(checkout, entry), { recursive: true })
  }
  // A fresh clone has these two runtime folders, empty but for .gitkeep.
  for (const folder of ['datadir', 'certs']) {
    await mkdir(path.join(checkout, folder))
    await writeFile(path.join(checkout, folder, '.gitkeep'), '')
  }
  await symlink(path.join(REPO_ROOT, 'node_modules'), path.join(checkout, 'node_modules'), 'dir')

  const port = await freePort()
  const started = Date.now()
  npmStart = startDaemon('npm start', 'npm', ['start'], {
    cwd: checkout,
    env: { BERTH_PORT: String(port), BERTH_HOST: undefined, BERTH_DATADIR: undefined, npm_config_update_notifier: 'false' },
  })
  const server = npmStart
  await waitFor('npm start to serve /v2/', async () => (await probeStatus(`http://127.0.0.1:${port}/v2/`)) === 200, {
    daemon: server,
    timeoutMs: 90_000,
  })
  t.log(`npm start (build + start) answered /v2/ after ${Date.now() - started} ms`)
  await waitFor('the start-up summary', async () => /\n {2}pull /.test(server.output()), { daemon: server, timeoutMs: 30_000 })
  t.regex(server.output(), new RegExp(`^ {2}listening +http://127\\.0\\.0\\.1:${port} \\(plain HTTP, this machine only\\)$`, 'm'))
  t.notRegex(server.output(), /WARNING/)
  dockerd = await dockerdStarting

  const reference = `localhost:${port}/app`
  const original = await dockerd.inspectImage('app')
  await dockerd.docker(['tag', 'app', reference])
  const push = await dockerd.docker(['push', reference])
  const digest = /digest: (sha256:[0-9a-f]{64})/.exec(push.stdout)?.[1]
  t.truthy(digest, push.stdout)
  await dockerd.docker(['rmi', 'app', reference])
  await dockerd.docker(['pull', reference])
  const pulled = await dockerd.inspectImage(reference)
  t.is(pulled.Id, original.Id)
  t.deepEqual(pulled.RepoDigests, [`${reference}@${digest}`])

  // The default datadir is ./datadir, storing in ./datadir/data like the seed's registry:2.
  const link = await readFile(path.join(checkout, 'datadir/data/docker/registry/v2/repositories/app/_manifests/tags/latest/current/link'), 'utf8')
  t.is(link, digest ?? '')
})

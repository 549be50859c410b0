/**
 * The compose deployment, as a user runs it: `docker-compose up -d --build registry` builds the
 * repository's Dockerfile (both stages, `npm ci` included) and starts the service of
 * docker-compose.yml, which then serves HTTPS with basic auth; skopeo pushes and pulls through it.
 * Then docker-compose.local.yml's service serves the same ./datadir in local mode.
 *
 * Two things differ from a user's machine, both forced by this test machine and kept to a test-only
 * override file:
 * - No base image can be pulled, so `node:22-bookworm-slim` (the name the Dockerfile uses) is made
 *   offline from the host's own node (20.x), npm, a shell and their libraries, then `docker import`ed.
 *   It also carries the host's CA bundle: npm here goes through a TLS-intercepting proxy.
 * - The test dockerd runs without a bridge (`--bridge=none`), so `ports:` cannot publish: the override
 *   adds `network_mode: host` (and `build.network: host` so `npm ci` reaches the npm registry) and
 *   moves HTTPS/HTTP to free high ports, because a non-root process on the host network may not bind
 *   80/443 (Docker lowers ip_unprivileged_port_start only inside a container's own network namespace).
 *   Everything else — Dockerfile, docker-compose.yml, user, volumes, environment, healthcheck — is the
 *   file users get.
 */
import { execFile } from 'node:child_process'
import { chmod, chown, copyFile, cp, mkdir, readFile, symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import test from 'ava'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import { REPO_ROOT } from '../helpers/berth.js'
import { startDockerd, type Dockerd } from '../helpers/dockerd.js'
import { OciLayout, fileDigest } from '../helpers/images.js'
import { freePort, makeTempDir, probeStatus, removeDir, run, waitFor, type RunOptions } from '../helpers/procs.js'
import { copy, inspectRaw } from '../helpers/skopeo.js'

const BASE_IMAGE = 'node:22-bookworm-slim'
const PROJECT = 'berthcompose'

let dockerd: Dockerd | undefined
let work: string | undefined
let compose: ((args: string[], options?: RunOptions) => ReturnType<typeof run>) | undefined

test.after.always(async () => {
  if (compose) await compose(['down', '--timeout', '5'], { allowFailure: true, timeoutMs: 60_000 })
  await dockerd?.stop()
  if (work) await removeDir(work)
})

async function sharedLibraries(binaries: readonly string[]): Promise<string[]> {
  const found = new Set<string>()
  for (const binary of binaries) {
    const { stdout } = await promisify(execFile)('ldd', [binary])
    for (const match of stdout.matchAll(/(\/[^\s]+\.so[^\s]*)/g)) if (match[1]) found.add(match[1])
  }
  return [...found]
}

/** A minimal root filesystem with the host's node + npm where the official image has them. */
async function makeBaseImage(dir: string): Promise<string> {
  const root = path.join(dir, 'rootfs')
  for (const folder of ['usr/bin', 'usr/lib', 'usr/lib64', 'usr/local/bin', 'usr/local/lib/node_modules', 'etc', 'root', 'home/node', 'tmp']) {
    await mkdir(path.join(root, folder), { recursive: true })
  }
  for (const link of ['bin', 'lib', 'lib64', 'sbin']) await symlink(`usr/${link === 'sbin' ? 'bin' : link}`, path.join(root, link))
  await chmod(path.join(root, 'tmp'), 0o1777)
  await chown(path.join(root, 'home/node'), 1000, 1000)
  await copyFile(process.execPath, path.join(root, 'usr/local/bin/node'))
  await cp('/usr/lib/node_modules/npm', path.join(root, 'usr/local/lib/node_modules/npm'), { recursive: true })
  await symlink('../lib/node_modules/npm/bin/npm-cli.js', path.join(root, 'usr/local/bin/npm'))
  await symlink('../lib/node_modules/npm/bin/npx-cli.js', path.join(root, 'usr/local/bin/npx'))
  const tools = ['/usr/bin/dash', '/usr/bin/env', '/usr/bin/mkdir', '/usr/bin/chown']
  for (const tool of tools) await copyFile(tool, path.join(root, tool))
  await symlink('dash', path.join(root, 'usr/bin/sh'))
  for (const library of await sharedLibraries([process.execPath, ...tools])) {
    const target = path.join(root, library.replace(/^\/(lib|lib64)\//, '/usr/$1/'))
    await mkdir(path.dirname(target), { recursive: true })
    await copyFile(library, target) // follows symlinks: the real file under the soname
  }
  await writeFile(path.join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n')
  await writeFile(path.join(root, 'etc/group'), 'root:x:0:\nnode:x:1000:\n')
  // This machine reaches the npm registry through a TLS-intercepting proxy whose CA only the host
  // trusts; the base image gets the host's bundle (NODE_EXTRA_CA_CERTS is set at import).
  await mkdir(path.join(root, 'etc/ssl/certs'), { recursive: true })
  await copyFile('/etc/ssl/certs/ca-certificates.crt', path.join(root, 'etc/ssl/certs/ca-certificates.crt'))
  const tarball = path.join(dir, 'base.tar')
  await run('tar', ['--numeric-owner', '-C', root, '-cf', tarball, '.'])
  return tarball
}

/** The files a fresh clone has that the image and compose use; datadir/ and certs/ empty. */
async function makeClone(dir: string): Promise<void> {
  for (const file of ['Dockerfile', '.dockerignore', 'docker-compose.yml', 'docker-compose.local.yml', 'package.json', 'package-lock.json', 'tsconfig.json']) {
    await copyFile(path.join(REPO_ROOT, file), path.join(dir, file))
  }
  await cp(path.join(REPO_ROOT, 'src'), path.join(dir, 'src'), { recursive: true })
  for (const folder of ['datadir', 'certs']) {
    await mkdir(path.join(dir, folder))
    await writeFile(path.join(dir, folder, '.gitkeep'), '')
  }
}

test('docker-compose up -d --build registry: the image builds, runs as uid 1000, serves HTTPS with auth; skopeo push/pull', async t => {
  work = await makeTempDir('e2e-compose')
  dockerd = await startDockerd({ baseImage: false })
  const clone = path.join(work, 'berth')
  await mkdir(clone)
  await makeClone(clone)
  const changes = ['ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt']
  await dockerd.docker(['import', ...changes.flatMap(change => ['-c', change]), await makeBaseImage(work), BASE_IMAGE], { timeoutMs: 300_000 })

  const httpsPort = await freePort()
  const httpPort = await freePort()
  await writeFile(
    path.join(clone, 'docker-compose.test.yml'),
    [
      'services:',
      '  registry:',
      '    build:',
      '      context: .',
      '      network: host',
      '    network_mode: host',
      '    environment:',
      '      BERTH_HOST: 127.0.0.1',
      `      BERTH_HTTPS_PORT: "${httpsPort}"`,
      `      BERTH_HTTP_PORT: "${httpPort}"`,
      '    healthcheck:',
      '      interval: 1s',
      '      start_period: 1s',
      '',
    ].join('\n'),
  )
  // What the README tells users: settings in .env, folders writable by the container's uid 1000.
  await writeFile(path.join(clone, '.env'), 'BERTH_DOMAIN=localhost\nBERTH_SELF_SIGNED=true\n')
  await chown(path.join(clone, 'datadir'), 1000, 1000)
  await chown(path.join(clone, 'certs'), 1000, 1000)

  const env = { DOCKER_HOST: dockerd.host, COMPOSE_PROJECT_NAME: PROJECT, DOCKER_BUILDKIT: '0', COMPOSE_DOCKER_CLI_BUILD: '0' }
  // compose 1.29 refuses `ports:` with `network_mode: host` and an override cannot delete a key, so the
  // merged configuration (docker-compose.yml + the override, as `config` prints it) loses `ports:` only.
  const merged = await run('docker-compose', ['-f', 'docker-compose.yml', '-f', 'docker-compose.test.yml', 'config'], { cwd: clone, env })
  const document = parseYaml(merged.stdout) as { services: { registry: Record<string, unknown> } }
  const ports = (document.services.registry.ports as Array<{ published: number; target: number }>).map(port => `${port.published}:${port.target}`)
  t.deepEqual(ports, ['80:80', '443:443'], 'the user file publishes 80 and 443')
  delete document.services.registry.ports
  await writeFile(path.join(clone, 'docker-compose.hostnet.yml'), stringifyYaml(document))
  const files = ['-f', 'docker-compose.hostnet.yml']
  compose = (args, options = {}) => run('docker-compose', [...files, ...args], { cwd: clone, env, timeoutMs: 600_000, ...options })

  const built = await compose(['build', 'registry'], { allowFailure: true })
  t.is(built.exitCode, 0, built.stdout.slice(-3000) + built.stderr.slice(-3000))
  if (built.exitCode !== 0) return

  // Safe by default: before a user exists the HTTPS service refuses to start, with the line saying what to do.
  const noUser = await compose(['run', '--rm', '-T', 'registry'], { allowFailure: true })
  t.is(noUser.exitCode, 2, noUser.stdout + noUser.stderr)
  t.regex(
    noUser.stdout + noUser.stderr,
    /^berth: no users: HTTPS mode needs a login\. Add one with: docker compose run --rm registry htpasswd add <user> \(or pass --allow-anonymous to serve without one\)$/m,
  )

  // The README's way to add a user: the image's own CLI writes ./datadir/htpasswd.
  const user = await compose(['run', '--rm', '-T', 'registry', 'htpasswd', 'add', 'deployer', '--password-stdin'], {
    input: 'compose-secret\n',
    allowFailure: true,
  })
  t.is(user.exitCode, 0, user.stdout + user.stderr)
  t.regex(user.stdout, /added user deployer in \/srv\/berth\/datadir\/htpasswd/)

  const up = await compose(['up', '-d', '--build', 'registry'], { allowFailure: true })
  t.is(up.exitCode, 0, up.stdout + up.stderr)
  const container = (await compose(['ps', '-q', 'registry'])).stdout.trim()
  t.truthy(container)
  const status = await waitFor(
    'the healthcheck to pass',
    async () => {
      const { stdout } = await dockerd!.docker(['inspect', '-f', '{{.State.Health.Status}}', container])
      if (stdout.trim() === 'unhealthy') throw new Error('unhealthy')
      return stdout.trim() === 'healthy' ? 'healthy' : undefined
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  ).catch(async (error: Error) => `${error.message}\n${(await compose!(['logs', 'registry'], { allowFailure: true })).stdout}`)
  t.is(status, 'healthy')

  const inspect = JSON.parse((await dockerd.docker(['inspect', container])).stdout) as Array<{
    Config: { User: string }
    HostConfig: { RestartPolicy: { Name: string } }
  }>
  t.is(inspect[0]?.Config.User, 'node', 'runs as the unprivileged node user')
  t.is(inspect[0]?.HostConfig.RestartPolicy.Name, 'unless-stopped')
  const logs = (await compose(['logs', 'registry'])).stdout
  t.regex(logs, /storing +\/srv\/berth\/datadir\/data/)
  t.regex(logs, /users +\/srv\/berth\/datadir\/htpasswd \(1 user\)/)

  const certDir = path.join(work, 'client-certs')
  await mkdir(certDir)
  await copyFile(path.join(clone, 'certs', 'local-ca', 'ca.crt'), path.join(certDir, 'ca.crt'))
  const registry = `localhost:${httpsPort}`
  const source = await OciLayout.create(path.join(work, 'source'))
  const image = await source.addImage({ tag: 'v1', layers: [1024 * 1024, 500] })
  const refused = await copy(source.ref('v1'), `docker://${registry}/project_docker:v1`, { dest: { certDir } }, { allowFailure: true })
  t.not(refused.exitCode, 0, 'no push without login')
  const creds = { certDir, creds: 'deployer:compose-secret' }
  await copy(source.ref('v1'), `docker://${registry}/project_docker:v1`, { dest: creds })
  t.true((await inspectRaw(`docker://${registry}/project_docker:v1`, creds)).equals(image.manifestBytes))
  const out = await OciLayout.create(path.join(work, 'out'))
  await copy(`docker://${registry}/project_docker:v1`, out.ref('v1'), { src: creds })
  for (const blob of image.blobs) t.is(await fileDigest(out.blobPath(blob.digest)), blob.digest)

  // The data lives in the clone's ./datadir/data on the host, in registry:2's layout.
  const { stdout } = await run('find', [
    path.join(clone, 'datadir', 'data', 'docker', 'registry', 'v2', 'repositories', 'project_docker', '_manifests', 'tags'),
    '-name',
    'link',
  ])
  t.regex(stdout, /tags\/v1\/current\/link/)

  // docker-compose.local.yml: the same image in local mode, plain HTTP, the same ./datadir.
  const localPort = await freePort()
  await writeFile(
    path.join(clone, 'docker-compose.local-test.yml'),
    [
      'services:',
      '  registry:',
      '    network_mode: host',
      '    environment:',
      '      BERTH_HOST: 127.0.0.1',
      `      BERTH_PORT: "${localPort}"`,
      '    healthcheck:',
      '      interval: 1s',
      '',
    ].join('\n'),
  )
  const localEnv = { ...env, COMPOSE_PROJECT_NAME: `${PROJECT}local` }
  const localConfig = async (files: string[]) =>
    parseYaml((await run('docker-compose', [...files.flatMap(file => ['-f', file]), 'config'], { cwd: clone, env: localEnv })).stdout) as typeof document
  // compose 1.29 prints a port with a host address in the short syntax (`127.0.0.1:5000:5000/tcp`).
  const published = (service: Record<string, unknown>) =>
    (service.ports as Array<string | { published: number; target: number }>).map(port => (typeof port === 'string' ? port : `${port.published}:${port.target}`))
  // The user file: this machine only. Berth listens on every address of the container's own network,
  // and compose publishes the port on the host's loopback.
  const userLocal = (await localConfig(['docker-compose.local.yml'])).services.registry
  t.deepEqual(published(userLocal), ['127.0.0.1:5000:5000/tcp'])
  t.is((userLocal.environment as Record<string, string>).BERTH_HOST, '0.0.0.0')
  const localMerged = await localConfig(['docker-compose.local.yml', 'docker-compose.local-test.yml'])
  t.deepEqual(published(localMerged.services.registry), ['127.0.0.1:5000:5000/tcp'])
  delete localMerged.services.registry.ports
  await writeFile(path.join(clone, 'docker-compose.local-hostnet.yml'), stringifyYaml(localMerged))
  const local = (args: string[]) =>
    run('docker-compose', ['-f', 'docker-compose.local-hostnet.yml', ...args], { cwd: clone, env: localEnv, timeoutMs: 300_000 })
  t.teardown(() =>
    local(['down', '--timeout', '5']).then(
      () => undefined,
      () => undefined,
    ),
  )
  await local(['up', '-d', 'registry'])
  await waitFor('local mode to answer', async () => (await probeStatus(`http://127.0.0.1:${localPort}/v2/`)) === 401 || undefined, { timeoutMs: 60_000 })
  // The htpasswd file made above lives in the same ./datadir, so local mode asks for a login too.
  const plain = { tlsVerify: false, creds: 'deployer:compose-secret' }
  const fromLocal = await OciLayout.create(path.join(work, 'out-local'))
  await copy(`docker://127.0.0.1:${localPort}/project_docker:v1`, fromLocal.ref('v1'), { src: plain })
  t.true((await readFile(fromLocal.blobPath(image.manifest.digest))).equals(image.manifestBytes), 'local mode serves what the HTTPS service stored')
})

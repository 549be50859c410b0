/**
 * Local mode is for this machine: `berth serve --local` listens on 127.0.0.1 only and says so, and
 * `--host 0.0.0.0` opens it to other machines with a warning in the banner while no user exists.
 *
 * The real program runs in a network namespace of its own (`unshare -n`) with a veth address,
 * 198.51.100.1, standing for the machine's LAN address: connecting to it from inside the namespace is
 * what another machine's connection looks like to the listening socket (its local address decides),
 * and nothing is ever bound on the test machine's own interfaces. The namespace also has port 5000
 * free, so the default port is what is tested.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test, { type ExecutionContext } from 'ava'
import { buildConfig } from '../../src/config/config.js'
import { summary } from '../../src/cli/commands/serve.js'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import type { RunningServer } from '../../src/server.js'
import { MAIN, REPO_ROOT } from '../helpers/berth.js'
import { run, startDaemon, waitFor, type Daemon } from '../helpers/procs.js'

const LAN_ADDRESS = '198.51.100.1'
const NETNS_SETUP = [
  'set -e',
  'ip link set lo up',
  'ip link add berth0 type veth peer name berth1',
  `ip addr add ${LAN_ADDRESS}/24 dev berth0`,
  'ip link set berth0 up',
  'ip link set berth1 up',
  'exec "$@"',
].join('; ')

interface Isolated {
  readonly daemon: Daemon
  /** Runs a command in the server's network namespace. */
  inNet(command: string, args: string[]): ReturnType<typeof run>
  /** HTTP status of GET `url` from inside the namespace; 0 when the connection is refused. */
  status(url: string): Promise<number>
}

async function serveIsolated(t: ExecutionContext, args: string[], setup?: (datadir: string) => Promise<void>): Promise<Isolated> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-local-bind-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const datadir = join(dir, 'datadir')
  await setup?.(datadir)
  const cleanEnv: Record<string, string | undefined> = {}
  for (const key of Object.keys(process.env)) if (key.startsWith('BERTH_')) cleanEnv[key] = undefined
  const daemon = startDaemon(
    'berth',
    'unshare',
    ['-n', 'sh', '-c', NETNS_SETUP, 'sh', process.execPath, '--import', 'tsx', MAIN, 'serve', '--local', '--datadir', datadir, ...args],
    { cwd: REPO_ROOT, env: cleanEnv },
  )
  t.teardown(() => daemon.stop())
  const inNet = (command: string, commandArgs: string[]) =>
    run('nsenter', [`--net=/proc/${daemon.pid}/ns/net`, command, ...commandArgs], { allowFailure: true, timeoutMs: 20_000 })
  const status = async (url: string) => Number((await inNet('curl', ['-s', '-o', '/dev/null', '-m', '5', '-w', '%{http_code}', url])).stdout)
  await waitFor('the start-up summary', async () => /Berth registry is running[\s\S]*\n {2}pull /.test(daemon.output()), { daemon, timeoutMs: 90_000 })
  return { daemon, inNet, status }
}

/** Local addresses of the TCP sockets listening on port 5000, as `ss` prints them. */
async function listeners(server: Isolated): Promise<string[]> {
  const { stdout } = await server.inNet('ss', ['-Htln', 'sport = :5000'])
  return stdout
    .trim()
    .split('\n')
    .filter(line => line !== '')
    .map(line => line.trim().split(/\s+/)[3] ?? '')
}

test('berth serve --local listens on 127.0.0.1 only: refused on a LAN address, and the banner says so', async t => {
  const server = await serveIsolated(t, [])
  t.deepEqual(await listeners(server), ['127.0.0.1:5000'])
  t.is(await server.status('http://127.0.0.1:5000/v2/'), 200)
  t.is(await server.status(`http://${LAN_ADDRESS}:5000/v2/`), 0, 'no connection from another machine')
  const banner = server.daemon.output()
  t.regex(banner, /^ {2}listening +http:\/\/127\.0\.0\.1:5000 \(plain HTTP, this machine only\)$/m)
  t.notRegex(banner, /WARNING|localhost:5000 \(/)
  t.regex(banner, /^ {2}push +docker tag <image> localhost:5000\/<name>/m)
})

test('--host 0.0.0.0 opens local mode to other machines, and the banner warns while nobody needs a login', async t => {
  const server = await serveIsolated(t, ['--host', '0.0.0.0'])
  t.deepEqual(await listeners(server), ['0.0.0.0:5000'])
  t.is(await server.status(`http://${LAN_ADDRESS}:5000/v2/`), 200)
  const banner = server.daemon.output()
  t.regex(banner, /^ {2}listening +http:\/\/localhost:5000 \(plain HTTP, every interface\)$/m)
  t.regex(
    banner,
    /^ {2}WARNING +reachable from other machines without a login \(--host 0\.0\.0\.0, listening on every interface\): anyone on the network can push, pull and delete; add a user \(berth htpasswd add <user> --file \S+\/htpasswd\) or leave out --host to listen on 127\.0\.0\.1 only$/m,
  )
})

test('--host 0.0.0.0 with a user in the htpasswd file: open to the network, a login needed, no warning', async t => {
  const server = await serveIsolated(t, ['--host', '0.0.0.0'], async datadir => {
    await mkdir(datadir)
    await writeFile(join(datadir, 'htpasswd'), `alice:${hashPassword('secret', 5)}\n`)
  })
  t.is(await server.status(`http://${LAN_ADDRESS}:5000/v2/`), 401)
  t.notRegex(server.daemon.output(), /WARNING/)
})

/** A running server as summary() sees it, without sockets. */
function running(urls: RunningServer['urls'], auth?: RunningServer['auth']): RunningServer {
  return {
    urls,
    storage: '/srv/data',
    upstream: 'in-process',
    certificate: undefined,
    certificateSource: undefined,
    hints: [],
    auth,
    reload: () => Promise.resolve(),
    close: () => Promise.resolve(),
  }
}

test('banner: HTTPS with --allow-anonymous on every interface warns; on loopback or with a user it does not', t => {
  const anonymous = buildConfig({ selfSigned: true, allowAnonymous: true }, '/work')
  const urls = { https: 'https://localhost:443', http: 'http://localhost:80' }
  t.regex(
    summary(anonymous, running(urls), { env: {} }),
    /^ {2}WARNING +reachable from other machines without a login \(--allow-anonymous, listening on every interface\): anyone on the network can push, pull and delete; add a user/m,
  )
  t.notRegex(summary(anonymous, running(urls, { file: '/work/datadir/htpasswd', users: 1 }), { env: {} }), /WARNING/)
  const loopback = buildConfig({ selfSigned: true, allowAnonymous: true, host: '::1' }, '/work')
  t.notRegex(summary(loopback, running({ https: 'https://[::1]:443' }), { env: {} }), /WARNING/)
})

test('banner in the container image: the published port decides, so it says what compose publishes', t => {
  const env = { BERTH_IN_CONTAINER: '1', BERTH_DATADIR: '/srv/berth/datadir' }
  const composeLocal = buildConfig({ local: true, host: '0.0.0.0', datadir: '/srv/berth/datadir' }, '/srv/berth')
  const opened = summary(composeLocal, running({ local: 'http://localhost:5000' }), { env })
  t.notRegex(opened, /WARNING/)
  t.regex(
    opened,
    /^ {2}note +no login: anyone who reaches the published port can push, pull and delete \(docker-compose\.local\.yml publishes it on 127\.0\.0\.1 only\)$/m,
  )
  const loopback = buildConfig({ local: true, datadir: '/srv/berth/datadir' }, '/srv/berth')
  t.regex(
    summary(loopback, running({ local: 'http://127.0.0.1:5000' }), { env }),
    /^ {2}note +listening on 127\.0\.0\.1 inside the container: a published port cannot reach it/m,
  )
})

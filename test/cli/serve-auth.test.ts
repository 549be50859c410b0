/**
 * Safe by default: `berth serve` in HTTPS mode refuses to start without a user to log in with,
 * unless --allow-anonymous (BERTH_ALLOW_ANONYMOUS, allowAnonymous) says so. The real program as a
 * child process, real TLS on loopback; what a user relies on: one line saying what to do, exit 2,
 * nothing listening and nothing created; with the flag it serves as before and switches auth on
 * when the htpasswd file appears; with a user it asks for the login.
 */
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises'
import https from 'node:https'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { MAIN, startBerth } from '../helpers/berth.js'
import { freePort, run, waitFor, type RunOptions } from '../helpers/procs.js'
import { createTestPki, type TestPki } from '../helpers/tls.js'

const REFUSAL =
  /^berth: no users: HTTPS mode needs a login\. Add one with: berth htpasswd add <user> --file \S+\/htpasswd \(or pass --allow-anonymous to serve without one\)$/

function berth(args: string[], options: RunOptions = {}) {
  // BERTH_* of the machine running the tests stay out: the flags are the whole configuration.
  const env: Record<string, string | undefined> = {}
  for (const key of Object.keys(process.env)) if (key.startsWith('BERTH_')) env[key] = undefined
  return run(process.execPath, ['--import', 'tsx', MAIN, ...args], { allowFailure: true, timeoutMs: 60_000, ...options, env: { ...env, ...options.env } })
}

async function setup(
  t: import('ava').ExecutionContext,
): Promise<{ dir: string; pki: TestPki; httpsArgs: () => Promise<{ args: string[]; httpsPort: number; httpPort: number }> }> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-serve-auth-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const pki = await createTestPki(join(dir, 'pki'))
  const httpsArgs = async () => {
    const httpsPort = await freePort()
    const httpPort = await freePort()
    return {
      httpsPort,
      httpPort,
      args: [
        'serve',
        '--host',
        '127.0.0.1',
        '--domain',
        'localhost',
        '--tls-cert',
        pki.certPath,
        '--tls-key',
        pki.keyPath,
        '--https-port',
        String(httpsPort),
        '--http-port',
        String(httpPort),
        '--datadir',
        join(dir, 'datadir'),
      ],
    }
  }
  return { dir, pki, httpsArgs }
}

/** Whether anything accepts a TCP connection on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise(resolve => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

function getV2(url: string, ca: string, auth?: string): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const request = https.get(`${url}/v2/`, { ca, servername: 'localhost', agent: false, ...(auth ? { auth } : {}) }, response => {
      response.resume()
      resolve(response.statusCode)
    })
    request.on('error', reject)
  })
}

test('HTTPS without an htpasswd file: one line saying what to do, exit 2, nothing listening, nothing created', async t => {
  const { dir, httpsArgs } = await setup(t)
  const { args, httpsPort, httpPort } = await httpsArgs()
  const result = await berth(args)
  t.is(result.exitCode, 2)
  t.is(result.stdout, '')
  const lines = result.stderr.trim().split('\n')
  t.is(lines.length, 1, result.stderr)
  t.regex(lines[0] ?? '', REFUSAL)
  t.true(lines[0]?.includes(`--file ${join(dir, 'datadir', 'htpasswd')} `), 'names the file serve reads')
  t.false(await listening(httpsPort))
  t.false(await listening(httpPort))
  await t.throwsAsync(access(join(dir, 'datadir')), undefined, 'the datadir is not created by a refused start')
})

test('HTTPS with an htpasswd file without users, or --upstream without users: refused too', async t => {
  const { dir, httpsArgs } = await setup(t)
  const empty = join(dir, 'empty-htpasswd')
  await writeFile(empty, '# nobody yet\n')
  const withEmpty = await berth([...(await httpsArgs()).args, '--htpasswd', empty])
  t.is(withEmpty.exitCode, 2)
  t.is(
    withEmpty.stderr.trim(),
    `berth: no users in ${empty}: HTTPS mode needs a login. Add one with: berth htpasswd add <user> --file ${empty} (or pass --allow-anonymous to serve without one)`,
  )

  // In front of another registry Berth cannot tell whether that one checks logins (the seed's
  // registry:2 behind nginx did not), so the same rule applies; the line says when the flag fits.
  const upstream = await berth([...(await httpsArgs()).args, '--upstream', 'http://127.0.0.1:5999'])
  t.is(upstream.exitCode, 2)
  t.regex(
    upstream.stderr.trim(),
    /^berth: no users: .*\(or pass --allow-anonymous to serve without one, e\.g\. when http:\/\/127\.0\.0\.1:5999 checks logins itself\)$/,
  )

  // --local is for this machine: no users needed, as before.
  const local = await berth(['doctor', '--local', '--host', '127.0.0.1', '--port', String(await freePort()), '--datadir', join(dir, 'datadir')])
  t.regex(local.stdout, /^ok +users .*: no file: local mode runs without login$/m)
})

test('--allow-anonymous (or BERTH_ALLOW_ANONYMOUS) starts open, warns, and turns auth on when the htpasswd file appears', async t => {
  const { dir, pki } = await setup(t)
  const datadir = join(dir, 'datadir')
  const server = await startBerth({
    datadir,
    https: { domain: 'localhost', certFile: pki.certPath, keyFile: pki.keyPath },
    env: { BERTH_ALLOW_ANONYMOUS: 'true' },
  })
  t.teardown(() => server.stop())
  t.regex(server.output(), /users +NONE: anyone who reaches this port can push and pull/)
  t.regex(server.output(), /WARN +no htpasswd file: the registry accepts requests without credentials/)
  t.is(await getV2(server.url, pki.ca.cert), 200)

  await writeFile(join(datadir, 'htpasswd'), `alice:${hashPassword('wonderland', 5)}\n`)
  await waitFor('auth to switch on', async () => (await getV2(server.url, pki.ca.cert)) === 401, { timeoutMs: 60_000 })
  t.is(await getV2(server.url, pki.ca.cert, 'alice:wonderland'), 200)
})

test('HTTPS with a user starts and asks for the login', async t => {
  const { dir, pki } = await setup(t)
  const htpasswd = join(dir, 'htpasswd')
  await writeFile(htpasswd, `alice:${hashPassword('wonderland', 5)}\n`)
  const server = await startBerth({ datadir: join(dir, 'datadir'), https: { domain: 'localhost', certFile: pki.certPath, keyFile: pki.keyPath, htpasswd } })
  t.teardown(() => server.stop())
  t.regex(server.output(), /users +.*htpasswd \(1 user\)/)
  t.is(await getV2(server.url, pki.ca.cert), 401)
  t.is(await getV2(server.url, pki.ca.cert, 'alice:wonderland'), 200)
  t.is(await getV2(server.url, pki.ca.cert, 'alice:wrong'), 401)
})

test('doctor: anonymous HTTPS is a FAIL with the fix line; with --allow-anonymous a warning', async t => {
  const { dir, pki } = await setup(t)
  const base = [
    'doctor',
    '--host',
    '127.0.0.1',
    '--domain',
    'localhost',
    '--tls-cert',
    pki.certPath,
    '--tls-key',
    pki.keyPath,
    '--https-port',
    String(await freePort()),
    '--http-port',
    String(await freePort()),
    '--datadir',
    join(dir, 'datadir'),
  ]
  const refused = await berth(base)
  t.is(refused.exitCode, 1)
  t.regex(refused.stdout, /^FAIL +users \S+\/htpasswd: no file: berth serve refuses to start \(HTTPS without a login\)$/m)
  t.regex(
    refused.stdout,
    /^ +fix: no users: HTTPS mode needs a login\. Add one with: berth htpasswd add <user> --file \S+ \(or pass --allow-anonymous to serve without one\)$/m,
  )

  const allowed = await berth([...base, '--allow-anonymous'])
  t.regex(allowed.stdout, /^WARN +users \S+\/htpasswd: no file: anyone who reaches the registry can push$/m)
  t.notRegex(allowed.stdout, /^FAIL +users/m)
})

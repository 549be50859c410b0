/**
 * Settings that used to start silently and fail later, and hints that pointed the wrong way inside
 * Berth's own image: the real program as a child process, checked by what it prints and its exit.
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { issueCertificate } from '../../src/edge/tls/self-signed.js'
import { MAIN } from '../helpers/berth.js'
import { freePort, run, startDaemon, waitFor, type RunOptions } from '../helpers/procs.js'
import { createTestPki } from '../helpers/tls.js'

function berth(args: string[], options: RunOptions & { asUid?: number } = {}) {
  // BERTH_* of the machine running the tests stay out: the flags and options.env are the whole configuration.
  const env: Record<string, string | undefined> = {}
  for (const key of Object.keys(process.env)) if (key.startsWith('BERTH_')) env[key] = undefined
  const node = [process.execPath, '--import', 'tsx', MAIN, ...args]
  const [command, ...rest] = options.asUid !== undefined ? ['setpriv', `--reuid=${options.asUid}`, `--regid=${options.asUid}`, '--clear-groups', ...node] : node
  return run(command as string, rest, { allowFailure: true, timeoutMs: 60_000, ...options, env: { ...env, ...options.env } })
}

async function tempDir(t: import('ava').ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-misconfiguration-'))
  await chmod(dir, 0o755)
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

function oneLine(t: import('ava').ExecutionContext, stderr: string, pattern: RegExp): void {
  const lines = stderr.trim().split('\n')
  t.is(lines.length, 1, stderr)
  t.regex(lines[0] ?? '', pattern)
}

async function httpsArgs(dir: string, certPath: string, keyPath: string): Promise<string[]> {
  return [
    'serve',
    '--host',
    '127.0.0.1',
    '--domain',
    'localhost',
    '--tls-cert',
    certPath,
    '--tls-key',
    keyPath,
    '--https-port',
    String(await freePort()),
    '--http-port',
    String(await freePort()),
    '--datadir',
    join(dir, 'datadir'),
    '--allow-anonymous',
  ]
}

test('serve refuses a --client-ca file without a certificate: exit 2, one line, nothing listening', async t => {
  const dir = await tempDir(t)
  const pki = await createTestPki(join(dir, 'pki'))
  const garbage = join(dir, 'bad.pem')
  await writeFile(garbage, 'garbage\n')
  const result = await berth([...(await httpsArgs(dir, pki.certPath, pki.keyPath)), '--client-ca', garbage])
  t.is(result.exitCode, 2, result.stdout + result.stderr)
  oneLine(t, result.stderr, /^berth: --client-ca \S+bad\.pem: no PEM certificate in the file .*; give the PEM file of the CA/)
  t.false(result.stdout.includes('is running'))

  const leaf = join(dir, 'leaf.pem')
  await writeFile(leaf, (await issueCertificate(pki.ca, { names: ['client'], client: true })).cert)
  const notCa = await berth([...(await httpsArgs(dir, pki.certPath, pki.keyPath)), '--client-ca', leaf])
  t.is(notCa.exitCode, 2, notCa.stdout + notCa.stderr)
  oneLine(t, notCa.stderr, /^berth: --client-ca \S+leaf\.pem: client is not a CA/)
})

test('serve: the summary says client certificates are required; a certificate not covering --domain is a warning naming its names', async t => {
  const dir = await tempDir(t)
  const pki = await createTestPki(join(dir, 'pki'), ['other.example', 'www.other.example'])
  // Not startBerth: with --client-ca its /v2/ probe (no client certificate) gets 400, never 200/401.
  const server = startDaemon(
    'berth',
    process.execPath,
    ['--import', 'tsx', MAIN, ...(await httpsArgs(dir, pki.certPath, pki.keyPath)), '--client-ca', pki.caPath],
    {
      env: Object.fromEntries(
        Object.keys(process.env)
          .filter(key => key.startsWith('BERTH_'))
          .map(key => [key, undefined]),
      ),
    },
  )
  t.teardown(() => server.stop())
  await waitFor('the start-up summary', async () => /Berth registry is running[\s\S]*\n {2}pull /.test(server.output()), {
    daemon: server,
    timeoutMs: 60_000,
    intervalMs: 50,
  })
  const output = server.output()
  t.regex(
    output,
    /^ {2}clients {5}must present a certificate signed by Berth test CA \(--client-ca \S+ca\.crt\); docker: \/etc\/docker\/certs\.d\/localhost:\d+\/client\.cert and client\.key$/m,
  )
  t.regex(
    output,
    /WARN +the certificate does not cover localhost: clients connecting by that name will refuse it certificateNames="other\.example, www\.other\.example"/,
  )
})

test('doctor checks --client-ca and warns about a certificate with 19 days left', async t => {
  const dir = await tempDir(t)
  const pki = await createTestPki(join(dir, 'pki'), ['localhost'])
  const short = await issueCertificate(pki.ca, { names: ['localhost'], days: 20 })
  const certPath = join(dir, 'short.pem')
  const keyPath = join(dir, 'short.key')
  await writeFile(certPath, short.cert + pki.ca.cert)
  await writeFile(keyPath, short.key, { mode: 0o600 })
  const garbage = join(dir, 'bad.pem')
  await writeFile(garbage, 'garbage\n')
  const common = [
    'doctor',
    '--domain',
    'localhost',
    '--tls-cert',
    certPath,
    '--tls-key',
    keyPath,
    '--allow-anonymous',
    '--https-port',
    String(await freePort()),
    '--http-port',
    String(await freePort()),
    '--datadir',
    join(dir, 'datadir'),
  ]

  const bad = await berth([...common, '--client-ca', garbage])
  t.is(bad.exitCode, 1, bad.stdout)
  t.regex(bad.stdout, /^WARN  certificate \S+short\.pem: expires in 1[89] days \(\d{4}-\d\d-\d\d\)$/m)
  t.regex(bad.stdout, /fix: renew it soon \(certbot renew\)/)
  t.regex(bad.stdout, /^FAIL  client CA \S+bad\.pem: no PEM certificate in the file/m)

  const good = await berth([...common, '--client-ca', pki.caPath])
  t.regex(good.stdout, /^ok {4}client CA \S+ca\.crt: clients must present a certificate signed by Berth test CA$/m)
  const missing = await berth([...common, '--client-ca', join(dir, 'nope.pem')])
  t.regex(missing.stdout, /^FAIL  client CA \S+nope\.pem: no such file$/m)
})

test('inside the image, hints name the compose command and the host folders', async t => {
  const dir = await tempDir(t)
  const pki = await createTestPki(join(dir, 'pki'))
  const datadir = join(dir, 'datadir')
  const inImage = { BERTH_IN_CONTAINER: '1', BERTH_DATADIR: datadir }

  const args = (await httpsArgs(dir, pki.certPath, pki.keyPath)).filter(arg => arg !== '--allow-anonymous')
  const refused = await berth(args, { env: inImage })
  t.is(refused.exitCode, 2, refused.stderr)
  oneLine(
    t,
    refused.stderr,
    /^berth: no users: HTTPS mode needs a login\. Add one with: docker compose run --rm registry htpasswd add <user> \(or pass --allow-anonymous/,
  )

  // A root-owned mount: htpasswd add run as the image's user gets serve's chown, not "sudo".
  // As root the command runs as uid 1000 (the image's user); otherwise the folder is made read-only.
  const isRoot = process.getuid?.() === 0
  await mkdir(datadir, { mode: isRoot ? 0o755 : 0o555 })
  const denied = await berth(['htpasswd', 'add', 'alice', '--password-stdin'], { env: inImage, input: 'secret\n', ...(isRoot ? { asUid: 1000 } : {}) })
  t.is(denied.exitCode, 1, denied.stderr)
  oneLine(
    t,
    denied.stderr,
    /^berth: cannot write \S+htpasswd: permission denied \(on the host, run: sudo chown -R \d+:\d+ datadir certs \(the folders mounted into the container\)\)$/,
  )

  const outside = await berth(args, { env: { BERTH_DATADIR: datadir } })
  oneLine(t, outside.stderr, /^berth: no users: HTTPS mode needs a login\. Add one with: berth htpasswd add <user> --file \S+\/datadir\/htpasswd /)
})

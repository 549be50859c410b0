/**
 * The `berth` command as users run it: a child process of src/main.ts, checked by exit code and by
 * what it prints. Apache's own `htpasswd -vb` judges the hashes.
 */
import { spawn } from 'node:child_process'
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { SETTINGS } from '../../src/config/settings.js'
import { MAIN } from '../helpers/berth.js'
import { freePort, run, type RunOptions } from '../helpers/procs.js'
import { createTestPki } from '../helpers/tls.js'

function berth(args: string[], options: RunOptions = {}) {
  return run(process.execPath, ['--import', 'tsx', MAIN, ...args], { allowFailure: true, timeoutMs: 60_000, ...options })
}

async function tempDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-cli-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

function assertOneLineError(t: import('ava').ExecutionContext, stderr: string, pattern: RegExp): void {
  const lines = stderr.trim().split('\n')
  t.regex(lines[0] ?? '', pattern)
  t.false(stderr.includes('    at '), 'no stack trace')
}

test('berth --help lists the commands; --version prints the version', async t => {
  const help = await berth(['--help'])
  t.is(help.exitCode, 0)
  for (const command of ['serve', 'htpasswd', 'doctor', 'access']) t.regex(help.stdout, new RegExp(`^  ${command}\\b`, 'm'))
  const version = await berth(['--version'])
  t.is(version.exitCode, 0)
  const packageJson = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  t.is(version.stdout.trim(), packageJson.version)
})

test('berth serve --help documents every flag with its BERTH_* variable', async t => {
  const help = await berth(['serve', '--help'])
  t.is(help.exitCode, 0)
  const text = help.stdout.replace(/\s+/g, ' ')
  for (const setting of SETTINGS) {
    t.true(text.includes(`--${setting.flag}`), `--${setting.flag} in help`)
    t.true(text.includes(`env: ${setting.env}`), `${setting.env} in help`)
  }
  t.true(text.includes('--config <file>'))
})

test('serve without a certificate source: exit 2, one line with the fix, no stack trace', async t => {
  const result = await berth(['serve'], { env: { BERTH_DATADIR: undefined } })
  t.is(result.exitCode, 2)
  assertOneLineError(t, result.stderr, /^berth: HTTPS mode needs a certificate: .*or use --local/)
})

test('a wrong BERTH_* value: exit 2 naming the variable and what is accepted', async t => {
  const result = await berth(['serve', '--local'], { env: { BERTH_PORT: 'abc' } })
  t.is(result.exitCode, 2)
  assertOneLineError(t, result.stderr, /^berth: invalid BERTH_PORT "abc": expected a port number from 1 to 65535$/)
})

test('an unknown flag: exit 2 with a hint', async t => {
  const result = await berth(['serve', '--prot', '5000'])
  t.is(result.exitCode, 2)
  t.regex(result.stderr, /^berth: unknown option '--prot'/)
  t.regex(result.stderr, /--help/)
})

test('serve: a port already in use is named, exit 1', async t => {
  const dir = await tempDir(t)
  const blocker = createServer()
  await new Promise<void>(resolve => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => blocker.close(() => resolve())))
  const port = (blocker.address() as import('node:net').AddressInfo).port
  const result = await berth(['serve', '--local', '--host', '127.0.0.1', '--port', String(port), '--datadir', join(dir, 'datadir')])
  t.is(result.exitCode, 1)
  assertOneLineError(
    t,
    result.stderr
      .split('\n')
      .filter(line => line.startsWith('berth:'))
      .join('\n'),
    new RegExp(`^berth: port ${port} is already in use .*--port`),
  )
})

test('htpasswd -Bbn prints one line that Apache htpasswd -vb accepts (drop-in for the seed)', async t => {
  const dir = await tempDir(t)
  const result = await berth(['htpasswd', '-Bbn', 'testuser', 'testpassword'])
  t.is(result.exitCode, 0, result.stderr)
  t.regex(result.stdout, /^testuser:\$2[aby]\$10\$[./A-Za-z0-9]{53}\n$/)
  const file = join(dir, 'htpasswd')
  await writeFile(file, result.stdout)
  const good = await run('htpasswd', ['-vb', file, 'testuser', 'testpassword'], { allowFailure: true })
  t.is(good.exitCode, 0, good.stderr)
  const bad = await run('htpasswd', ['-vb', file, 'testuser', 'wrong'], { allowFailure: true })
  t.not(bad.exitCode, 0)
  const cheap = await berth(['htpasswd', '-Bbn', '-C', '5', 'u', 'p'])
  t.regex(cheap.stdout, /^u:\$2[aby]\$05\$/)
})

test('htpasswd add/list/remove edit <datadir>/htpasswd atomically with mode 0600, keeping other lines', async t => {
  const dir = await tempDir(t)
  const datadir = join(dir, 'datadir')
  const file = join(datadir, 'htpasswd')
  const env = { BERTH_DATADIR: datadir, BERTH_HTPASSWD: undefined }

  const added = await berth(['htpasswd', 'add', 'alice', '--password-stdin'], { input: 'first-secret\n', env })
  t.is(added.exitCode, 0, added.stderr)
  t.regex(added.stdout, /^added user alice in .*datadir\/htpasswd$/m)
  t.is((await stat(file)).mode & 0o777, 0o600)
  t.is((await run('htpasswd', ['-vb', file, 'alice', 'first-secret'], { allowFailure: true })).exitCode, 0, 'newline from stdin is not part of the password')

  // A file written by Apache's htpasswd, with a comment and an nginx-era MD5 line the edge refuses.
  await chmod(file, 0o644)
  await run('htpasswd', ['-bB', file, 'bob', 'bobs-secret'])
  await writeFile(file, `# team registry\n${await readFile(file, 'utf8')}carol:$apr1$abcdefgh$0123456789abcdefghijkl\n`)

  const updated = await berth(['htpasswd', 'add', 'alice', '--password-stdin'], { input: 'second-secret', env })
  t.is(updated.exitCode, 0, updated.stderr)
  t.regex(updated.stdout, /^updated user alice/)
  const text = await readFile(file, 'utf8')
  t.true(text.startsWith('# team registry\n'), 'comment kept')
  t.regex(text, /^bob:\$2y\$05\$/m, 'Apache line kept byte for byte')
  t.regex(text, /^carol:\$apr1\$/m, 'a line the edge refuses is still not lost')
  t.is((await stat(file)).mode & 0o777, 0o600, 'mode 0600 again after the rewrite')
  t.is((await run('htpasswd', ['-vb', file, 'alice', 'second-secret'], { allowFailure: true })).exitCode, 0)

  const list = await berth(['htpasswd', 'list'], { env })
  t.is(list.exitCode, 0)
  t.regex(list.stdout, /^alice\tbcrypt cost 10$/m)
  t.regex(list.stdout, /^bob\tbcrypt cost 5$/m)
  t.regex(list.stdout, /^carol\tapr1-md5 \(not accepted/m)

  const removed = await berth(['htpasswd', 'remove', 'bob', '--file', file])
  t.is(removed.exitCode, 0, removed.stderr)
  t.notRegex(await readFile(file, 'utf8'), /^bob:/m)
  const missing = await berth(['htpasswd', 'remove', 'bob', '--file', file])
  t.is(missing.exitCode, 1)
  assertOneLineError(t, missing.stderr, /^berth: user bob is not in /)
})

test('htpasswd add on a terminal prompts twice without echo (a pty made by script(1))', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'htpasswd')
  const command = `${process.execPath} --import tsx ${MAIN} htpasswd add alice --file ${file}`
  // script(1) runs the command on a pseudo-terminal and forwards our stdin to it. Each answer is
  // typed only once its prompt is on the terminal, as a person would, however slow the start is.
  const child = spawn('script', ['-qec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] })
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  let output = ''
  let answered = 0
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8')
    const prompts = (output.match(/New password for alice: |Re-type new password: /g) ?? []).length
    while (answered < prompts) {
      answered += 1
      child.stdin.write('tty-secret\r')
    }
  })
  const exitCode = await new Promise<number | null>(resolve => child.on('close', resolve))
  clearTimeout(killer)
  child.stdin.destroy()
  t.is(exitCode, 0, output)
  t.regex(output, /New password for alice: /)
  t.regex(output, /Re-type new password: /)
  t.regex(output, /added user alice/)
  t.false(output.includes('tty-secret'), 'the password is never echoed')
  t.is((await run('htpasswd', ['-vb', file, 'alice', 'tty-secret'], { allowFailure: true })).exitCode, 0)
})

test('htpasswd add without a terminal and without --password-stdin says what to do', async t => {
  const dir = await tempDir(t)
  const result = await berth(['htpasswd', 'add', 'alice', '--file', join(dir, 'htpasswd')])
  t.is(result.exitCode, 2)
  assertOneLineError(t, result.stderr, /^berth: no terminal to ask for the password; pipe it in with --password-stdin$/)
})

test('htpasswd refuses bad input with one line: user with ":", empty password, bad cost', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'htpasswd')
  const colon = await berth(['htpasswd', 'add', 'a:b', '--password-stdin', '--file', file], { input: 'x' })
  t.is(colon.exitCode, 2)
  assertOneLineError(t, colon.stderr, /^berth: invalid user name "a:b"/)
  const empty = await berth(['htpasswd', 'add', 'alice', '--password-stdin', '--file', file], { input: '\n' })
  t.is(empty.exitCode, 2)
  assertOneLineError(t, empty.stderr, /^berth: the password is empty$/)
  const cost = await berth(['htpasswd', '-Bbn', '-C', '40', 'u', 'p'])
  t.is(cost.exitCode, 2)
  assertOneLineError(t, cost.stderr, /^berth: invalid --cost "40"/)
})

test('htpasswd add -C sets the cost, after or before the subcommand; outside 4-17 exit 2 with one line (as Apache)', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'htpasswd')
  const after = await berth(['htpasswd', 'add', 'alice', '-C', '6', '--password-stdin', '--file', file], { input: 'a-secret\n' })
  t.is(after.exitCode, 0, after.stderr)
  const before = await berth(['htpasswd', '-C', '7', 'add', 'bob', '--password-stdin', '--file', file], { input: 'b-secret\n' })
  t.is(before.exitCode, 0, before.stderr)
  const long = await berth(['htpasswd', 'add', 'carol', '--cost', '5', '--password-stdin', '--file', file], { input: 'c-secret\n' })
  t.is(long.exitCode, 0, long.stderr)
  const text = await readFile(file, 'utf8')
  t.regex(text, /^alice:\$2b\$06\$/m)
  t.regex(text, /^bob:\$2b\$07\$/m)
  t.regex(text, /^carol:\$2b\$05\$/m)
  t.is((await run('htpasswd', ['-vb', file, 'alice', 'a-secret'], { allowFailure: true })).exitCode, 0)
  for (const cost of ['3', '18', '99', 'x']) {
    const refused = await berth(['htpasswd', 'add', 'dave', '-C', cost, '--password-stdin', '--file', file], { input: 'd-secret\n' })
    t.is(refused.exitCode, 2, `-C ${cost}`)
    assertOneLineError(t, refused.stderr, new RegExp(`^berth: invalid --cost "${cost}": expected an integer from 4 to 17`))
  }
  t.notRegex(await readFile(file, 'utf8'), /^dave:/m)
})

test('access check as users run it: the decision on stdout; exit 0 allowed, 1 denied, 2 broken file', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'access.yml')
  await writeFile(file, 'rules:\n  - repository: "public/**"\n    who: [anonymous, authenticated]\n    can: [pull]\n')
  const allowed = await berth(['access', 'check', 'anonymous', 'public/app', 'pull', '--access', file])
  t.is(allowed.exitCode, 0)
  t.is(allowed.stdout, 'allowed: rule 1 (line 2, repository "public/**") lets anonymous pull\n')
  const denied = await berth(['access', 'check', 'alice', 'public/app', 'push', '--access', file])
  t.is(denied.exitCode, 1)
  t.is(denied.stdout, 'denied: rule 1 (line 2, repository "public/**") applies to alice but does not grant push\n')
  t.is(denied.stderr, '')
  await writeFile(file, 'rules:\n  - repository: "public/**"\n    who: [alice]\n    cann: [pull]\n    when: always\n')
  const broken = await berth(['access', 'check', 'alice', 'public/app', 'pull', '--access', file])
  t.is(broken.exitCode, 2)
  assertOneLineError(
    t,
    broken.stderr,
    /^berth: .*access\.yml:2:5: rule 1 has no can; every rule needs repository, who and can \(and 2 more: berth doctor lists them all\)$/,
  )
})

test('doctor: all good for a local setup (exit 0); names problems with fixes (exit 1)', async t => {
  const dir = await tempDir(t)
  const good = await berth(['doctor', '--local', '--host', '127.0.0.1', '--datadir', join(dir, 'datadir')], {
    env: { BERTH_PORT: String(await freePort()) },
  })
  t.is(good.exitCode, 0, good.stdout + good.stderr)
  t.regex(good.stdout, /^ok {4}port \d+, local HTTP \(--port\): free, and this user may bind it$/m)
  t.regex(good.stdout, /^ok {4}users .*: no file: local mode runs without login$/m)
  t.regex(good.stdout, /problems?$/m)

  // HTTPS with a leaf-only certificate for other names, a world-readable key, a port taken, and a broken htpasswd.
  const pki = await createTestPki(join(dir, 'pki'), ['other.example'])
  const leafOnly = join(dir, 'leaf.pem')
  await writeFile(leafOnly, (await readFile(pki.certPath, 'utf8')).split(/(?<=-----END CERTIFICATE-----\n?)/)[0] ?? '')
  await chmod(pki.keyPath, 0o644)
  const htpasswd = join(dir, 'htpasswd')
  await writeFile(htpasswd, 'carol:$apr1$abcdefgh$0123456789abcdefghijkl\n', { mode: 0o600 })
  const blocker = createServer()
  await new Promise<void>(resolve => blocker.listen(0, '::', resolve))
  blocker.on('connection', socket => socket.destroy())
  t.teardown(() => void blocker.close())
  const taken = (blocker.address() as import('node:net').AddressInfo).port
  const bad = await berth([
    'doctor',
    '--domain',
    'localhost',
    '--tls-cert',
    leafOnly,
    '--tls-key',
    pki.keyPath,
    '--https-port',
    String(taken),
    '--http-port',
    String(taken + 1 === 65536 ? taken - 1 : taken + 1),
    '--htpasswd',
    htpasswd,
    '--datadir',
    join(dir, 'datadir'),
  ])
  t.is(bad.exitCode, 1, bad.stdout)
  t.regex(bad.stdout, new RegExp(`^FAIL  port ${taken}, HTTPS \\(--https-port\\): in use by another program$`, 'm'))
  t.regex(bad.stdout, /fix: find it with: sudo ss -ltnp/)
  t.regex(bad.stdout, /^ok {4}domain localhost: resolves to .*an address of this machine$/m)
  t.regex(bad.stdout, /^WARN  certificate .*leaf.pem: the file holds only the server certificate, no intermediates$/m)
  t.regex(bad.stdout, /fix: use the full chain \(certbot: fullchain.pem/)
  t.regex(bad.stdout, /^FAIL  certificate .*: does not cover localhost/m)
  t.regex(bad.stdout, /^WARN  key .*server.key: mode 644: readable by other users$/m)
  t.regex(bad.stdout, /fix: chmod 600 /)
  t.regex(bad.stdout, /^FAIL  users .*htpasswd: line 1: user "carol" has an MD5 \(\$apr1\$\) hash/m)
  t.regex(bad.stdout, /^(ok|WARN) {2,4}disk of .*: [\d.]+ GiB free/m)
  t.regex(bad.stderr, /^berth: \d+ problems found \(see above\)$/m)
})

/** `berth access check` and the access check of `berth doctor`, run in-process through the CLI program. */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import test from 'ava'
import { checkAccessFile } from '../../src/cli/doctor-checks.js'
import { runCli } from '../../src/cli/program.js'

const EXAMPLE = `groups:
  devs: [alice, bob]
rules:
  - repository: "public/**"
    who: [anonymous, authenticated]
    can: [pull]
  - repository: "alice/**"
    who: [alice]
    can: [pull, push, overwrite, delete]
  - repository: "release/**"
    who: [group:devs]
    can: [pull, push]
  - repository: "**"
    who: [authenticated]
    can: [pull]
`

function captureIo(cwd: string, env: NodeJS.ProcessEnv = {}) {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let out = ''
  let err = ''
  stdout.on('data', chunk => (out += String(chunk)))
  stderr.on('data', chunk => (err += String(chunk)))
  return { io: { stdout, stderr, stdin: new PassThrough(), env, cwd }, out: () => out, err: () => err }
}

async function tempDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-access-cli-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

async function check(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const captured = captureIo(cwd, env)
  const code = await runCli(['node', 'berth', 'access', 'check', ...args], captured.io)
  return { code, out: captured.out(), err: captured.err() }
}

test('access check: one line naming the deciding rule; exit 0 allowed, 1 denied', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'rules.yml')
  await writeFile(file, EXAMPLE)

  const allowed = await check(dir, ['alice', 'alice/app', 'push', '--access', file])
  t.deepEqual(allowed, { code: 0, out: 'allowed: rule 2 (line 7, repository "alice/**") lets alice push\n', err: '' })

  const denied = await check(dir, ['anonymous', 'public/app', 'push', '--access', file])
  t.deepEqual(denied, { code: 1, out: 'denied: rule 1 (line 4, repository "public/**") applies to anonymous but does not grant push\n', err: '' })

  const immutable = await check(dir, ['bob', 'release/app', 'overwrite', '--access', file])
  t.is(immutable.code, 1)
  t.is(immutable.out, 'denied: rule 3 (line 10, repository "release/**") applies to bob but does not grant overwrite\n')

  const none = await check(dir, ['anonymous', 'ci/app', 'pull', '--access', file])
  t.deepEqual(none, { code: 1, out: 'denied: no rule applies to anonymous on ci/app\n', err: '' })

  const anonymousPull = await check(dir, ['anonymous', 'public/app', 'pull', '--access', file])
  t.is(anonymousPull.code, 0)
})

test('access check finds the file as serve does: <datadir>/access.yml, BERTH_ACCESS, --access first', async t => {
  const dir = await tempDir(t)
  await mkdir(join(dir, 'datadir'))
  await writeFile(join(dir, 'datadir', 'access.yml'), EXAMPLE)
  const other = join(dir, 'other.yml')
  await writeFile(other, 'rules:\n  - repository: "**"\n    who: [bob]\n    can: [delete]\n')

  t.is((await check(dir, ['alice', 'alice/app', 'delete'])).code, 0, './datadir/access.yml by default')
  t.is((await check(dir, ['alice', 'alice/app', 'delete', '--datadir', 'elsewhere'])).code, 2, 'another datadir without the file')
  t.is((await check(dir, ['bob', 'x', 'delete'], { BERTH_ACCESS: 'other.yml' })).out, 'allowed: rule 1 (line 2, repository "**") lets bob delete\n')
  t.is((await check(dir, ['bob', 'x', 'delete', '--access', join(dir, 'datadir', 'access.yml')], { BERTH_ACCESS: other })).code, 1)
})

test('access check: a broken file, no file, or a bad argument is exit 2 with one line and a hint', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'access.yml')
  await writeFile(file, 'rules:\n  - repository: "a"\n    who: [alice]\n    can: [pull, fly]\n  - repository: "B"\n    who: [alice]\n    can: [pull]\n')

  const broken = await check(dir, ['alice', 'a', 'pull', '--access', file])
  t.is(broken.code, 2)
  t.is(broken.out, '')
  t.is(broken.err, `berth: ${file}:4:17: unknown action "fly" in rule 1; allowed: pull, push, overwrite, delete (and 1 more: berth doctor lists them all)\n`)

  const missing = await check(dir, ['alice', 'a', 'pull', '--access', join(dir, 'nope.yml')])
  t.is(missing.code, 2)
  t.regex(missing.err, /^berth: .*nope\.yml: no such file \(give an existing access file, or none: then every user who logs in may do everything\)\n$/)

  const noFile = await check(dir, ['alice', 'a', 'pull', '--datadir', 'datadir'])
  t.is(noFile.code, 2)
  t.is(
    noFile.err,
    `berth: no access file: ${join(dir, 'datadir', 'access.yml')} does not exist, so every user who logs in may do everything; give a file with --access <file>\n`,
  )

  await writeFile(file, EXAMPLE)
  const action = await check(dir, ['alice', 'a', 'read', '--access', file])
  t.is(action.code, 2)
  t.regex(
    action.err,
    /^berth: command-argument value 'read' is invalid for argument 'action'\. Allowed choices are pull, push, overwrite, delete\.\n\(add --help for usage\)\n$/,
  )

  const repository = await check(dir, ['alice', 'Alice/App', 'pull', '--access', file])
  t.is(repository.code, 2)
  t.regex(repository.err, /"Alice\/App" is not a repository name: lowercase segments/)
  t.regex(repository.err, /\(add --help for usage\)/)
})

test('doctor: the access file is ok with its rule count, or each problem with line and column', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'access.yml')
  t.deepEqual(await checkAccessFile({ accessFile: undefined, datadir: dir }), [
    {
      status: 'ok',
      subject: 'access rules',
      message: `none (no ${file}, no --access): every user who logs in may pull, push, overwrite and delete`,
    },
  ])

  await writeFile(file, EXAMPLE)
  t.deepEqual(await checkAccessFile({ accessFile: file, datadir: dir }), [
    { status: 'ok', subject: `access rules ${file}`, message: '4 rules; some allow anonymous access' },
  ])

  await writeFile(file, 'rules:\n  - repository: "a"\n    who: [alice]\n    can: [fly]\n    when: always\n')
  const results = await checkAccessFile({ accessFile: file, datadir: dir })
  t.deepEqual(
    results.map(result => [result.status, result.message]),
    [
      ['fail', 'line 4, column 11: unknown action "fly" in rule 1; allowed: pull, push, overwrite, delete'],
      ['fail', 'line 5, column 5: unknown key "when" in rule 1; allowed: repository, who, can'],
    ],
  )
  t.is(results[0]?.fix, undefined)
  t.regex(results[1]?.fix ?? '', /berth serve refuses to start with it/)

  const missing = await checkAccessFile({ accessFile: join(dir, 'nope.yml'), datadir: dir })
  t.is(missing[0]?.status, 'fail')
  t.regex(missing[0]?.message ?? '', /^no such file/)
})

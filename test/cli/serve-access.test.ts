/**
 * `berth serve` with access rules, as an operator drives it: the real program as a child process.
 * A broken access file refuses the start with its line and column; a broken edit while running keeps
 * the rules in force; SIGHUP after editing the config file switches read-only mode both ways.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { MAIN, startBerth } from '../helpers/berth.js'
import { request } from '../helpers/http.js'
import { freePort, run, waitFor } from '../helpers/procs.js'

const RULES = `rules:
  - repository: "public/**"
    who: [alice]
    can: [pull, push]
  - repository: "public/**"
    who: [anonymous, authenticated]
    can: [pull]
`
const ALICE = { authorization: 'Basic ' + Buffer.from('alice:alice-password').toString('base64') }

async function folder(t: import('ava').ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-serve-access-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'htpasswd'), `alice:${hashPassword('alice-password', 5)}\n`)
  return dir
}

test('a broken access file refuses the start with file, line and column (exit 2)', async t => {
  const dir = await folder(t)
  await writeFile(join(dir, 'access.yml'), RULES.replace('[pull, push]', '[pull, pushh]'))
  const env: Record<string, string | undefined> = {}
  for (const key of Object.keys(process.env)) if (key.startsWith('BERTH_')) env[key] = undefined
  const result = await run(process.execPath, ['--import', 'tsx', MAIN, 'serve', '--local', '--port', String(await freePort()), '--datadir', dir], {
    allowFailure: true,
    timeoutMs: 60_000,
    env,
  })
  t.is(result.exitCode, 2)
  t.regex(result.stderr, /^berth: --access \S+\/access\.yml:4:17: unknown action "pushh" in rule 1; allowed: pull, push, overwrite, delete\n$/m)
})

test('running: a broken edit keeps the rules; SIGHUP after editing the config file switches read-only both ways', async t => {
  const dir = await folder(t)
  const access = join(dir, 'access.yml')
  const config = join(dir, 'berth.yaml')
  await writeFile(access, RULES)
  await writeFile(config, 'read-only: false\n')
  const berth = await startBerth({ datadir: dir, args: ['--config', config, '--certs', join(dir, 'certs')] })
  t.teardown(() => berth.stop())
  t.regex(berth.output(), /access {6}\S+access\.yml \(2 rules;/)
  const push = () => request(berth.url, '/v2/public/app/blobs/uploads/', { method: 'POST', headers: ALICE })
  t.is((await push()).status, 202)
  t.is((await request(berth.url, '/v2/public/app/blobs/uploads/', { method: 'POST' })).status, 401)

  await writeFile(access, 'rules:\n  - repository: "public/**"\n    who: [alice\n')
  await waitFor(
    'the broken edit reported',
    async () => /access file not reloaded; keeping the rules loaded before .* line=\d+ column=\d+/.test(berth.output()),
    {
      timeoutMs: 10_000,
    },
  )
  t.is((await push()).status, 202, 'the rules loaded before still apply')
  await writeFile(access, RULES)

  await writeFile(config, 'read-only: true\n')
  process.kill(berth.pid!, 'SIGHUP')
  await waitFor('read-only on', async () => (await push()).status === 405, { timeoutMs: 10_000 })
  const refused = await push()
  t.regex(refused.json.errors[0].message, /read-only/)
  t.is((await request(berth.url, '/v2/')).status, 401, 'reads still go through the rules')
  await writeFile(config, 'read-only: false\n')
  process.kill(berth.pid!, 'SIGHUP')
  await waitFor('read-only off', async () => (await push()).status === 202, { timeoutMs: 10_000 })
  t.regex(berth.output(), /read-only mode on: pushes and deletes are refused \(405\)/)
  t.regex(berth.output(), /read-only mode off/)
})

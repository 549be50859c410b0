/**
 * HtpasswdAccessController without a socket: how edits of the file, its removal, wrong passwords
 * and a flood of guesses turn into decisions (issues 14, 19 and 20).
 */
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import test from 'ava'
import type { ExecutionContext } from 'ava'
import { HtpasswdAccessController } from '../../src/edge/auth/basic-auth.js'
import type { AuthResult, HtpasswdAccessControllerOptions } from '../../src/edge/auth/basic-auth.js'
import { BcryptPool } from '../../src/edge/auth/bcrypt-pool.js'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { createLogger } from '../../src/log.js'
import { waitFor } from '../helpers/procs.js'

const basic = (user: string, password: string) => 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64')

async function setup(t: ExecutionContext, text: string | undefined, options: HtpasswdAccessControllerOptions = {}) {
  const dir = await mkdtemp(path.join(tmpdir(), 'berth-auth-'))
  const file = path.join(dir, 'htpasswd')
  if (text !== undefined) await writeFile(file, text)
  const logs: string[] = []
  const pool = new BcryptPool({ size: 1 })
  const controller = await HtpasswdAccessController.open(file, {
    pollMs: 20,
    logger: createLogger({ level: 'debug', write: line => logs.push(line) }),
    cache: { pool },
    ...options,
  })
  t.teardown(async () => {
    controller.close()
    await pool.close()
    await rm(dir, { recursive: true, force: true })
  })
  /** Waits until `user:password` from `address` gets `kind`. */
  const until = (kind: AuthResult['kind'], user: string, password: string, address = '192.0.2.1') =>
    waitFor(`${user} → ${kind}`, async () => (await controller.check(basic(user, password), address)).kind === kind, { timeoutMs: 10_000 })
  return { controller, file, logs, pool, until }
}

const line = (user: string, password: string, cost = 4) => `${user}:${hashPassword(password, cost)}\n`

test('an edit that removes a user and adds a bad line: the removal applies, only the bad line is refused (with its number)', async t => {
  const { controller, file, logs, until } = await setup(t, line('alice', 'a') + line('bob', 'b'))
  t.is((await controller.check(basic('bob', 'b'), '192.0.2.1')).kind, 'ok')
  await writeFile(file, line('alice', 'a') + 'carol:$apr1$abcdefgh$0123456789abcdefghijkl\n' + line('dave', 'd'))
  await until('challenge', 'bob', 'b')
  t.is((await controller.check(basic('alice', 'a'), '192.0.2.1')).kind, 'ok')
  t.is((await controller.check(basic('dave', 'd'), '192.0.2.1')).kind, 'ok', 'a user added by the same edit can log in')
  t.is((await controller.check(basic('carol', 'whatever'), '192.0.2.1')).kind, 'challenge')
  t.true(
    logs.some(entry => /ERROR htpasswd file not reloaded in full.*line 2: user \\?"carol\\?" has an MD5/.test(entry)),
    logs.join('\n'),
  )
})

test('a user on two lines is refused on both after an edit', async t => {
  const { controller, file, until } = await setup(t, line('alice', 'a') + line('bob', 'b'))
  await writeFile(file, line('alice', 'a') + line('bob', 'b') + line('bob', 'other'))
  await until('challenge', 'bob', 'b')
  t.is((await controller.check(basic('bob', 'other'), '192.0.2.1')).kind, 'challenge')
  t.is((await controller.check(basic('alice', 'a'), '192.0.2.1')).kind, 'ok')
})

test("local mode ('open') follows the file both ways and says what it now does", async t => {
  const { controller, file, logs, until } = await setup(t, undefined, { whenMissing: 'open' })
  t.is((await controller.check(undefined, '192.0.2.1')).kind, 'open')
  await writeFile(file, line('u', 'pw'))
  await waitFor('login required', async () => (await controller.check(undefined, '192.0.2.1')).kind === 'challenge')
  await until('ok', 'u', 'pw')
  await writeFile(file, '# all users removed\n')
  await waitFor('open again (empty file)', async () => (await controller.check(undefined, '192.0.2.1')).kind === 'open')
  t.true(
    logs.some(entry => /WARN .*has no users any more: the registry now accepts requests without credentials/.test(entry)),
    logs.join('\n'),
  )
  await writeFile(file, line('u', 'pw'))
  await waitFor('login required again', async () => (await controller.check(undefined, '192.0.2.1')).kind === 'challenge')
  t.true(logs.some(entry => /htpasswd file has users: a login is required again/.test(entry)))
  await unlink(file)
  await waitFor('open again (file removed)', async () => (await controller.check(undefined, '192.0.2.1')).kind === 'open')
  t.true(
    logs.some(entry => /WARN +no htpasswd file any more: the registry now accepts requests without credentials/.test(entry)),
    logs.join('\n'),
  )
})

test("HTTPS mode ('closed'): a file removed or emptied while running refuses everyone and logs the fix; users back → logins again", async t => {
  const { controller, file, logs, until } = await setup(t, line('alice', 'a'), { whenMissing: 'closed' })
  await until('ok', 'alice', 'a')
  await unlink(file)
  await until('challenge', 'alice', 'a')
  t.is((await controller.check(undefined, '192.0.2.1')).kind, 'challenge', 'never open to anonymous users')
  t.true(controller.enabled)
  t.true(
    logs.some(entry => /ERROR no htpasswd file any more: every request is refused .*Fix: berth htpasswd add <user> --file /.test(entry)),
    logs.join('\n'),
  )
  await writeFile(file, line('alice', 'a'))
  await until('ok', 'alice', 'a')
  await writeFile(file, '\n')
  await until('challenge', 'alice', 'a')
  t.is((await controller.check(undefined, '192.0.2.1')).kind, 'challenge')
  t.true(
    logs.some(entry => /ERROR the htpasswd file has no users any more: every request is refused/.test(entry)),
    logs.join('\n'),
  )
})

test("'closed' with no file at start refuses everything", async t => {
  const { controller } = await setup(t, undefined, { whenMissing: 'closed' })
  t.is((await controller.check(undefined, '192.0.2.1')).kind, 'challenge')
  t.is((await controller.check(basic('a', 'b'), '192.0.2.1')).kind, 'challenge')
})

test('one mistyped password sent by many requests (in parallel and again and again) is one failure: no 429, and the right password then works', async t => {
  const { controller } = await setup(t, line('alice', 'right', 6))
  const parallel = await Promise.all(Array.from({ length: 10 }, () => controller.check(basic('alice', 'typo'), '192.0.2.9')))
  t.deepEqual([...new Set(parallel.map(result => result.kind))], ['challenge'])
  for (let i = 0; i < 25; i++) t.is((await controller.check(basic('alice', 'typo'), '192.0.2.9')).kind, 'challenge', `retry ${i}`)
  // Nine more distinct wrong passwords: ten distinct in all, the burst.
  for (let i = 0; i < 9; i++) t.is((await controller.check(basic('alice', `typo${i}`), '192.0.2.9')).kind, 'challenge')
  t.is((await controller.check(basic('alice', 'right'), '192.0.2.9')).kind, 'throttled', 'an eleventh distinct password waits')
})

test('a correct password after a few typos logs in and forgives them; a credential verified before keeps working under guessing', async t => {
  const { controller } = await setup(t, line('alice', 'right', 6) + line('bob', 'b', 6))
  for (let i = 0; i < 9; i++) await controller.check(basic('alice', `typo${i}`), '192.0.2.9')
  t.is((await controller.check(basic('alice', 'right'), '192.0.2.9')).kind, 'ok')
  for (let i = 0; i < 9; i++) t.is((await controller.check(basic('alice', `again${i}`), '192.0.2.9')).kind, 'challenge', 'the earlier typos were forgiven')
  // Someone guesses alice's password from her address until throttled: her verified credential still works.
  for (let i = 0; i < 5; i++) await controller.check(basic('alice', `guess${i}`), '192.0.2.9')
  t.is((await controller.check(basic('alice', 'guess-x'), '192.0.2.9')).kind, 'throttled')
  t.is((await controller.check(basic('alice', 'right'), '192.0.2.9')).kind, 'ok')
})

test("behind one address (NAT), one user's typos do not lock out another user", async t => {
  const { controller } = await setup(t, line('alice', 'a', 6) + line('bob', 'b', 6))
  for (let i = 0; i < 12; i++) await controller.check(basic('bob', `typo${i}`), '198.51.100.1')
  t.is((await controller.check(basic('bob', 'typo-more'), '198.51.100.1')).kind, 'throttled')
  t.is((await controller.check(basic('alice', 'a'), '198.51.100.1')).kind, 'ok', 'alice, never verified before, logs in')
})

test('a flood of wrong guesses from many addresses: a new address is admitted (no global 429) and served before most of the flood', async t => {
  const { controller, pool } = await setup(t, line('alice', 'right', 8))
  const finished: string[] = []
  const flood: Promise<AuthResult>[] = []
  for (let a = 0; a < 10; a++) {
    for (let i = 0; i < 10; i++) {
      flood.push(controller.check(basic('alice', `guess-${a}-${i}`), `203.0.113.${a}`).then(result => (finished.push('flood'), result)))
    }
  }
  t.true(pool.pending >= 90, `${pool.pending} compares waiting`)
  const legit = await controller.check(basic('alice', 'right'), '192.0.2.77')
  finished.push('legit')
  t.is(legit.kind, 'ok')
  const results = await Promise.all(flood)
  t.false(results.some(result => result.kind === 'ok'))
  t.true(finished.indexOf('legit') < 20, `the legitimate login waited for ${finished.indexOf('legit')} of ${flood.length} compares`)
})

test('one address may keep only a bounded number of compares waiting; others are unaffected', async t => {
  const { controller } = await setup(t, line('alice', 'right', 8), { maxPendingPerAddress: 3, throttle: { burst: 100, addressBurst: 100 } })
  const results = await Promise.all(Array.from({ length: 8 }, (_, i) => controller.check(basic('alice', `guess${i}`), '203.0.113.1')))
  t.is(results.filter(result => result.kind === 'throttled').length, 5)
  t.is((await controller.check(basic('alice', 'right'), '203.0.113.2')).kind, 'ok')
})

test('a failed check takes as long for an unknown user as for a known one, whatever their bcrypt cost (cost 5 and 10 in one file)', async t => {
  t.timeout(120_000)
  const { controller } = await setup(t, line('cheap1', 'x', 5) + line('cheap2', 'x', 5) + line('cheap3', 'x', 5) + line('dear', 'x', 10), {
    throttle: { burst: 1000, addressBurst: 1000 },
  })
  const timeOf = async (user: string, i: number) => {
    const started = performance.now()
    const result = await controller.check(basic(user, `wrong-${i}`), '192.0.2.1')
    t.is(result.kind, 'challenge')
    return performance.now() - started
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!
  const samples: Record<string, number[]> = { cheap1: [], dear: [], nobody: [] }
  for (let i = 0; i < 7; i++) for (const user of Object.keys(samples)) samples[user]!.push(await timeOf(user, i))
  const [cheap, dear, nobody] = [median(samples['cheap1']!), median(samples['dear']!), median(samples['nobody']!)]
  t.log(`median failed check: cost-5 user ${cheap.toFixed(1)} ms, cost-10 user ${dear.toFixed(1)} ms, unknown user ${nobody.toFixed(1)} ms`)
  for (const [name, value] of [
    ['cost-5 user', cheap],
    ['unknown user', nobody],
  ] as const) {
    t.true(value > dear * 0.6 && value < dear * 1.6, `${name}: ${value.toFixed(1)} ms vs ${dear.toFixed(1)} ms for the cost-10 user`)
  }
  // Successes are not padded.
  const started = performance.now()
  t.is((await controller.check(basic('cheap2', 'x'), '192.0.2.1')).kind, 'ok')
  t.true(performance.now() - started < dear * 0.6, 'a cost-5 success is not delayed')
})

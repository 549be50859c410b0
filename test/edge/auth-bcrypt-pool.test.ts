/**
 * The bcrypt worker pool: its vendored bcryptjs is the installed one, compares leave the event
 * loop free, and a free worker serves the waiting keys round-robin.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import test from 'ava'
import { BcryptPool } from '../../src/edge/auth/bcrypt-pool.js'
import { BCRYPTJS_UMD_SOURCE, BCRYPTJS_VERSION } from '../../src/edge/auth/bcryptjs-source.generated.js'
import { CredentialVerifier, hashPassword } from '../../src/edge/auth/htpasswd.js'

const GENERATED = new URL('../../src/edge/auth/bcryptjs-source.generated.ts', import.meta.url)

test('the vendored bcryptjs source is the installed bcryptjs (BERTH_UPDATE_VENDORED=1 rewrites it)', t => {
  const require = createRequire(import.meta.url)
  const root = dirname(dirname(require.resolve('bcryptjs'))) // <root>/umd/index.js
  const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version
  const source = readFileSync(join(root, 'umd', 'index.js'), 'utf8')
  if (process.env['BERTH_UPDATE_VENDORED'] === '1' && (source !== BCRYPTJS_UMD_SOURCE || version !== BCRYPTJS_VERSION)) {
    const header = readFileSync(GENERATED, 'utf8')
      .split('\n')
      .filter(line => line.startsWith('//'))
      .join('\n')
      .replace(/bcryptjs [\d.]+ /, `bcryptjs ${version} `)
    writeFileSync(GENERATED, `${header}\nexport const BCRYPTJS_VERSION = '${version}'\nexport const BCRYPTJS_UMD_SOURCE = ${JSON.stringify(source)}\n`)
    t.log(`rewrote ${GENERATED.pathname} from bcryptjs ${version}`)
    return t.pass()
  }
  t.is(BCRYPTJS_VERSION, version, 'bcryptjs was updated: run this test with BERTH_UPDATE_VENDORED=1')
  t.true(source === BCRYPTJS_UMD_SOURCE, 'bcryptjs was updated: run this test with BERTH_UPDATE_VENDORED=1')
})

test('compares run off the event loop: timers keep firing while cost-12 compares run', async t => {
  const pool = new BcryptPool({ size: 1 })
  t.teardown(() => pool.close())
  const verifier = await CredentialVerifier.create(new Map([['u', hashPassword('pw', 12)]]), { pool })
  let last = performance.now()
  let longest = 0
  const ticker = setInterval(() => {
    const now = performance.now()
    longest = Math.max(longest, now - last)
    last = now
  }, 5)
  const started = performance.now()
  const results = await Promise.all(['a', 'b', 'c'].map(password => verifier.verify('u', password)))
  const elapsed = performance.now() - started
  clearInterval(ticker)
  t.deepEqual(results, [false, false, false])
  // One cost-12 compare on the loop would stop the timer for its whole length (~250 ms here).
  t.true(longest < elapsed / 4, `the event loop stalled ${longest.toFixed(0)} ms during ${elapsed.toFixed(0)} ms of compares`)
})

test('a free worker serves the waiting keys round-robin: one key queueing many jobs does not starve another', async t => {
  const pool = new BcryptPool({ size: 1 })
  t.teardown(() => pool.close())
  const hash = hashPassword('pw', 8)
  const order: string[] = []
  const flood = Array.from({ length: 10 }, (_, i) => pool.compare('flood', `guess${i}`, hash).then(() => order.push('flood')))
  const other = pool.compare('other', 'pw', hash).then(({ value }) => {
    order.push('other')
    return value
  })
  t.is(pool.pendingFor('flood'), 10)
  t.is(pool.pendingFor('other'), 1)
  t.true(await other)
  await Promise.all(flood)
  t.true(order.indexOf('other') <= 2, `other finished after ${order.indexOf('other')} flood jobs: ${order.join(',')}`)
  t.is(pool.pending, 0)
})

test('a closed pool rejects what it held and works again afterwards', async t => {
  const pool = new BcryptPool({ size: 1 })
  const hash = hashPassword('pw', 10)
  const held = Array.from({ length: 3 }, () => pool.compare('k', 'pw', hash))
  await pool.close()
  for (const job of held) await t.throwsAsync(job, { message: /closed/ })
  t.is(pool.pending, 0)
  t.true((await pool.compare('k', 'pw', hash)).value)
  await pool.close()
})

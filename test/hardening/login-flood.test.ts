/**
 * A login flood (issue 20, finding 1): many wrong guesses from many loopback addresses against a
 * real `berth serve --local --htpasswd` whose users have bcrypt cost 10 (what `berth htpasswd`
 * writes). While the guesses wait for bcrypt, a legitimate login that is not cached yet, from
 * another address, succeeds, and a logged-in user's download takes at most twice its quiet time:
 * bcrypt runs in worker threads, fairly per address, and cached logins never queue.
 */
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import test from 'ava'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { startBerth } from '../helpers/berth.js'
import { basic, pushBlob, requestFrom, sha256, size, tempDir } from './common.js'

const ADDRESSES = size(6, 20)
/** Distinct wrong guesses per address: alice's password, then unknown user names (bcrypt against the dummy hash). */
const GUESSES = size(50, 50)
/** Guesses each address keeps waiting at once (more than the old global bound of 32 in all). */
const IN_FLIGHT = 8
const BLOB_MIB = size(20, 20)
const SAMPLES = size(3, 5)

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

test('a login flood from many addresses neither locks out a new login nor slows a running download', async t => {
  t.timeout(size(180_000, 600_000))
  const dir = await tempDir(t)
  const htpasswd = `${dir}/htpasswd`
  await writeFile(htpasswd, `alice:${hashPassword('alice-secret', 10)}\nbob:${hashPassword('bob-secret', 10)}\n`)
  const berth = await startBerth({ datadir: `${dir}/datadir`, args: ['--htpasswd', htpasswd] })
  t.teardown(() => berth.stop())
  const alice = { authorization: basic('alice', 'alice-secret') }

  const content = randomBytes(BLOB_MIB * 1024 * 1024)
  const digest = await pushBlob(berth.url, 'flood/app', content, alice)
  const download = async () => {
    const started = performance.now()
    const response = await requestFrom(berth.url, `/v2/flood/app/blobs/${digest}`, { headers: alice, localAddress: '127.0.0.2', timeoutMs: 60_000 })
    const ms = performance.now() - started
    if (response.status !== 200 || sha256(response.body) !== digest) throw new Error(`download: ${response.status}`)
    return ms
  }
  await download() // warm
  const quiet: number[] = []
  for (let i = 0; i < SAMPLES; i++) quiet.push(await download())

  // The attack: each address keeps IN_FLIGHT distinct guesses waiting until the measurements are
  // done, so they are taken while bcrypt is busy (a burst sent once would have drained by then).
  let attacking = true
  let lastRefusalAfterBcrypt = 0
  const counts: Record<number, number> = {}
  const attacker = async (a: number) => {
    const localAddress = `127.0.0.${10 + a}`
    let g = 0
    const next = async (): Promise<void> => {
      while (attacking && g < GUESSES) {
        const i = g++
        const user = i < 10 ? 'alice' : `user-${a}-${i}`
        const response = await requestFrom(berth.url, '/v2/', { headers: { authorization: basic(user, `guess-${a}-${i}`) }, localAddress, timeoutMs: 600_000 })
        counts[response.status] = (counts[response.status] ?? 0) + 1
        if (response.status === 401) lastRefusalAfterBcrypt = performance.now()
      }
    }
    await Promise.all(Array.from({ length: IN_FLIGHT }, next))
  }
  const attack = Promise.all(Array.from({ length: ADDRESSES }, (_, a) => attacker(a)))
  await new Promise(resolve => setTimeout(resolve, 1000))

  const underAttack: number[] = []
  for (let i = 0; i < SAMPLES; i++) underAttack.push(await download())
  const loginStarted = performance.now()
  const login = await requestFrom(berth.url, '/v2/', { headers: { authorization: basic('bob', 'bob-secret') }, localAddress: '127.0.0.250', timeoutMs: 60_000 })
  const measured = performance.now()
  const loginMs = measured - loginStarted
  // Give a guess that was waiting at the end of the measurements time to come back refused.
  await new Promise(resolve => setTimeout(resolve, 500))
  attacking = false
  await attack

  t.log(`guesses from ${ADDRESSES} addresses, ${IN_FLIGHT} in flight each: ${JSON.stringify(counts)}`)
  t.log(
    `download of ${BLOB_MIB} MiB: quiet median ${median(quiet).toFixed(0)} ms (${quiet.map(ms => ms.toFixed(0)).join(', ')}), under attack ${median(underAttack).toFixed(0)} ms (${underAttack.map(ms => ms.toFixed(0)).join(', ')})`,
  )
  t.log(`bob's first login under attack: ${login.status} in ${loginMs.toFixed(0)} ms`)

  t.true(lastRefusalAfterBcrypt > measured, 'guesses were still being checked with bcrypt when the measurements ended')
  t.is(login.status, 200, `a legitimate login from another address: ${login.status} ${login.body.toString().slice(0, 200)}`)
  t.is(counts[200], undefined, JSON.stringify(counts))
  // 2× the quiet time, and 50 ms for timer and scheduling noise on a shared machine.
  t.true(median(underAttack) <= 2 * median(quiet) + 50, `download under attack ${median(underAttack).toFixed(0)} ms vs ${median(quiet).toFixed(0)} ms quiet`)
})

/** `--mirror`, `--mirror-default`, `--mirror-tag-ttl` and `--mirror-max-size` from flags, the environment and the config file. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { ConfigError } from '../../src/config/errors.js'
import { loadConfig } from '../../src/config/load.js'

test('repeated --mirror flags, a default prefix and the tag TTL (5 minutes unless set)', async t => {
  const config = await loadConfig({
    flags: { local: true, mirror: ['docker.io=https://hub.example.test/', 'quay.example=https://quay.example.test'], mirrorDefault: 'docker.io' },
    env: {},
  })
  t.deepEqual(config.mirrors, [
    { prefix: 'docker.io', url: 'https://hub.example.test' },
    { prefix: 'quay.example', url: 'https://quay.example.test' },
  ])
  t.is(config.mirrorDefault, 'docker.io')
  t.is(config.mirrorTagTtlMs, 5 * 60_000)
  const ttl = await loadConfig({ flags: { local: true, mirror: ['a=http://127.0.0.1:5001'], mirrorTagTtl: '30s' }, env: {} })
  t.is(ttl.mirrorTagTtlMs, 30_000)
})

test('BERTH_MIRROR is comma-separated', async t => {
  const config = await loadConfig({ flags: { local: true }, env: { BERTH_MIRROR: 'docker.io=http://127.0.0.1:5001, other.test=http://127.0.0.1:5002' } })
  t.deepEqual(
    config.mirrors.map(mirror => mirror.prefix),
    ['docker.io', 'other.test'],
  )
})

test('the config file gives credentials per upstream, and they are never echoed in errors', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-config-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'berth.yml')
  await writeFile(
    file,
    'local: true\nmirror:\n  - docker.io=http://127.0.0.1:5001\n  - prefix: private.test\n    url: https://private.example.test\n    username: robot\n    password: hunter2\n',
  )
  const config = await loadConfig({ configFile: file, env: {} })
  t.deepEqual(config.mirrors[1], { prefix: 'private.test', url: 'https://private.example.test', username: 'robot', password: 'hunter2' })
  await writeFile(file, 'local: true\nmirror:\n  - prefix: private.test\n    url: https://private.example.test\n    username: robot\n')
  const error = await t.throwsAsync(loadConfig({ configFile: file, env: {} }), { instanceOf: ConfigError })
  t.regex(error.message, /username and password together/)
})

test('refused: a bad entry, a prefix twice, a default that names no mirror, --mirror with --upstream', async t => {
  const load = (flags: Record<string, unknown>) => loadConfig({ flags: { local: true, ...flags }, env: {} })
  await t.throwsAsync(load({ mirror: ['docker.io'] }), { message: /invalid --mirror: expected prefix=URL/ })
  await t.throwsAsync(load({ mirror: ['Docker.io=http://x'] }), { message: /mirror prefix of lower-case letters/ })
  await t.throwsAsync(load({ mirror: ['a=ftp://x'] }), { message: /http:\/\/ or https:\/\/ upstream URL/ })
  await t.throwsAsync(load({ mirror: ['a=http://x', 'a=http://y'] }), { message: /each prefix once/ })
  await t.throwsAsync(load({ mirror: ['a=http://x'], mirrorDefault: 'b' }), { message: /--mirror-default b names no --mirror prefix \(given: a\)/ })
  await t.throwsAsync(load({ mirror: ['a=http://x'], upstream: 'http://y' }), { message: /--mirror and --upstream exclude each other/ })
})

test('--mirror-max-size: a size (flag, variable, file), no cap unless set, ignored with a warning without --mirror', async t => {
  const none = await loadConfig({ flags: { local: true, mirror: ['a=http://127.0.0.1:5001'] }, env: {} })
  t.is(none.mirrorMaxSizeBytes, undefined)
  const flag = await loadConfig({ flags: { local: true, mirror: ['a=http://127.0.0.1:5001'], mirrorMaxSize: '20g' }, env: {} })
  t.is(flag.mirrorMaxSizeBytes, 20 * 1024 ** 3)
  const env = await loadConfig({ flags: { local: true, mirror: ['a=http://127.0.0.1:5001'] }, env: { BERTH_MIRROR_MAX_SIZE: '500m' } })
  t.is(env.mirrorMaxSizeBytes, 500 * 1024 ** 2)
  const dir = await mkdtemp(join(tmpdir(), 'berth-mirror-size-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'berth.yml')
  await writeFile(file, 'local: true\nmirror:\n  - a=http://127.0.0.1:5001\nmirror-max-size: 1g\n')
  t.is((await loadConfig({ configFile: file, env: {} })).mirrorMaxSizeBytes, 1024 ** 3)
  const alone = await loadConfig({ flags: { local: true, mirrorMaxSize: '1g' }, env: {} })
  t.is(alone.mirrorMaxSizeBytes, undefined)
  t.true(alone.warnings.includes('--mirror-max-size ignored without --mirror'))
  await t.throwsAsync(loadConfig({ flags: { local: true, mirror: ['a=http://x'], mirrorMaxSize: 'lots' }, env: {} }), { instanceOf: ConfigError })
})

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { ConfigError } from '../../src/config/errors.js'
import { loadConfig } from '../../src/config/load.js'
import { parseSize } from '../../src/config/values.js'

async function tempDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-config-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

test('defaults: local mode on 127.0.0.1:5000, ./datadir, htpasswd inside it, 5 GiB body limit', async t => {
  const config = await loadConfig({ flags: { local: true }, env: {}, cwd: '/srv/berth' })
  t.is(config.mode, 'local')
  t.is(config.port, 5000)
  t.is(config.datadir, '/srv/berth/datadir')
  t.is(config.htpasswd, '/srv/berth/datadir/htpasswd')
  t.false(config.isHtpasswdExplicit)
  t.is(config.maxBody, 5 * 1024 ** 3)
  t.is(config.certs, '/srv/berth/certs')
  t.is(config.httpsPort, 443)
  t.is(config.httpPort, 80)
  t.is(config.host, '127.0.0.1', 'this machine only')
  t.is(config.logLevel, 'info')
  t.is(config.logFormat, 'text')
})

test('listen address: local mode defaults to 127.0.0.1, HTTPS mode to every interface; --host wins in both', async t => {
  const load = (flags: Record<string, unknown>) => loadConfig({ flags, env: {}, cwd: '/srv/berth' })
  t.is((await load({ local: true, host: '::' })).host, '::')
  t.is((await load({ selfSigned: true })).host, undefined)
  t.is((await load({ selfSigned: true, host: '127.0.0.1' })).host, '127.0.0.1')
})

test('precedence: flag > BERTH_* > config file > default, setting by setting', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'berth.yaml')
  await writeFile(file, 'local: true\nport: 7000\nhost: 127.0.0.1\nrealm: from-file\nmax-body: 1g\ndatadir: ./data-from-file\n')
  const config = await loadConfig({
    configFile: file,
    env: { BERTH_PORT: '6000', BERTH_REALM: 'from-env' },
    flags: { port: '5555' },
    cwd: '/elsewhere',
  })
  t.is(config.port, 5555, 'flag beats env and file')
  t.is(config.realm, 'from-env', 'env beats file')
  t.is(config.host, '127.0.0.1', 'file beats default')
  t.is(config.maxBody, 1024 ** 3)
  t.is(config.datadir, join(dir, 'data-from-file'), 'relative paths in a file are relative to the file')
  t.is(config.configFile, file)
})

test('BERTH_CONFIG names the file; JSON works too; camelCase keys are accepted', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'berth.json')
  await writeFile(file, JSON.stringify({ selfSigned: true, domain: ['a.example.com', 'b.example.com'], httpsPort: 8443 }))
  const config = await loadConfig({ env: { BERTH_CONFIG: file }, cwd: dir })
  t.is(config.mode, 'https')
  t.deepEqual(config.certificate, { kind: 'self-signed' })
  t.deepEqual(config.domains, ['a.example.com', 'b.example.com'])
  t.is(config.httpsPort, 8443)
})

test('allowAnonymous: off by default; --allow-anonymous, BERTH_ALLOW_ANONYMOUS and the config key (allowAnonymous or allow-anonymous) turn it on', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-config-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  t.false((await loadConfig({ env: { BERTH_SELF_SIGNED: 'true' } })).allowAnonymous)
  t.true((await loadConfig({ env: { BERTH_SELF_SIGNED: 'true', BERTH_ALLOW_ANONYMOUS: 'true' } })).allowAnonymous)
  t.false((await loadConfig({ env: { BERTH_SELF_SIGNED: 'true', BERTH_ALLOW_ANONYMOUS: 'false' } })).allowAnonymous)
  t.true((await loadConfig({ env: { BERTH_SELF_SIGNED: 'true' }, flags: { allowAnonymous: true } })).allowAnonymous)
  for (const key of ['allowAnonymous', 'allow-anonymous']) {
    const file = join(dir, `${key}.yaml`)
    await writeFile(file, `self-signed: true\n${key}: true\n`)
    t.true((await loadConfig({ env: { BERTH_CONFIG: file }, cwd: dir })).allowAnonymous, key)
  }
  await t.throwsAsync(loadConfig({ env: { BERTH_SELF_SIGNED: 'true', BERTH_ALLOW_ANONYMOUS: 'maybe' } }), {
    message: /^invalid BERTH_ALLOW_ANONYMOUS "maybe": expected /,
  })
  const local = await loadConfig({ env: { BERTH_LOCAL: 'true', BERTH_ALLOW_ANONYMOUS: 'true' } })
  t.true(
    local.warnings.some(warning => warning.startsWith('--allow-anonymous has no effect in --local mode')),
    local.warnings.join('; '),
  )
})

test('access file: <datadir>/access.yml only when it exists; --access, BERTH_ACCESS and the config key name one (relative to their base)', async t => {
  const dir = await tempDir(t)
  const datadir = join(dir, 'datadir')
  t.is((await loadConfig({ flags: { local: true, datadir }, env: {}, cwd: dir })).accessFile, undefined, 'no file: no rules')
  await mkdir(datadir)
  await writeFile(join(datadir, 'access.yml'), 'rules: []\n')
  t.is((await loadConfig({ flags: { local: true, datadir }, env: {}, cwd: dir })).accessFile, join(datadir, 'access.yml'))
  t.is(
    (await loadConfig({ flags: { local: true, datadir, access: 'mine.yml' }, env: {}, cwd: dir })).accessFile,
    join(dir, 'mine.yml'),
    'named: kept even if missing',
  )
  t.is((await loadConfig({ env: { BERTH_LOCAL: '1', BERTH_ACCESS: '/etc/berth/access.yml' }, cwd: dir })).accessFile, '/etc/berth/access.yml')
  const file = join(dir, 'conf', 'berth.yaml')
  await mkdir(join(dir, 'conf'))
  await writeFile(file, 'local: true\naccess: rules.yml\n')
  t.is((await loadConfig({ env: { BERTH_CONFIG: file }, cwd: dir })).accessFile, join(dir, 'conf', 'rules.yml'))
})

test('readOnly: off by default; --read-only, BERTH_READ_ONLY and the config key turn it on', async t => {
  const dir = await tempDir(t)
  t.false((await loadConfig({ flags: { local: true }, env: {} })).readOnly)
  t.true((await loadConfig({ flags: { local: true, readOnly: true }, env: {} })).readOnly)
  t.true((await loadConfig({ env: { BERTH_LOCAL: '1', BERTH_READ_ONLY: 'true' } })).readOnly)
  t.false((await loadConfig({ env: { BERTH_LOCAL: '1', BERTH_READ_ONLY: 'false' } })).readOnly)
  const file = join(dir, 'berth.yaml')
  await writeFile(file, 'local: true\nread-only: true\n')
  t.true((await loadConfig({ env: { BERTH_CONFIG: file }, cwd: dir })).readOnly)
})

test('--log-format json from the flag, BERTH_LOG_FORMAT or the config file', async t => {
  t.is((await loadConfig({ flags: { local: true, logFormat: 'json' }, env: {} })).logFormat, 'json')
  t.is((await loadConfig({ env: { BERTH_LOCAL: '1', BERTH_LOG_FORMAT: 'json' } })).logFormat, 'json')
})

test('BERTH_DOMAIN takes a comma-separated list; repeated --domain flags replace it', async t => {
  const fromEnv = await loadConfig({ env: { BERTH_DOMAIN: 'a.example.com, b.example.com', BERTH_SELF_SIGNED: 'true' } })
  t.deepEqual(fromEnv.domains, ['a.example.com', 'b.example.com'])
  const fromFlags = await loadConfig({ env: { BERTH_DOMAIN: 'a.example.com', BERTH_SELF_SIGNED: '1' }, flags: { domain: ['c.example.com'] } })
  t.deepEqual(fromFlags.domains, ['c.example.com'])
})

test('ACME: directory presets resolve, EAB pair is kept, email is checked', async t => {
  const config = await loadConfig({
    env: {},
    flags: {
      acme: true,
      domain: ['registry.example.com'],
      acmeAgreeTos: true,
      acmeEmail: 'me@example.com',
      acmeDirectory: 'letsencrypt-staging',
      acmeEabKid: 'kid',
      acmeEabHmac: 'aGVsbG8',
    },
  })
  t.like(config.certificate, {
    kind: 'acme',
    directory: 'https://acme-staging-v02.api.letsencrypt.org/directory',
    email: 'me@example.com',
    eab: { kid: 'kid', hmacKey: 'aGVsbG8' },
  })
})

const badValues: Array<[string, Parameters<typeof loadConfig>[0], RegExp]> = [
  ['port not a number', { env: { BERTH_PORT: 'abc', BERTH_LOCAL: '1' } }, /^invalid BERTH_PORT "abc": expected a port number from 1 to 65535$/],
  ['port out of range', { flags: { local: true, port: '70000' } }, /^invalid --port "70000": expected a port number from 1 to 65535$/],
  ['boolean', { env: { BERTH_LOCAL: 'maybe' } }, /^invalid BERTH_LOCAL "maybe": expected true or false/],
  ['size', { flags: { local: true, maxBody: 'lots' } }, /^invalid --max-body "lots": expected a size such as 5g/],
  ['domain with scheme', { flags: { selfSigned: true, domain: ['https://r.example.com'] } }, /^invalid --domain .*no scheme, port or path/],
  [
    'upstream not a URL',
    { flags: { local: true, upstream: 'localhost:5000' } },
    /^invalid --upstream "localhost:5000": expected an http:\/\/ or https:\/\/ URL/,
  ],
  ['log level', { env: { BERTH_LOG_LEVEL: 'loud', BERTH_LOCAL: '1' } }, /^invalid BERTH_LOG_LEVEL "loud": expected one of debug, info, warn, error$/],
  ['log format', { env: { BERTH_LOG_FORMAT: 'xml', BERTH_LOCAL: '1' } }, /^invalid BERTH_LOG_FORMAT "xml": expected one of text, json$/],
  ['acme directory', { flags: { acme: true, domain: ['r.example.com'], acmeAgreeTos: true, acmeDirectory: 'http://ca' } }, /^invalid --acme-directory/],
  ['no certificate source', { env: {} }, /needs a certificate: .*--local/],
  ['two certificate sources', { flags: { selfSigned: true, acme: true } }, /^choose one certificate source, not --self-signed and --acme$/],
  ['cert without key', { flags: { tlsCert: 'c.pem' } }, /^--tls-cert needs --tls-key/],
  ['local with TLS', { flags: { local: true, tlsCert: 'c.pem', tlsKey: 'k.pem' } }, /^--local serves plain HTTP and cannot be combined with --tls-cert/],
  ['acme without domain', { flags: { acme: true, acmeAgreeTos: true } }, /^--acme needs at least one --domain/],
  ['acme without tos', { flags: { acme: true, domain: ['r.example.com'] } }, /^--acme needs --acme-agree-tos/],
  ['acme half EAB', { flags: { acme: true, domain: ['r.example.com'], acmeAgreeTos: true, acmeEabKid: 'x' } }, /go together/],
  ['same ports', { flags: { selfSigned: true, httpPort: '8080', httpsPort: '8080' } }, /both 8080; they must differ/],
]

for (const [name, sources, message] of badValues) {
  test(`a wrong value stops with one line naming the setting: ${name}`, async t => {
    const error = await t.throwsAsync(loadConfig({ env: {}, ...sources }), { instanceOf: ConfigError })
    t.regex(error.message, message)
    t.false(error.message.includes('\n'), 'one line')
  })
}

test('a secret value is never echoed in an error', async t => {
  const error = await t.throwsAsync(loadConfig({ env: { BERTH_ACME_EAB_HMAC: ' ', BERTH_LOCAL: '1' }, flags: { acmeEabHmac: ['x'] as unknown as string } }))
  t.false(error?.message.includes('"x"'))
})

test('config file: unknown key, bad YAML, missing file, not a mapping', async t => {
  const dir = await tempDir(t)
  await writeFile(join(dir, 'typo.yaml'), 'prot: 5000\n')
  await writeFile(join(dir, 'broken.yaml'), 'port: [5000\n')
  await writeFile(join(dir, 'list.yaml'), '- port\n')
  await writeFile(join(dir, 'bad-value.yaml'), 'local: true\nport: http\n')
  await t.throwsAsync(loadConfig({ configFile: join(dir, 'typo.yaml') }), {
    instanceOf: ConfigError,
    message: /^unknown setting "prot" in typo.yaml; known settings: local, port,/,
  })
  await t.throwsAsync(loadConfig({ configFile: join(dir, 'broken.yaml') }), { instanceOf: ConfigError, message: /is not valid YAML or JSON/ })
  await t.throwsAsync(loadConfig({ configFile: join(dir, 'missing.yaml') }), {
    instanceOf: ConfigError,
    message: /cannot read config file .*missing.yaml: no such file/,
  })
  await t.throwsAsync(loadConfig({ configFile: join(dir, 'list.yaml') }), { instanceOf: ConfigError, message: /must be a mapping/ })
  await t.throwsAsync(loadConfig({ configFile: join(dir, 'bad-value.yaml') }), {
    instanceOf: ConfigError,
    message: /^invalid port in bad-value.yaml "http": expected a port number/,
  })
})

test('warnings for settings that do nothing in the chosen mode', async t => {
  const config = await loadConfig({ flags: { local: true, httpsPort: '8443', acmeEmail: 'me@example.com' } })
  t.true(config.warnings.some(line => line.includes('--https-port ignored in --local mode')))
  t.true(config.warnings.some(line => line.includes('ACME settings are ignored without --acme (--acme-email)')))
})

test('sizes: nginx-style units are binary', t => {
  t.is(parseSize('5g'), 5 * 1024 ** 3)
  t.is(parseSize('5G'), 5 * 1024 ** 3)
  t.is(parseSize('512m'), 512 * 1024 ** 2)
  t.is(parseSize('100k'), 102400)
  t.is(parseSize('1.5GiB'), 1.5 * 1024 ** 3)
  t.is(parseSize('1048576'), 1048576)
  t.is(parseSize(4096), 4096)
  t.throws(() => parseSize('0'))
  t.throws(() => parseSize('-1g'))
  t.throws(() => parseSize('5x'))
})

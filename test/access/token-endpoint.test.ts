import test from 'ava'
import { createServer, request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { ResourceAccess } from '../../src/access/scope.js'
import { type LoginResult, tokenEndpoint } from '../../src/access/token-endpoint.js'
import { TokenKeys } from '../../src/access/token-keys.js'
import { TokenService } from '../../src/access/token-service.js'
import { DriverCertStore } from '../../src/edge/tls/cert-store.js'
import { parseBasicAuthorization } from '../../src/edge/auth/basic-auth.js'
import { createExchange } from '../../src/http/exchange.js'
import { silentLogger } from '../../src/log.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'

const SERVICE = 'registry.example'

/** alice/secret may push to alice/*; everyone may pull public/*; mallory is throttled. */
function grant(subject: string | undefined, requested: Readonly<ResourceAccess>): string[] {
  if (requested.name.startsWith('public/')) return ['pull']
  if (subject === 'alice' && requested.name.startsWith('alice/')) return ['pull', 'push', 'delete', 'overwrite']
  if (subject === 'alice' && requested.type === 'registry') return ['*']
  return []
}

async function login(authorization: string | undefined): Promise<LoginResult> {
  const credentials = parseBasicAuthorization(authorization)
  if (credentials === undefined) return { kind: 'anonymous' }
  if (credentials.user === 'mallory') return { kind: 'throttled', retryAfterSeconds: 7 }
  return credentials.user === 'alice' && credentials.password === 'secret' ? { kind: 'ok', user: 'alice' } : { kind: 'refused' }
}

const ready = (async () => {
  const keys = await TokenKeys.open(new DriverCertStore(new InMemoryDriver(), '/certs'), { maintainEveryMs: 0 })
  const tokens = new TokenService({ keys, issuer: 'berth', service: SERVICE })
  let logins = 0
  const handler = tokenEndpoint({
    tokens,
    login: exchange => (logins++, login(exchange.req.headers.authorization)),
    grant,
    realm: 'Berth',
    logger: silentLogger,
  })
  const server = createServer((req, res) => void handler(createExchange(req, res, 'http')))
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  server.unref()
  return { tokens, port: (server.address() as AddressInfo).port, logins: () => logins }
})()

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Record<string, unknown>
}

/**
 * A raw request (fetch would normalise the URL and refuse some headers), on its own connection: an
 * answer given before a body is read ends the connection, which a pooled socket could race.
 */
async function call(path: string, options: { user?: string; password?: string; authorization?: string; method?: string; body?: string } = {}): Promise<Answer> {
  const { port } = await ready
  const headers: Record<string, string> = {}
  if (options.authorization !== undefined) headers.authorization = options.authorization
  else if (options.user !== undefined) headers.authorization = `Basic ${Buffer.from(`${options.user}:${options.password ?? ''}`).toString('base64')}`
  if (options.body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded'
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers, agent: false }, res => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        resolve({ status: res.statusCode!, headers: res.headers, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) })
      })
    })
    req.on('error', reject)
    req.end(options.body)
  })
}

async function accessOf(answer: Answer): Promise<unknown> {
  const { tokens } = await ready
  const verdict = await tokens.verify(String(answer.body.token))
  return verdict.ok ? { subject: verdict.subject, access: verdict.access } : verdict
}

const q = (...scopes: string[]) => `/token?service=${SERVICE}${scopes.map(scope => `&scope=${encodeURIComponent(scope)}`).join('')}`

test('anonymous: a 200 token with what anonymous may do, even when that is nothing', async t => {
  const answer = await call(q('repository:public/app:pull,push', 'repository:alice/app:pull'))
  t.is(answer.status, 200)
  t.is(answer.headers['cache-control'], 'no-store')
  t.is(answer.body.token, answer.body.access_token)
  t.is(answer.body.expires_in, 300)
  t.regex(String(answer.body.issued_at), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
  t.deepEqual(await accessOf(answer), { subject: undefined, access: [{ type: 'repository', name: 'public/app', actions: ['pull'] }] })
  const none = await call(q('repository:alice/app:pull'))
  t.is(none.status, 200)
  t.deepEqual(await accessOf(none), { subject: undefined, access: [] })
})

test('a good login gets the intersection of what it asked for and what it may do', async t => {
  const answer = await call(`${q('repository:alice/app:push,pull', 'repository:bob/app:pull')}&account=alice&offline_token=true&client_id=docker`, {
    user: 'alice',
    password: 'secret',
  })
  t.is(answer.status, 200)
  t.is(answer.body.refresh_token, undefined)
  t.deepEqual(await accessOf(answer), { subject: 'alice', access: [{ type: 'repository', name: 'alice/app', actions: ['push', 'pull'] }] })
})

test('actions not requested are never granted, even when allowed', async t => {
  const answer = await call(q('repository:alice/app:pull'), { user: 'alice', password: 'secret' })
  t.deepEqual(await accessOf(answer), { subject: 'alice', access: [{ type: 'repository', name: 'alice/app', actions: ['pull'] }] })
  const unknown = await call(q('repository:alice/app:pull,admin'), { user: 'alice', password: 'secret' })
  t.deepEqual(await accessOf(unknown), { subject: 'alice', access: [{ type: 'repository', name: 'alice/app', actions: ['pull'] }] })
  const catalog = await call(q('registry:catalog:*'), { user: 'alice', password: 'secret' })
  t.deepEqual(await accessOf(catalog), { subject: 'alice', access: [{ type: 'registry', name: 'catalog', actions: ['*'] }] })
})

test('space-separated scopes in one parameter, and no scope at all (docker login)', async t => {
  const answer = await call(q('repository:public/a:pull repository:public/b:pull'))
  t.deepEqual(await accessOf(answer), {
    subject: undefined,
    access: [
      { type: 'repository', name: 'public/a', actions: ['pull'] },
      { type: 'repository', name: 'public/b', actions: ['pull'] },
    ],
  })
  const login = await call(`/token?account=alice&client_id=docker&offline_token=true&service=${SERVICE}`, { user: 'alice', password: 'secret' })
  t.is(login.status, 200)
  t.deepEqual(await accessOf(login), { subject: 'alice', access: [] })
})

test('a wrong password: 401 UNAUTHORIZED with a Basic challenge', async t => {
  const answer = await call(q('repository:alice/app:pull'), { user: 'alice', password: 'wrong' })
  t.is(answer.status, 401)
  t.is(answer.headers['www-authenticate'], 'Basic realm="Berth", charset="UTF-8"')
  t.like(answer.body, { errors: [{ code: 'UNAUTHORIZED', message: 'incorrect username or password' }] })
})

test('throttled: 429 with Retry-After', async t => {
  const answer = await call(q('repository:alice/app:pull'), { user: 'mallory', password: 'x' })
  t.is(answer.status, 429)
  t.is(answer.headers['retry-after'], '7')
  t.like(answer.body, { errors: [{ code: 'TOOMANYREQUESTS' }] })
})

test('a service other than ours, or two of them: 400', async t => {
  const other = await call('/token?service=elsewhere&scope=repository:public/a:pull')
  t.is(other.status, 400)
  t.like(other.body, { errors: [{ code: 'UNSUPPORTED' }] })
  t.is((await call(`/token?service=${SERVICE}&service=${SERVICE}`)).status, 400)
  t.is((await call('/token?scope=repository:public/a:pull')).status, 200, 'no service: ours')
})

test.serial('an account that is not the Basic user: 400, before any password check', async t => {
  const before = (await ready).logins()
  const answer = await call(`${q('repository:alice/app:pull')}&account=bob`, { user: 'alice', password: 'secret' })
  t.is(answer.status, 400)
  t.is((await ready).logins(), before)
  t.is((await call(`${q('repository:public/a:pull')}&account=bob`)).status, 200, 'without credentials the account names no one')
})

test.serial('credentials that are not Basic user:password: 401 without a login attempt', async t => {
  const before = (await ready).logins()
  for (const authorization of ['Basic !!!notbase64', `Basic ${Buffer.from('no-colon').toString('base64')}`, 'Bearer abc', 'Digest x', '']) {
    const answer = await call(q('repository:public/a:pull'), { authorization })
    t.is(answer.status, 401, authorization)
    t.truthy(answer.headers['www-authenticate'])
  }
  t.is((await ready).logins(), before)
})

test('hostile queries: clean 4xx, the server keeps answering', async t => {
  const scopes = Array.from({ length: 200 }, (_, i) => `repository:public/r${i}:pull`)
  const many = await call(q(...scopes))
  t.is(many.status, 400)
  t.like(many.body, { errors: [{ code: 'UNSUPPORTED', message: 'more than 100 scopes' }] })
  t.is((await call(q(scopes.slice(0, 101).join(' ')))).status, 400, '101 scopes in one parameter')
  t.is((await call(q(...scopes.slice(0, 100)))).status, 200, '100 scopes are fine')
  t.is((await call(q(`repository:public/${'a'.repeat(9000)}:pull`))).status, 400, 'query over 8 KiB')
  const garbage = await call(`/token?scope=%ZZ&scope=${encodeURIComponent('\u0000:\u0000:\u0000')}&scope=repository:public/x:pull&service`)
  t.is(garbage.status, 400, 'an empty service is not ours')
  const malformed = await call('/token?scope=%ZZ&scope=:::&scope=repository:public/x:pull&scope=repository:a:b:c:pull')
  t.is(malformed.status, 200)
  t.deepEqual(await accessOf(malformed), { subject: undefined, access: [{ type: 'repository', name: 'public/x', actions: ['pull'] }] })
  t.is((await call(q('repository:public/a:pull'))).status, 200)
})

test('POST (the OAuth2 form) is 404, the signal to fall back to GET; other methods 405', async t => {
  const post = await call('/token', { method: 'POST', body: `grant_type=password&username=alice&password=secret&service=${SERVICE}&client_id=ctr` })
  t.is(post.status, 404)
  t.like(post.body, { errors: [{ code: 'NOT_FOUND' }] })
  const put = await call(q('repository:public/a:pull'), { method: 'PUT' })
  t.is(put.status, 405)
  t.is(put.headers.allow, 'GET')
})

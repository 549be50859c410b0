import test from 'ava'
import { fc, testProp } from '@fast-check/ava'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createRedirectHandler, hostName } from '../../src/edge/redirect.js'
import { createExchange } from '../../src/http/exchange.js'

/** Calls the handler with a minimal request/response pair and returns status and Location. */
function redirect(domains: string[], host: string | undefined, url: string, method = 'GET', httpsPort = 443): { status: number; location?: string } {
  const handler = createRedirectHandler({ domains, httpsPort: () => httpsPort })
  let status = 0
  let location: string | undefined
  const socket = { destroySoon() {}, end() {}, once() {} }
  const req = {
    method,
    url,
    headers: host === undefined ? {} : { host },
    socket,
    unpipe() {},
    removeAllListeners() {},
    on() {},
    resume() {},
  } as unknown as IncomingMessage
  const res = {
    shouldKeepAlive: true,
    writeHead(code: number, headers: Record<string, string>) {
      status = code
      location = headers.location
    },
    end() {},
    once() {},
    setHeader() {},
  } as unknown as ServerResponse
  void handler(createExchange(req, res, 'http'))
  return { status, location }
}

test('host names are taken from Host without port or brackets, lower-cased', t => {
  t.is(hostName('Registry.Example.com:80'), 'registry.example.com')
  t.is(hostName('[::1]:80'), '::1')
  t.is(hostName('[2001:db8::1]'), '2001:db8::1')
  t.is(hostName(undefined), '')
})

test('Location keeps path and query, adds a non-default port, and picks 301/308 by method', t => {
  t.deepEqual(redirect(['r.example'], 'r.example', '/v2/a/b?c=d&e'), { status: 301, location: 'https://r.example/v2/a/b?c=d&e' })
  t.deepEqual(redirect(['r.example'], 'r.example', '/v2/', 'HEAD', 8443), { status: 301, location: 'https://r.example:8443/v2/' })
  for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) t.is(redirect(['r.example'], 'r.example', '/v2/', method).status, 308)
  t.deepEqual(redirect(['a.example', 'b.example'], 'B.example:80', '/x'), { status: 301, location: 'https://b.example/x' })
})

testProp(
  'no open redirect: whatever the Host header and path, the Location names a configured host',
  [fc.option(fc.string(), { nil: undefined }), fc.string(), fc.constantFrom('GET', 'POST', 'HEAD')],
  (t, host, path, method) => {
    const { location } = redirect(['registry.example', 'other.example'], host, path, method)
    t.truthy(location)
    const url = new URL(location!)
    t.true(['registry.example', 'other.example'].includes(url.hostname), location)
    t.is(url.protocol, 'https:')
  },
  { numRuns: 500 },
)

test('ACME challenge paths: a token-shaped one is asked (a shared-store answer may be async), an oversized one is 404 unasked', async t => {
  const asked: string[] = []
  const handler = createRedirectHandler({
    domains: ['registry.example.com'],
    httpsPort: () => 443,
    challenges: {
      keyAuthorization: async token => {
        asked.push(token)
        return token === 'A'.repeat(43) ? `${token}.thumb` : undefined
      },
    },
  })
  const call = async (path: string): Promise<{ status: number; body: string }> => {
    let status = 0
    let body = ''
    const req = { method: 'GET', url: path, headers: { host: 'registry.example.com' }, socket: {}, on() {} } as unknown as IncomingMessage
    const res = {
      shouldKeepAlive: true,
      writeHead(code: number) {
        status = code
      },
      end(text?: string) {
        body = text ?? ''
      },
      once() {},
      setHeader() {},
    } as unknown as ServerResponse
    await handler(createExchange(req, res, 'http'))
    return { status, body }
  }
  t.deepEqual(await call(`/.well-known/acme-challenge/${'A'.repeat(43)}`), { status: 200, body: `${'A'.repeat(43)}.thumb` })
  t.is((await call('/.well-known/acme-challenge/unknown')).status, 404)
  t.is((await call(`/.well-known/acme-challenge/${'A'.repeat(129)}`)).status, 404)
  t.is((await call('/.well-known/acme-challenge/..%2Fetc')).status, 404)
  t.deepEqual(asked, ['A'.repeat(43), 'unknown'], 'neither the oversized nor the odd token reached the responder')
})

/** Log lines written while a request is answered carry its id (X-Request-Id), outside the access log too. */
import test from 'ava'
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { serve } from '../../src/edge/listeners.js'
import { createRedirectHandler } from '../../src/edge/redirect.js'
import { MemoryChallengeResponder } from '../../src/edge/tls/acme-challenges.js'
import { createExchange } from '../../src/http/exchange.js'
import { createLogger } from '../../src/log.js'
import { EDGE_DEFAULTS } from '../helpers/edge.js'

function capture(): { logger: ReturnType<typeof createLogger>; entries: () => Record<string, unknown>[] } {
  const lines: string[] = []
  return {
    logger: createLogger({ format: 'json', level: 'debug', write: line => lines.push(line) }),
    entries: () => lines.map(line => JSON.parse(line) as Record<string, unknown>),
  }
}

test('an ACME challenge answered on port 80 is logged with the id of the request that fetched it', async t => {
  const { logger, entries } = capture()
  const challenges = new MemoryChallengeResponder({ logger })
  challenges.add('tok_1', 'tok_1.thumbprint', 'registry.example')
  challenges.logNextAnswer('tok_1')
  const handler = createRedirectHandler({ domains: ['registry.example'], httpsPort: () => 443, challenges })
  let body = ''
  const req = { method: 'GET', url: '/.well-known/acme-challenge/tok_1', headers: { 'x-request-id': 'ca-fetch-7' }, socket: {} } as unknown as IncomingMessage
  const res = { writeHead() {}, setHeader() {}, end: (text: string) => void (body = text) } as unknown as ServerResponse
  await handler(createExchange(req, res, 'http'))
  t.is(body, 'tok_1.thumbprint')
  t.like(
    entries().find(entry => entry.msg === 'ACME challenge answered on the HTTP port'),
    { domain: 'registry.example', token: 'tok_1', id: 'ca-fetch-7' },
  )
})

test("a handler that rejects past every step is logged with the request's id", async t => {
  const { logger, entries } = capture()
  const server = http.createServer()
  serve(server, 'local', () => Promise.reject(new Error('a bug')), EDGE_DEFAULTS, logger)
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => server.close(() => resolve())))
  const { port } = server.address() as AddressInfo
  await fetch(`http://127.0.0.1:${port}/v2/`, { headers: { 'X-Request-Id': 'broken-1' } }).catch(() => undefined)
  t.like(
    entries().find(entry => entry.msg === 'request handler failed'),
    { level: 'error', error: 'a bug', id: 'broken-1' },
  )
})

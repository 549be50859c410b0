/**
 * Request smuggling and parsing (issue #8): conflicting Content-Length / Transfer-Encoding,
 * duplicate lengths, obsolete line folding, bad chunk framing, bare LF, oversized headers.
 * The same raw bytes go to the edge (the real program, with credentials so the request would
 * reach the proxy) and to the engine alone; both must refuse with a 4xx and close the connection,
 * and no request hidden in the bytes may be answered (the hidden request asks for the catalog, so
 * a smuggled success would show `"repositories"`).
 */
import { join } from 'node:path'
import test from 'ava'
import { createRegistryApp } from '../../src/registry/app.js'
import { startEdge } from '../../src/edge/edge.js'
import { LOCAL_TEST_EDGE } from '../helpers/edge.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { basic, pushImage, rawExchange, startAuthBerth, statuses, tempDir } from './common.js'

const AUTH = `Authorization: ${basic('alice', 'secret')}\r\n`
const HIDDEN = `GET /v2/_catalog HTTP/1.1\r\nHost: x\r\n${AUTH}\r\n`

/** name → raw request bytes (each ends with a hidden second request where that makes sense). */
const CASES: Record<string, string> = {
  'CL and TE (CL.TE)': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${HIDDEN}`,
  'TE and CL (TE.CL)': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked\r\nContent-Length: ${HIDDEN.length + 5}\r\n\r\n0\r\n\r\n${HIDDEN}`,
  'two different Content-Length': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Length: 0\r\nContent-Length: ${HIDDEN.length}\r\n\r\n${HIDDEN}`,
  'two equal Content-Length': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Length: 0\r\nContent-Length: 0\r\n\r\n${HIDDEN}`,
  'Content-Length list': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Length: 0, ${HIDDEN.length}\r\n\r\n${HIDDEN}`,
  'signed Content-Length': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Length: +0\r\n\r\n${HIDDEN}`,
  'hex Content-Length': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Length: 0x0\r\n\r\n${HIDDEN}`,
  'Content-Length overflow': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Length: 99999999999999999999999\r\n\r\n${HIDDEN}`,
  'TE chunked twice': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
  'TE chunked, identity': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${HIDDEN}`,
  'TE gzip only (not chunked last)': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: gzip\r\n\r\n${HIDDEN}`,
  'TE xchunked': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${HIDDEN}`,
  'TE with space before colon': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${HIDDEN}`,
  'TE obs-folded': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${HIDDEN}`,
  'obs-fold in an ordinary header': `GET /v2/ HTTP/1.1\r\nHost: x\r\n${AUTH}X-Folded: a\r\n b\r\n\r\n`,
  'TE with vertical tab': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding:\x0bchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${HIDDEN}`,
  'bad chunk size': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n${HIDDEN}`,
  'chunk size overflow': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nabc\r\n0\r\n\r\n${HIDDEN}`,
  'chunk without CRLF after data': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n${HIDDEN}`,
  'bare LF chunk ending': `POST /v2/s/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n${HIDDEN}`,
  'bare CR in header': `GET /v2/ HTTP/1.1\r\nHost: x\r\n${AUTH}X-A: b\rX-B: c\r\n\r\n`,
  'NUL in header value': `GET /v2/ HTTP/1.1\r\nHost: x\r\n${AUTH}X-A: b\0c\r\n\r\n`,
  'space in header name': `GET /v2/ HTTP/1.1\r\nHost: x\r\n${AUTH}X A: b\r\n\r\n`,
  'header too large (64 KiB)': `GET /v2/ HTTP/1.1\r\nHost: x\r\n${AUTH}X-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`,
  'too many headers (2000)': `GET /v2/ HTTP/1.1\r\nHost: x\r\n${AUTH}${Array.from({ length: 2000 }, (_, i) => `X-H${i}: ${'v'.repeat(10)}\r\n`).join('')}\r\n`,
  'HTTP/1.1 without Host': `GET /v2/ HTTP/1.1\r\n${AUTH}\r\n`,
  'two Host headers': `GET /v2/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n${AUTH}\r\n`,
  'HTTP/0.9 request line': `GET /v2/\r\n\r\n`,
  'unknown HTTP version': `GET /v2/ HTTP/9.9\r\nHost: x\r\n${AUTH}\r\n`,
  'invalid method token': `G(T /v2/ HTTP/1.1\r\nHost: x\r\n${AUTH}\r\n`,
}

interface Target {
  name: string
  host: string
  port: number
}

async function exchange(target: Target, bytes: string): Promise<{ statuses: number[]; text: string; closed: boolean }> {
  const result = await rawExchange(target.host, target.port, bytes, 3000)
  return { statuses: statuses(result.text), text: result.text, closed: result.closed }
}

test('CL/TE conflicts, duplicate lengths, obs-fold, bad framing and oversized headers: refused by edge and engine alike', async t => {
  t.timeout(120_000)
  const { berth } = await startAuthBerth(t)
  await pushImage(berth.url, 'known/repo', 'v1', [Buffer.from('layer')], { authorization: basic('alice', 'secret') })
  // The engine behind the chain without TLS and without logins (what the internal door serves).
  const dir = await tempDir(t)
  const app = createRegistryApp({ driver: new FilesystemDriver(join(dir, 'data')) })
  const engine = await startEdge({ ...LOCAL_TEST_EDGE, engine: app.serve })
  t.teardown(async () => {
    await engine.close()
    await app.close()
  })
  const targets: Target[] = [
    { name: 'edge', host: '127.0.0.1', port: berth.port },
    { name: 'engine', host: '127.0.0.1', port: Number(new URL(engine.urls.local!).port) },
  ]
  const table: string[] = []
  const problems: string[] = []
  for (const [name, bytes] of Object.entries(CASES)) {
    const row: string[] = []
    for (const target of targets) {
      const result = await exchange(target, bytes)
      row.push(`${target.name}=${result.statuses.join('+') || 'none'}${result.closed ? '' : '(open)'}`)
      const [first] = result.statuses
      // HTTP/0.9 cannot carry credentials: the edge must refuse it; the bare engine (no auth) may answer.
      if (name.startsWith('HTTP/0.9') && target.name === 'engine') continue
      if (first !== undefined && (first < 400 || first >= 500)) problems.push(`${target.name}, ${name}: first answer ${first}`)
      if (result.text.includes('"repositories"')) problems.push(`${target.name}, ${name}: the hidden request was answered`)
      if (result.statuses.length > 1) problems.push(`${target.name}, ${name}: ${result.statuses.length} answers on one connection`)
      if (!result.closed) problems.push(`${target.name}, ${name}: connection left open after a parse error`)
    }
    table.push(`${name}: ${row.join(' ')}`)
  }
  t.log(table.join('\n'))
  t.deepEqual(problems, [])
  // Both still serve ordinary requests.
  for (const target of targets) {
    const ok = await exchange(target, `GET /v2/ HTTP/1.1\r\nHost: x\r\n${AUTH}Connection: close\r\n\r\n`)
    t.deepEqual(ok.statuses, [200], target.name)
  }
})

test('a refused request with a body never lets the body be read as the next request (edge, no credentials)', async t => {
  const { berth } = await startAuthBerth(t)
  for (const [method, path] of [
    ['PUT', '/v2/a/manifests/x'],
    ['POST', '/v2/a/blobs/uploads/'],
    ['PATCH', '/v2/a/blobs/uploads/u'],
  ] as const) {
    const clBody = `${method} ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${HIDDEN.length}\r\n\r\n${HIDDEN}`
    const teBody = `${method} ${path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${HIDDEN.length.toString(16)}\r\n${HIDDEN}\r\n0\r\n\r\n${HIDDEN}`
    const expect = `${method} ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${HIDDEN.length}\r\nExpect: 100-continue\r\n\r\n${HIDDEN}`
    for (const [what, bytes] of [
      ['Content-Length', clBody],
      ['chunked', teBody],
      ['Expect: 100-continue', expect],
    ] as const) {
      const result = await rawExchange('127.0.0.1', berth.port, bytes, 3000)
      const seen = statuses(result.text).filter(s => s !== 100)
      t.is(seen[0], 401, `${method} ${what}: ${result.text.slice(0, 200)}`)
      // A chunked body that was read in full may be followed by a real pipelined request: it is
      // answered on its own merits (with credentials, 200), never as part of the refused one.
      if (what !== 'chunked') t.false(result.text.includes('"repositories"'), `${method} ${what}: body read as a request`)
    }
  }
})

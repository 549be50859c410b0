/**
 * `berth serve` stops gracefully: on SIGTERM an upload that is streaming finishes (up to the grace
 * period), new requests are refused meanwhile, and the process exits 0.
 */
import http from 'node:http'
import path from 'node:path'
import test from 'ava'
import { MAIN } from '../helpers/berth.js'
import { freePort, makeTempDir, removeDir, startDaemon, waitFor, type Daemon } from '../helpers/procs.js'

let berth: Daemon | undefined
let work: string | undefined

test.after.always(async () => {
  await berth?.stop()
  if (work) await removeDir(work)
})

function send(
  port: number,
  method: string,
  url: string,
  body?: (request: http.ClientRequest) => void,
): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      { host: '127.0.0.1', port, method, path: url, headers: body ? { 'content-type': 'application/octet-stream' } : {} },
      response => {
        response.resume()
        response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers }))
      },
    )
    request.on('error', reject)
    if (body) body(request)
    else request.end()
  })
}

test('SIGTERM lets a streaming upload finish, then exits 0', async t => {
  work = await makeTempDir('cli-shutdown')
  const port = await freePort()
  let output = ''
  berth = startDaemon(
    'berth-shutdown',
    process.execPath,
    ['--import', 'tsx', MAIN, 'serve', '--local', '--host', '127.0.0.1', '--port', String(port), '--datadir', path.join(work, 'datadir')],
    {
      onOutput: text => (output += text),
    },
  )
  await waitFor('berth to listen', async () => output.includes('Berth registry is running'), { timeoutMs: 90_000, daemon: berth })

  const started = await send(port, 'POST', '/v2/shutdown/test/blobs/uploads/')
  t.is(started.status, 202)
  const location = String(started.headers.location)

  // A chunk that streams for ~1.5 s; SIGTERM arrives once the server is receiving it (its status
  // shows the chunk's first bytes: the first piece is larger than the store's write buffer), not
  // after a fixed time: a request the server has not read yet is an idle connection to a server that
  // is shutting down.
  const FIRST = 2 * 1024 * 1024
  let sentSignal = false
  const receiving = async () => {
    const status = await send(port, 'GET', location)
    return /^0-[1-9]\d*$/.test(String(status.headers.range))
  }
  const patch = send(port, 'PATCH', location, request => {
    void (async () => {
      for (let pieces = 0; pieces < 15; pieces++) {
        request.write(Buffer.alloc(pieces === 0 ? FIRST : 64 * 1024, pieces))
        if (pieces === 0) {
          await waitFor('the server to be receiving the chunk', receiving, { intervalMs: 20, daemon: berth })
          sentSignal = true
          berth!.child.kill('SIGTERM')
        }
        await new Promise(resolve => setTimeout(resolve, 100))
      }
      request.end()
    })().catch(error => request.destroy(error as Error))
  })
  const result = await patch.catch((error: Error) => {
    t.log(output)
    throw error
  })
  t.true(sentSignal)
  t.is(result.status, 202, 'the upload chunk in flight was accepted completely')
  t.is(result.headers.range, `0-${FIRST + 14 * 64 * 1024 - 1}`)
  const exit = await berth.exited
  t.is(exit.code, 0)
  t.regex(output, /shutting down/)
  t.regex(output, /stopped/)
})

test('SIGTERM after logins (bcrypt workers started) exits within a few seconds, not when the workers go idle', async t => {
  const dir = await makeTempDir('cli-shutdown-auth')
  t.teardown(() => removeDir(dir))
  const port = await freePort()
  const { hashPassword } = await import('../../src/edge/auth/htpasswd.js')
  const { writeFile } = await import('node:fs/promises')
  await writeFile(path.join(dir, 'htpasswd'), `u:${hashPassword('pw', 4)}\n`)
  let output = ''
  const daemon = startDaemon(
    'berth-shutdown-auth',
    process.execPath,
    ['--import', 'tsx', MAIN, 'serve', '--local', '--host', '127.0.0.1', '--port', String(port), '--datadir', dir],
    { onOutput: text => (output += text) },
  )
  t.teardown(() => daemon.stop())
  await waitFor('berth to listen', async () => output.includes('Berth registry is running'), { timeoutMs: 90_000, daemon })
  const login = (password: string) =>
    new Promise<number>((resolve, reject) => {
      const request = http.request(
        { host: '127.0.0.1', port, path: '/v2/', headers: { authorization: 'Basic ' + Buffer.from(`u:${password}`).toString('base64') } },
        response => {
          response.resume()
          response.on('end', () => resolve(response.statusCode ?? 0))
        },
      )
      request.on('error', reject)
      request.end()
    })
  t.is(await login('pw'), 200)
  t.is(await login('wrong'), 401)
  const signalled = Date.now()
  daemon.child.kill('SIGTERM')
  const exit = await daemon.exited
  const took = Date.now() - signalled
  t.is(exit.code, 0)
  // The pool ends idle workers after 30 s; an idle worker must not hold the process until then.
  t.true(took < 10_000, `exited ${took} ms after SIGTERM`)
})

/**
 * `berth serve --acme` as a user runs it (the real CLI as child processes) against Debian's pebble:
 * pebble's directory certificate trusted through NODE_EXTRA_CA_CERTS, HTTP-01 answered on
 * --http-port, the served chain verified against pebble's root; two processes on one certs/ → one order;
 * no --acme-agree-tos → a one-line refusal.
 */
import test from 'ava'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { TLSSocket } from 'node:tls'
import { freePort, startPebble, type Pebble } from '../helpers/pebble.js'
import { OciLayout } from '../helpers/images.js'
import { copy, inspect } from '../helpers/skopeo.js'

const MAIN = resolve(fileURLToPath(import.meta.url), '..', '..', '..', 'src', 'main.ts')

let pebble: Pebble
let pebbleHttpPort: number
let work: string
let extraCaFile: string
const children: ChildProcess[] = []

test.before(async () => {
  pebbleHttpPort = await freePort()
  pebble = await startPebble({ httpPort: pebbleHttpPort })
  work = await mkdtemp(join(tmpdir(), 'berth-acme-cli-'))
  extraCaFile = join(work, 'pebble-listener.pem')
  await writeFile(extraCaFile, pebble.listenerCa)
})

test.after.always(async () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise(r => child.once('exit', r))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
      await exited
      clearTimeout(timer)
    }
  }
  await pebble?.dispose()
  if (work) await rm(work, { recursive: true, force: true })
})

interface Running {
  child: ChildProcess
  output: () => string
  exit: Promise<number | null>
}

function berth(args: string[]): Running {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'serve', ...args], {
    env: { ...process.env, NODE_EXTRA_CA_CERTS: extraCaFile },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  children.push(child)
  let output = ''
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (output += c))
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (output += c))
  const exit = new Promise<number | null>(r => child.once('exit', code => r(code)))
  return { child, output: () => output, exit }
}

async function serveArgs(name: string, httpPort: number, certs: string): Promise<{ args: string[]; httpsPort: number }> {
  const httpsPort = await freePort()
  const datadir = join(work, `${name}-data`)
  return {
    httpsPort,
    args: [
      '--host',
      '127.0.0.1',
      '--datadir',
      datadir,
      '--certs',
      certs,
      '--domain',
      'localhost',
      '--acme',
      '--acme-directory',
      pebble.directoryUrl,
      '--acme-email',
      'me@example.com',
      '--acme-agree-tos',
      '--http-port',
      String(httpPort),
      '--https-port',
      String(httpsPort),
      '--allow-anonymous', // about certificates: the probes are anonymous
    ],
  }
}

async function waitFor(condition: () => boolean, timeoutMs: number, what: string, output: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; output:\n${output()}`)
    await new Promise(r => setTimeout(r, 100))
  }
}

function getV2(port: number, ca: string): Promise<{ status: number; fingerprint: string }> {
  return new Promise((resolvePromise, reject) => {
    const req = httpsRequest(
      { host: '127.0.0.1', port, path: '/v2/', servername: 'localhost', headers: { host: `localhost:${port}` }, ca, agent: false },
      res => {
        const fingerprint = (res.socket as TLSSocket).getPeerCertificate().fingerprint256
        res.resume()
        res.on('end', () => resolvePromise({ status: res.statusCode ?? 0, fingerprint }))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

test.serial('without --acme-agree-tos, berth serve refuses to start with one line', async t => {
  const { args } = await serveArgs('no-tos', await freePort(), join(work, 'certs-no-tos'))
  const run = berth(args.filter(a => a !== '--acme-agree-tos'))
  const code = await run.exit
  t.not(code, 0)
  const lines = run
    .output()
    .trim()
    .split('\n')
    .filter(line => line.trim() !== '')
  t.log(run.output().trim())
  t.true(
    lines.some(line => /--acme-agree-tos/.test(line)),
    'names the missing flag',
  )
  t.is(lines.filter(line => /--acme-agree-tos/.test(line)).length, 1)
})

test.serial('berth serve --acme gets a certificate from pebble, serves it, and two processes on one certs/ place one order', async t => {
  const certs = join(work, 'certs-shared')
  const ordersBefore = pebble.orderCount()
  // Two Berth processes start together on one certs folder; only the first owns the port pebble validates.
  // B starts once A listens: whichever of them places the order, the CA's request then finds A's port.
  const a = await serveArgs('a', pebbleHttpPort, certs)
  const b = await serveArgs('b', await freePort(), certs)
  const runA = berth(a.args)
  await waitFor(
    () => /INFO {2}listening /.test(runA.output()),
    60_000,
    'process A to listen',
    () => runA.output(),
  )
  const runB = berth(b.args)
  const both = () => `--- A ---\n${runA.output()}\n--- B ---\n${runB.output()}`
  const obtainedOrAdopted = /certificate (obtained and now served|renewed by another Berth process|loaded from storage)/
  await waitFor(() => obtainedOrAdopted.test(runA.output()), 60_000, 'process A to have a certificate', both)
  await waitFor(
    () => obtainedOrAdopted.test(runB.output()) || /certificate renewed by another/.test(runB.output()),
    60_000,
    'process B to have a certificate',
    both,
  )

  const root = await pebble.rootCertificate()
  const fromA = await getV2(a.httpsPort, root)
  const fromB = await getV2(b.httpsPort, root)
  t.is(fromA.status, 200)
  t.is(fromB.status, 200)
  t.is(fromA.fingerprint, fromB.fingerprint, 'both serve the same certificate')
  t.is(pebble.orderCount(), ordersBefore + 1, 'one order between two processes')

  // A real registry client trusting only pebble's root pushes and reads back through the ACME certificate.
  const trusted = join(work, 'trust-pebble-root')
  await mkdir(trusted, { recursive: true })
  await writeFile(join(trusted, 'ca.crt'), root)
  const layout = await OciLayout.create(join(work, 'layout'))
  await layout.addImage({ tag: 'v1', layers: [4096] })
  const remote = `docker://localhost:${a.httpsPort}/acme/hello`
  await copy(layout.ref('v1'), `${remote}:v1`, { dest: { certDir: trusted } })
  t.regex((await inspect(`${remote}:v1`, { certDir: trusted })).Digest, /^sha256:/)
  const wrong = join(work, 'trust-something-else')
  await mkdir(wrong, { recursive: true })
  await writeFile(join(wrong, 'ca.crt'), pebble.listenerCa)
  await t.throwsAsync(inspect(`${remote}:v1`, { certDir: wrong }), undefined, 'a client trusting another CA refuses the certificate')

  const issuer = /ACME order placed/.test(runA.output()) ? runA : runB
  const interesting =
    /HTTPS is not up yet|ACME account|ACME order placed|self-check|challenge answered|validated by the CA|certificate stored|certificate obtained|renewed by another|TLS certificate in service/
  t.log(`issuing process: ${issuer === runA ? 'A (owns the validated port)' : 'B (its challenge answered by A from the shared store)'}`)
  t.log(
    both()
      .split('\n')
      .filter(line => interesting.test(line) || line.startsWith('---'))
      .join('\n'),
  )
})

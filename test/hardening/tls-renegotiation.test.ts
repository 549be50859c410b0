/**
 * Client-initiated TLS renegotiation (issue 20): each renegotiation costs the server a full handshake,
 * so a client that asks for them in a loop spends the server's CPU for the price of a few bytes.
 * Berth relies on Node's limit (tls.CLIENT_RENEG_LIMIT handshakes within tls.CLIENT_RENEG_WINDOW
 * seconds, then the connection is closed); these tests keep it so, with `openssl s_client`'s `R`
 * command. TLS 1.3 has no renegotiation at all.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import https from 'node:https'
import tls from 'node:tls'
import test, { type ExecutionContext } from 'ava'
import { startEdge } from '../../src/edge/edge.js'
import { FileCertificateProvider } from '../../src/edge/tls/file-source.js'
import { startUpstream } from '../edge/upstream-fixture.js'
import { HTTPS_TEST_EDGE } from '../helpers/edge.js'
import { createTestPki, type TestPki } from '../helpers/tls.js'
import { tempDir } from './common.js'

async function startHttpsEdge(t: ExecutionContext): Promise<{ hostPort: string; pki: TestPki }> {
  const pki = await createTestPki(await tempDir(t, 'berth-reneg-'))
  const upstream = await startUpstream()
  const edge = await startEdge({
    ...HTTPS_TEST_EDGE,
    certificate: new FileCertificateProvider({ certPath: pki.certPath, keyPath: pki.keyPath }),
    upstream: { url: upstream.url },
  })
  t.teardown(async () => {
    await edge.close()
    await upstream.close()
  })
  return { hostPort: edge.urls.https!.replace('https://', ''), pki }
}

/** `openssl s_client` with stdin kept open for its commands; counts the handshakes it completes. */
class SClient {
  readonly #child: ChildProcessWithoutNullStreams
  #stdout = ''
  #stderr = ''
  readonly exited: Promise<number | null>

  constructor(t: ExecutionContext, hostPort: string, version: '-tls1_2' | '-tls1_3', caPath: string) {
    // -crlf: HTTP lines typed on stdin end in CRLF. No -quiet: it implies -ign_eof, which turns the commands off.
    this.#child = spawn('openssl', ['s_client', '-connect', hostPort, '-servername', 'localhost', '-CAfile', caPath, version, '-crlf'])
    this.#child.stdout.on('data', (chunk: Buffer) => (this.#stdout += chunk.toString('latin1')))
    this.#child.stderr.on('data', (chunk: Buffer) => (this.#stderr += chunk.toString('latin1')))
    this.exited = new Promise(resolve => this.#child.on('exit', code => resolve(code)))
    t.teardown(() => {
      if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill()
    })
  }

  get stdout(): string {
    return this.#stdout
  }

  get stderr(): string {
    return this.#stderr
  }

  get running(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null
  }

  /** Handshakes that verified the server's certificate: the first one, then one per renegotiation. */
  get handshakes(): number {
    return this.#stderr.match(/depth=0 CN = localhost\s*verify return:1/g)?.length ?? 0
  }

  write(text: string): void {
    this.#child.stdin.write(text)
  }

  /** Waits until `probe` holds or the process ends; true if `probe` held. */
  async until(probe: () => boolean, ms = 5000): Promise<boolean> {
    const end = Date.now() + ms
    while (!probe() && this.running && Date.now() < end) await new Promise(resolve => setTimeout(resolve, 20))
    return probe()
  }
}

function get(hostPort: string, ca: string, path: string, agent: https.Agent): Promise<{ status: number; reused: boolean; protocol: string | null }> {
  const [host, port] = hostPort.split(':')
  return new Promise((resolve, reject) => {
    const req = https.get({ host, port: Number(port), path, servername: 'localhost', ca, agent, timeout: 5000 }, res => {
      const protocol = (res.socket as tls.TLSSocket).getProtocol()
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket, protocol }))
    })
    req.on('timeout', () => req.destroy(new Error(`timeout on GET ${path}`)))
    req.on('error', reject)
  })
}

test(`TLS 1.2: ${tls.CLIENT_RENEG_LIMIT} client renegotiations within ${tls.CLIENT_RENEG_WINDOW} s are allowed, the next closes that connection only`, async t => {
  // Node's defaults (3 within 600 s): nothing Berth loads may loosen them.
  t.true(tls.CLIENT_RENEG_LIMIT <= 3 && tls.CLIENT_RENEG_WINDOW >= 600, `${tls.CLIENT_RENEG_LIMIT} per ${tls.CLIENT_RENEG_WINDOW} s`)
  const { hostPort, pki } = await startHttpsEdge(t)
  const ca = pki.ca.cert
  // A bystander with a kept-alive connection open before the attack.
  const bystander = new https.Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => bystander.destroy())
  t.like(await get(hostPort, ca, '/before', bystander), { status: 200, reused: false })

  const client = new SClient(t, hostPort, '-tls1_2', pki.caPath)
  t.true(await client.until(() => client.stdout.includes('Verify return code')), client.stderr)
  t.regex(client.stdout, /New, TLSv1\.2,/)
  t.regex(client.stdout, /Secure Renegotiation IS supported/)
  t.is(client.handshakes, 1)

  for (let i = 1; i <= tls.CLIENT_RENEG_LIMIT; i++) {
    client.write('R\n')
    t.true(await client.until(() => client.handshakes === 1 + i), `renegotiation ${i} completed\n${client.stderr}`)
  }
  // Up to the limit the connection keeps serving.
  client.write('GET /after-renegotiations HTTP/1.1\nHost: localhost\n\n')
  t.true(await client.until(() => /HTTP\/1\.1 200 OK/.test(client.stdout)), client.stdout.slice(-500))

  // One more: the server closes the connection instead of handshaking again.
  client.write('R\n')
  const code = await Promise.race([client.exited, new Promise(resolve => setTimeout(() => resolve('still open'), 5000))])
  t.not(code, 'still open', 'the connection is closed after the limit')
  t.is(client.handshakes, 1 + tls.CLIENT_RENEG_LIMIT, 'no handshake beyond the limit')

  // Everyone else is still served: the bystander's connection and new ones.
  t.like(await get(hostPort, ca, '/bystander', bystander), { status: 200, reused: true })
  const fresh = new https.Agent({ keepAlive: false })
  t.like(await get(hostPort, ca, '/fresh', fresh), { status: 200, reused: false })
  fresh.destroy()
})

test('TLS 1.3: a client gets TLS 1.3 by default, and a renegotiation request starts no handshake', async t => {
  const { hostPort, pki } = await startHttpsEdge(t)
  // A client offering both versions is not left on 1.2, where renegotiation exists.
  const agent = new https.Agent({ keepAlive: false })
  t.like(await get(hostPort, pki.ca.cert, '/default', agent), { status: 200, protocol: 'TLSv1.3' })
  agent.destroy()

  const client = new SClient(t, hostPort, '-tls1_3', pki.caPath)
  t.true(await client.until(() => client.stdout.includes('Verify return code')), client.stderr)
  t.regex(client.stdout, /New, TLSv1\.3,/)
  t.regex(client.stdout, /Secure Renegotiation IS NOT supported/)
  client.write('R\n')
  // TLS 1.3 has no renegotiation: OpenSSL refuses to send one ("wrong ssl version") and s_client gives up.
  t.true(await client.until(() => /wrong ssl version/.test(client.stderr)), client.stderr)
  await client.exited
  t.is(client.handshakes, 1, 'no second handshake')
})

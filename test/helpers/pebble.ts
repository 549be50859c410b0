/**
 * Debian's pebble (a real RFC 8555 ACME server) on loopback, for ACME tests.
 *
 * Debian ships no pebble test certificates, so the listener certificate is made here (openssl).
 * Validation stays on: pebble really fetches http://<name>:<httpPort>/.well-known/acme-challenge/…
 * (`localhost` resolves to loopback through the system resolver). Pebble makes a new root CA each
 * time it starts; `rootCertificate()` reads it from the management endpoint (`/roots/0`).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { mkdtemp, writeFile, readFile, rm } from 'node:fs/promises'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { get, createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { promisify } from 'node:util'

const run = promisify(execFile)

export interface PebbleOptions {
  /** Where pebble's VA sends HTTP-01 requests (Berth's HTTP port in the test). */
  httpPort: number
  /** Require external account binding with these kid → base64url HMAC keys (like ZeroSSL). */
  eab?: Record<string, string>
}

export interface Pebble {
  readonly directoryUrl: string
  /** PEM of pebble's own HTTPS listener (trust it for the directory: `caCertificates`). */
  readonly listenerCa: string
  /** Its private key, so a test front (startAcmeFront) can serve under the same trusted certificate. */
  readonly listenerKey: string
  /** PEM of the root that signs issued chains (changes on every pebble start). */
  rootCertificate(): Promise<string>
  /** How many new-order requests pebble has received since the first start. */
  orderCount(): number
  /** Everything pebble logged. */
  log(): string
  /** Stops pebble (SIGTERM, then SIGKILL). Idempotent. */
  stop(): Promise<void>
  /** Starts it again on the same ports (a new root CA, no accounts). */
  restart(): Promise<void>
  /** Stops it and removes its folder. */
  dispose(): Promise<void>
}

/** A port that was free a moment ago (bind 0, read it, close). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

export async function startPebble(options: PebbleOptions): Promise<Pebble> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-pebble-'))
  const certPath = join(dir, 'cert.pem')
  const keyPath = join(dir, 'key.pem')
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    keyPath,
    '-out',
    certPath,
    '-days',
    '2',
    '-subj',
    '/CN=localhost',
    '-addext',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ])
  const listenPort = await freePort()
  const managementPort = await freePort()
  const configPath = join(dir, 'pebble.json')
  await writeFile(
    configPath,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${listenPort}`,
        managementListenAddress: `127.0.0.1:${managementPort}`,
        certificate: certPath,
        privateKey: keyPath,
        httpPort: options.httpPort,
        tlsPort: await freePort(),
        ocspResponderURL: '',
        externalAccountBindingRequired: options.eab !== undefined,
        ...(options.eab ? { externalAccountMACKeys: options.eab } : {}),
      },
    }),
  )
  const listenerCa = await readFile(certPath, 'utf8')
  let output = ''
  let child: ChildProcess | undefined

  const launch = async (): Promise<void> => {
    const started = spawn('/usr/bin/pebble', ['-config', configPath], {
      cwd: dir,
      // No random 0–15 s validation sleeps, no deliberately rejected nonces, no authz reuse
      // (so every order really validates).
      env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child = started
    started.stdout?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
    started.stderr?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
    // Pebble logs "Listening on" just before it binds: wait for the log line, then for the ports to accept.
    const deadline = Date.now() + 60_000
    const accepting = (port: number) =>
      new Promise<boolean>(resolve => {
        const socket = connect(port, '127.0.0.1', () => {
          socket.destroy()
          resolve(true)
        })
        socket.on('error', () => resolve(false))
      })
    while (!/Listening on: /.test(output.split('Starting Pebble').pop() ?? '') || !(await accepting(listenPort)) || !(await accepting(managementPort))) {
      if (started.exitCode !== null) throw new Error(`pebble exited: ${output}`)
      if (Date.now() > deadline) throw new Error(`pebble did not start: ${output}`)
      await new Promise(r => setTimeout(r, 50))
    }
  }

  const stop = async (): Promise<void> => {
    const current = child
    child = undefined
    if (!current || current.exitCode !== null) return
    const exited = new Promise(r => current.once('exit', r))
    current.kill('SIGTERM')
    const timer = setTimeout(() => current.kill('SIGKILL'), 3_000)
    await exited
    clearTimeout(timer)
  }

  await launch()
  return {
    directoryUrl: `https://127.0.0.1:${listenPort}/dir`,
    listenerCa,
    listenerKey: await readFile(keyPath, 'utf8'),
    rootCertificate: () =>
      new Promise((resolve, reject) => {
        get(`https://127.0.0.1:${managementPort}/roots/0`, { ca: listenerCa }, response => {
          let body = ''
          response
            .setEncoding('utf8')
            .on('data', (c: string) => (body += c))
            .on('end', () => resolve(body))
        }).on('error', reject)
      }),
    orderCount: () => (output.match(/POST \/order-plz/g) ?? []).length,
    log: () => output,
    stop: async () => {
      await stop()
    },
    restart: async () => {
      await stop()
      await launch()
    },
    dispose: async () => {
      await stop()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

export interface FrontResponse {
  status: number
  body: unknown
  headers?: Record<string, string>
}

export interface AcmeFrontOptions {
  /** When set, the directory advertises `renewalInfo` and GET <front>/renewal-info/<certID> is answered by this. */
  renewalInfo?: (certId: string) => FrontResponse
  /** When set, the directory's newOrder points at the front and every new-order POST gets this answer. */
  newOrder?: () => FrontResponse
  /** Extra headers on the directory response (e.g. a `date` far off, to look like clock skew). */
  directoryHeaders?: Record<string, string>
}

export interface AcmeFront {
  readonly directoryUrl: string
  /** certIDs asked for, in order. */
  readonly renewalInfoRequests: string[]
  readonly newOrderRequests: number
  close(): Promise<void>
}

/**
 * A small HTTPS server in front of pebble's directory that adds what pebble 2.4 lacks (ARI's
 * `renewalInfo`) or misbehaves on purpose (a rate-limited newOrder). Every other directory URL still
 * points straight at pebble, so the rest of the protocol is pebble's own.
 */
export async function startAcmeFront(pebble: Pebble, options: AcmeFrontOptions): Promise<AcmeFront> {
  let frontUrl = ''
  const renewalInfoRequests: string[] = []
  let newOrderRequests = 0
  const send = (res: import('node:http').ServerResponse, answer: FrontResponse, type = 'application/json'): void => {
    res.writeHead(answer.status, { 'content-type': type, ...answer.headers })
    res.end(JSON.stringify(answer.body))
  }
  const server: HttpsServer = createHttpsServer({ cert: pebble.listenerCa, key: pebble.listenerKey }, (req, res) => {
    const path = req.url ?? '/'
    req.resume()
    if (req.method === 'GET' && path === '/dir') {
      get(pebble.directoryUrl, { ca: pebble.listenerCa }, upstream => {
        let body = ''
        upstream
          .setEncoding('utf8')
          .on('data', (c: string) => (body += c))
          .on('end', () => {
            const directory = JSON.parse(body) as Record<string, unknown>
            if (options.renewalInfo) directory['renewalInfo'] = `${frontUrl}/renewal-info`
            if (options.newOrder) directory['newOrder'] = `${frontUrl}/order-plz`
            send(res, { status: 200, body: directory, ...(options.directoryHeaders ? { headers: options.directoryHeaders } : {}) })
          })
      }).on('error', () => send(res, { status: 502, body: {} }))
      return
    }
    if (req.method === 'GET' && path.startsWith('/renewal-info/') && options.renewalInfo) {
      const certId = path.slice('/renewal-info/'.length)
      renewalInfoRequests.push(certId)
      send(res, options.renewalInfo(certId))
      return
    }
    if (req.method === 'POST' && path === '/order-plz' && options.newOrder) {
      newOrderRequests++
      send(res, options.newOrder(), 'application/problem+json')
      return
    }
    send(res, { status: 404, body: {} })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  frontUrl = `https://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    directoryUrl: `${frontUrl}/dir`,
    renewalInfoRequests,
    get newOrderRequests() {
      return newOrderRequests
    },
    close: () =>
      new Promise<void>(resolve => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

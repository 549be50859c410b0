/**
 * The composition root: the one place that turns a Config into running parts.
 *
 *   config ─► FilesystemDriver(<datadir>/data) or S3Driver(bucket) ─► registry engine on 127.0.0.1:<random>,
 *             requiring a per-process secret header ─► edge (TLS/HTTP, auth, body limit, proxy)
 *
 * The edge calls the built-in engine's listener in process (no loopback hop, edge/in-process.ts);
 * the internal listener still runs.
 *
 * With `upstream` set no engine is started: the edge fronts that registry instead.
 * Each layer gets a plain options object; nothing else reads the Config.
 */
import { randomBytes } from 'node:crypto'
import { constants as fsConstants, realpathSync } from 'node:fs'
import { access, readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { noUsersMessage, type Config } from './config/config.js'
import { ConfigError } from './config/errors.js'
import { UPLOAD_PURGING } from './config/settings.js'
import { startEdge, type Edge, type EdgeOptions } from './edge/edge.js'
import { HtpasswdError, parseHtpasswd } from './edge/auth/htpasswd.js'
import type { CertificateProvider, ChallengeResponder, TlsCertificate } from './edge/tls/certificate-source.js'
import { CERT_STORE_ROOT, DriverCertStore, type CertStore } from './edge/tls/cert-store.js'
import { FileCertificateProvider } from './edge/tls/file-source.js'
import type { Logger } from './log.js'
import { capYoungGeneration } from './process-memory.js'
import { createRegistryApp, type RegistryApp } from './registry/app.js'
import { openStorage as openStore, prepareFolder as prepareStoreFolder, StorageOpenError } from './storage/open-storage.js'
import { startGcSchedule, type GcSchedule } from './storage/gc-schedule.js'
import type { StorageDriver } from './storage/driver/storage-driver.js'

export interface RunningServer {
  /** Where the edge listens (port 0 resolved). */
  readonly urls: Edge['urls']
  /** Where images are stored, or undefined with `upstream`. */
  readonly storage: string | undefined
  /** The internal engine address (loopback), or the upstream URL. */
  readonly upstream: string
  /** The certificate served at start, if any yet (ACME may still be ordering). */
  readonly certificate: TlsCertificate | undefined
  readonly certificateSource: string | undefined
  /** Extra lines for people setting up clients (e.g. where the self-signed CA goes). */
  readonly hints: readonly string[]
  /** Basic auth: the file and how many users, or undefined when auth is off. */
  readonly auth: { readonly file: string; readonly users: number } | undefined
  /**
   * Stops accepting connections, lets requests in flight (uploads) finish for up to `graceMs`,
   * then ends the rest. Idempotent.
   */
  close(graceMs?: number): Promise<void>
}

/** A listen failure on one of the public ports, with what the user can do about it. */
export class ListenError extends Error {
  override readonly name = 'ListenError'
  constructor(
    message: string,
    readonly port: number | undefined,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}

/**
 * The storage driver the config names, checked before anything listens: the datadir folder is
 * writable, or the bucket answers with these credentials (a clear one-line error, not a failure
 * at the first push). Resolves with the driver and how to show where images go.
 */
export async function openStorage(config: Config): Promise<{ driver: StorageDriver; shown: string }> {
  return asConfigError(openStore({ storage: config.storage, datadir: config.datadir, create: true }))
}

export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  // Users first: a refused start (HTTPS without a login) creates nothing and listens on nothing.
  const auth = await checkHtpasswd(config, logger)
  const opened = config.upstream === undefined ? await openStorage(config) : undefined
  const storage = opened?.shown
  if (config.clientCa !== undefined) await mustRead(config.clientCa, '--client-ca')

  // With S3 storage, ACME state and its lock live in the bucket too: every instance shares one
  // account, one certificate and one order, and any of them answers the CA's HTTP-01 request.
  const sharedCertStore =
    opened !== undefined && config.storage.kind === 's3'
      ? new DriverCertStore(opened.driver, CERT_STORE_ROOT)
      : undefined
  const { provider, challenges, source, hints } = await certificateFor(config, logger, sharedCertStore)

  let engine: { app: RegistryApp; server: HttpServer; url: string; drain: Drain; handle: (request: IncomingMessage, response: ServerResponse) => void } | undefined
  let gcSchedule: GcSchedule | undefined
  let upstream: { url: string; secret?: string }
  if (opened === undefined) {
    upstream = { url: config.upstream ?? '' }
  } else {
    // The engine trusts only requests that carry this secret, which only the edge knows: another
    // process on this machine that finds the loopback port still cannot skip authentication.
    const secret = randomBytes(32).toString('base64url')
    const app = createRegistryApp({ driver: opened.driver, logger, internalSecret: secret, uploadPurging: UPLOAD_PURGING })
    const drain = new Drain()
    const handle = (request: IncomingMessage, response: ServerResponse): void => {
      if (drain.isDraining) return drain.refuse(response)
      drain.track(response)
      app.handle(request, response)
    }
    const server = createServer({ requestTimeout: 0, keepAliveTimeout: 65_000 }, handle)
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject)
        resolve()
      })
    })
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    engine = { app, server, url, drain, handle }
    upstream = { url, secret }
    if (config.gcIntervalMs !== undefined) {
      // Any storage: on S3 the run takes the lock in the bucket, so of several instances with
      // --gc-interval one collects at a time and the others skip that tick (storage/gc-lock.ts).
      gcSchedule = startGcSchedule({ driver: opened.driver, intervalMs: config.gcIntervalMs, logger })
    }
  }

  const options: EdgeOptions = {
    mode: config.mode,
    localPort: config.port,
    httpPort: config.httpPort,
    httpsPort: config.httpsPort,
    domains: [...config.domains],
    upstream,
    // The edge hands requests for the built-in engine straight to its listener, in this process:
    // the loopback hop cost a third to a half of blob throughput (edge/in-process.ts). The internal
    // listener above stays (the design's boundary, and what `upstream` names in logs and tools).
    ...(engine !== undefined ? { engine: { handle: engine.handle, secret: upstream.secret } } : {}),
    realm: config.realm,
    maxBodyBytes: config.maxBody,
    logger,
  }
  if (config.host !== undefined) options.host = config.host
  if (provider !== undefined) options.certificate = provider
  if (challenges !== undefined) options.challenges = challenges
  // Always passed: the edge turns basic auth on when the file exists and watches it for changes.
  options.htpasswdPath = config.htpasswd
  if (config.clientCa !== undefined) options.clientCaPath = config.clientCa

  // Memory: a small V8 young generation (process-memory.ts says why and how).
  const uncapYoungGeneration = capYoungGeneration()
  let edge: Edge
  try {
    if (provider !== undefined) await provider.start().catch((error: unknown) => {
      // A certificate pair that does not load is a setting to fix, not a crash: one line, exit 2.
      if (config.certificate.kind !== 'files') throw error
      throw new ConfigError(`--tls-cert/--tls-key: ${(error as Error).message}`, { cause: error })
    })
    // Without --domain, the names on the certificate are the names port 80 redirects for.
    if (options.domains.length === 0) options.domains = [...(provider?.current()?.names ?? [])]
    edge = await startEdge(options)
  } catch (error) {
    uncapYoungGeneration()
    await provider?.stop().catch(() => {})
    await gcSchedule?.stop()
    if (engine !== undefined) await closeHttpServer(engine.server, 0)
    throw explainStartError(error, config)
  }

  let closing: Promise<void> | undefined
  return {
    urls: edge.urls,
    storage,
    upstream: upstream.url,
    certificate: provider?.current(),
    certificateSource: source,
    hints,
    auth,
    close(graceMs = 10_000) {
      closing ??= (async () => {
        // Requests in flight (a layer upload) get up to graceMs to finish; new ones get 503 meanwhile.
        if (engine !== undefined) await engine.drain.start(graceMs)
        await Promise.race([edge.close(), delay(graceMs + 1000)])
        await provider?.stop().catch(() => {})
        await gcSchedule?.stop()
        if (engine !== undefined) {
          await closeHttpServer(engine.server, 0)
          await Promise.race([engine.app.close(), delay(1000)])
        }
        uncapYoungGeneration()
      })()
      return closing
    },
  }
}

async function certificateFor(
  config: Config,
  logger: Logger,
  sharedCertStore?: CertStore,
): Promise<{ provider?: CertificateProvider; challenges?: ChallengeResponder; source?: string; hints: string[] }> {
  const choice = config.certificate
  switch (choice.kind) {
    case 'none':
      return { hints: [] }
    case 'files':
      await mustRead(choice.cert, '--tls-cert')
      await mustRead(choice.key, '--tls-key')
      return {
        provider: new FileCertificateProvider({ certPath: choice.cert, keyPath: choice.key, logger }),
        source: `files ${choice.cert}`,
        hints: [],
      }
    case 'self-signed': {
      await prepareFolder(config.certs, 'certs', config.certs)
      const { SelfSignedCertificateProvider } = await import('./edge/tls/self-signed.js')
      const provider = new SelfSignedCertificateProvider({ certsDir: config.certs, names: config.domains, logger })
      const host = (config.domains[0] ?? 'localhost') + (config.httpsPort === 443 ? '' : `:${config.httpsPort}`)
      return { provider, source: `self-signed (local CA ${provider.caPath})`, hints: [provider.dockerHint(host)] }
    }
    case 'acme': {
      await prepareFolder(config.certs, 'certs', config.certs)
      return acmeProvider(config, choice, logger, sharedCertStore)
    }
  }
}

/** Automatic HTTPS: the provider orders in the background and answers HTTP-01 on the HTTP port. */
async function acmeProvider(
  config: Config,
  choice: Extract<Config['certificate'], { kind: 'acme' }>,
  logger: Logger,
  sharedCertStore?: CertStore,
): Promise<{ provider: CertificateProvider; challenges: ChallengeResponder; source: string; hints: string[] }> {
  const [{ AcmeCertificateProvider }, { AcmeError }] = await Promise.all([import('./edge/tls/acme-provider.js'), import('./edge/tls/acme-options.js')])
  let provider: InstanceType<typeof AcmeCertificateProvider>
  try {
    provider = new AcmeCertificateProvider({
      domains: config.domains,
      directory: choice.directory,
      email: choice.email,
      agreeTos: choice.agreeTos,
      eab: choice.eab,
      certsDir: config.certs,
      httpPort: config.httpPort,
      logger,
      ...(sharedCertStore !== undefined ? { store: sharedCertStore } : {}),
    })
  } catch (error) {
    if (error instanceof AcmeError) throw new ConfigError(error.message, { cause: error })
    throw error
  }
  const hints = config.httpPort === 80 ? [] : [`ACME HTTP-01 needs the CA to reach port 80 of ${config.domains.join(', ')}; forward it to --http-port ${config.httpPort}`]
  return { provider, challenges: provider.challenges, source: `ACME ${provider.directoryUrl}`, hints }
}

/**
 * Basic auth: an explicit --htpasswd must exist; the default file is optional in --local mode and
 * with --allow-anonymous (then auth is off until the file appears: the edge watches it). HTTPS
 * mode otherwise needs at least one user (safe by default; --upstream included, since Berth cannot
 * tell whether that registry checks logins: the seed's registry:2 behind nginx did not).
 */
async function checkHtpasswd(config: Config, logger: Logger): Promise<{ file: string; users: number } | undefined> {
  const mustHaveUsers = config.mode === 'https' && !config.allowAnonymous
  let text: string
  try {
    text = await readFile(config.htpasswd, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT' && mustHaveUsers) throw new ConfigError(noUsersMessage(config, 'no-file'), { cause: error })
    if (code === 'ENOENT' && !config.isHtpasswdExplicit) return undefined
    if (code === 'ENOENT') throw new ConfigError(`--htpasswd ${config.htpasswd}: no such file (create it with: berth htpasswd add <user> --file ${config.htpasswd})`)
    if (code === 'EACCES') throw new ConfigError(`cannot read ${config.htpasswd}: permission denied (it must be readable by the user running berth)`)
    throw error
  }
  try {
    const users = parseHtpasswd(text, config.htpasswd)
    if (users.size === 0 && mustHaveUsers) throw new ConfigError(noUsersMessage(config, 'empty'))
    if (users.size === 0) logger.warn('htpasswd file has no users: every login will be refused', { file: config.htpasswd })
    return { file: config.htpasswd, users: users.size }
  } catch (error) {
    if (error instanceof HtpasswdError) throw new ConfigError(error.message, { cause: error })
    throw error
  }
}

async function mustRead(file: string, setting: string): Promise<void> {
  try {
    await access(file, fsConstants.R_OK)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : String(code)
    throw new ConfigError(`${setting} ${file}: ${reason}`, { cause: error })
  }
}

/** Creates the folder if needed and checks that this user can write to it, naming the fix if not. */
async function prepareFolder(folder: string, setting: string, shown: string): Promise<void> {
  return asConfigError(prepareStoreFolder(folder, setting, shown))
}

function asConfigError<T>(promise: Promise<T>): Promise<T> {
  return promise.catch((error: unknown) => {
    throw error instanceof StorageOpenError ? new ConfigError(error.message, { cause: error }) : error
  })
}

/** Turns listen errors into one line that says what to do. */
export function explainStartError(error: unknown, config: Config): Error {
  if (error instanceof ConfigError) return error
  const errno = error as NodeJS.ErrnoException & { port?: number; address?: string }
  const port = errno.port
  if (errno.code === 'EACCES' && port !== undefined) {
    return new ListenError(
      `cannot listen on port ${port}: permission denied (ports below 1024 need privileges). ` +
        `Fix: sudo setcap cap_net_bind_service=+ep ${realExecPath()}, ` +
        `or run it in docker compose (ports 80/443 are mapped there), or choose other ports with --https-port/--http-port`,
      port,
      { cause: error },
    )
  }
  if (errno.code === 'EADDRINUSE' && port !== undefined) {
    const flag = config.mode === 'local' ? '--port' : port === config.httpPort ? '--http-port' : '--https-port'
    return new ListenError(
      `port ${port} is already in use by another program (find it: sudo ss -ltnp 'sport = :${port}'); stop it or choose another ${flag}`,
      port,
      { cause: error },
    )
  }
  if (errno.code === 'EADDRNOTAVAIL') {
    return new ListenError(`--host ${errno.address ?? config.host ?? ''} is not an address of this machine`, port, { cause: error })
  }
  return error instanceof Error ? error : new Error(String(error))
}

/** The file the capability must be set on: node, or the single binary itself (symlinks resolved). */
function realExecPath(): string {
  try {
    return realpathSync(process.execPath) // start-up error path only, never a request path
  } catch {
    return process.execPath
  }
}

async function closeHttpServer(server: HttpServer, graceMs: number): Promise<void> {
  const closed = new Promise<void>(resolve => server.close(() => resolve()))
  server.closeIdleConnections()
  const timer = setTimeout(() => server.closeAllConnections(), graceMs)
  await closed
  clearTimeout(timer)
}

/**
 * Shutdown bookkeeping of the engine's listener: counts responses in flight and, once draining,
 * answers new requests with 503 so clients retry elsewhere or later while uploads finish.
 */
const RELAY_SETTLE_MS = 300

class Drain {
  private active = 0
  private draining = false
  private onIdle: (() => void) | undefined

  get isDraining(): boolean {
    return this.draining
  }

  track(response: ServerResponse): void {
    this.active++
    response.once('close', () => {
      this.active--
      if (this.active === 0) this.onIdle?.()
    })
  }

  refuse(response: ServerResponse): void {
    response.writeHead(503, {
      'content-type': 'application/json',
      'docker-distribution-api-version': 'registry/2.0',
      'retry-after': '10',
      connection: 'close',
    })
    response.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'the registry is shutting down', detail: null }] }))
  }

  /**
   * Resolves when nothing is in flight any more, or after graceMs. The engine's last response is
   * then still on its way through the edge's proxy to the client, so it gets a moment to get there.
   */
  async start(graceMs: number): Promise<void> {
    this.draining = true
    if (this.active === 0) return
    await Promise.race([new Promise<void>(resolve => (this.onIdle = resolve)), delay(graceMs)])
    await delay(RELAY_SETTLE_MS)
  }
}

function delay(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms).unref())
}

/**
 * Berth for end-to-end tests, two ways:
 *
 * - startBerth(): the real program as a child process, `node --import tsx src/main.ts serve …`, exactly
 *   what a user runs (minus the build). Local mode (`--local --port --host --datadir`) or https mode
 *   (`--domain --tls-cert --tls-key --https-port --http-port --htpasswd`). Ready when `/v2/` answers.
 * - startBerthInProcess(): only the engine (`createRegistryApp` + `FilesystemDriver`) on an
 *   `http.createServer` in this process, for tests of the engine with real clients that do not need
 *   the edge or the CLI.
 *
 * Either way the caller owns `datadir` (Berth stores in `<datadir>/data`, like the seed's registry:2).
 */
import { access } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startRegistry2 } from './registry2.js'
import { freePort, probeStatus, startDaemon, waitFor, type Daemon } from './procs.js'

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const MAIN = path.join(REPO_ROOT, 'src', 'main.ts')

export interface BerthHttpsOptions {
  /** The name clients use (also passed as --domain). */
  domain: string
  certFile: string
  keyFile: string
  /** Default: a free port on `host`. */
  httpsPort?: number
  httpPort?: number
  /** An htpasswd file: turns on basic auth. HTTPS mode needs it (with a user) or `allowAnonymous`. */
  htpasswd?: string
  /** `--allow-anonymous`: serve HTTPS without users (else berth refuses to start without htpasswd). */
  allowAnonymous?: boolean
}

export interface BerthOptions {
  datadir: string
  /** Default 127.0.0.1 (::1 is typical for https with docker, see dockerd.ts). */
  host?: string
  /** Local-mode port; default a free port. */
  port?: number
  /** HTTPS mode instead of --local. */
  https?: BerthHttpsOptions
  /** Extra CLI arguments after the generated ones. */
  args?: string[]
  env?: Record<string, string | undefined>
  timeoutMs?: number
}

export interface Berth {
  /** `http://127.0.0.1:5xxxx` or `https://[::1]:4xxxx` (the address, not the domain). */
  readonly url: string
  /** `127.0.0.1:5xxxx` for local mode; `<domain>:<httpsPort>` for https mode: what goes in image references. */
  readonly hostPort: string
  readonly port: number
  /** The plain-HTTP port in https mode (redirects, ACME challenges). */
  readonly httpPort: number | undefined
  readonly datadir: string
  /** The server's process id (undefined when it runs in this process). */
  readonly pid: number | undefined
  output(): string
  /** Stops Berth (SIGTERM, then SIGKILL after 10 s). Does not remove the datadir. Idempotent. */
  stop(): Promise<void>
}

function bracket(host: string): string {
  return host.includes(':') ? `[${host}]` : host
}

/** Whether the CLI entry exists yet (it is being written alongside these tests). */
export async function hasMain(): Promise<boolean> {
  return access(MAIN).then(
    () => true,
    () => false,
  )
}

/** Starts `berth serve` as a child process and waits until `/v2/` answers (200, or 401 with auth). */
export async function startBerth(options: BerthOptions): Promise<Berth> {
  // A port from freePort() can be taken by someone else before Berth binds it (another test's
  // server, an outgoing connection): then Berth exits saying so, and we try again on other ports.
  const ownPorts = options.https ? options.https.httpsPort === undefined || options.https.httpPort === undefined : options.port === undefined
  for (let attempt = 1; ; attempt++) {
    try {
      return await startBerthOnce(options)
    } catch (error) {
      if (!ownPorts || attempt >= 3 || !(error instanceof Error) || !/is already in use by another program/.test(error.message)) throw error
    }
  }
}

async function startBerthOnce(options: BerthOptions): Promise<Berth> {
  const host = options.host ?? '127.0.0.1'
  const args = ['--import', 'tsx', MAIN, 'serve', '--host', host, '--datadir', options.datadir]
  let port: number
  let httpPort: number | undefined
  let url: string
  let hostPort: string
  if (options.https) {
    port = options.https.httpsPort ?? (await freePort(host))
    httpPort = options.https.httpPort ?? (await freePort(host))
    args.push(
      '--domain',
      options.https.domain,
      '--tls-cert',
      options.https.certFile,
      '--tls-key',
      options.https.keyFile,
      '--https-port',
      String(port),
      '--http-port',
      String(httpPort),
    )
    if (options.https.htpasswd) args.push('--htpasswd', options.https.htpasswd)
    if (options.https.allowAnonymous) args.push('--allow-anonymous')
    url = `https://${bracket(host)}:${port}`
    hostPort = `${options.https.domain}:${port}`
  } else {
    port = options.port ?? (await freePort(host))
    args.push('--local', '--port', String(port))
    url = `http://${bracket(host)}:${port}`
    hostPort = `${bracket(host)}:${port}`
  }
  args.push(...(options.args ?? []))
  // Keep the test machine's BERTH_* settings out of the child: the flags above are the whole config.
  const cleanEnv: Record<string, string | undefined> = {}
  for (const key of Object.keys(process.env)) if (key.startsWith('BERTH_')) cleanEnv[key] = undefined
  const daemon: Daemon = startDaemon('berth', process.execPath, args, {
    cwd: REPO_ROOT,
    env: { ...cleanEnv, ...options.env },
  })
  const stop = () => daemon.stop()
  try {
    await waitFor(
      `berth on ${url}`,
      async () => {
        const status = await probeStatus(`${url}/v2/`)
        return status === 200 || status === 401
      },
      { daemon, timeoutMs: options.timeoutMs ?? 90_000 },
    )
    // The start-up summary is written once the server listens, so /v2/ can answer before it reaches
    // us: tests read it from output() right after this returns.
    await waitFor('the start-up summary', async () => /Berth registry is running[\s\S]*\n {2}pull /.test(daemon.output()), {
      daemon,
      timeoutMs: 30_000,
      intervalMs: 20,
    })
  } catch (error) {
    await stop()
    throw error
  }
  return { url, hostPort, port, httpPort, datadir: options.datadir, pid: daemon.pid, output: () => daemon.output(), stop }
}

/**
 * The registry engine alone on 127.0.0.1:<random>, in this process: createRegistryApp over a
 * FilesystemDriver(<datadir>/data), no edge, no auth.
 */
export async function startBerthInProcess(options: { datadir: string; host?: string }): Promise<Berth> {
  const { createRegistryApp } = await import('../../src/registry/app.js')
  const { FilesystemDriver } = await import('../../src/storage/driver/filesystem.js')
  const app = createRegistryApp({ driver: new FilesystemDriver(path.join(options.datadir, 'data')) })
  const server = http.createServer({ requestTimeout: 0 }, (request, response) => app.handle(request, response))
  const host = options.host ?? '127.0.0.1'
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, host, () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  let stopped: Promise<void> | undefined
  return {
    url: `http://${bracket(host)}:${port}`,
    hostPort: `${bracket(host)}:${port}`,
    port,
    httpPort: undefined,
    datadir: options.datadir,
    pid: undefined,
    output: () => '(engine in this process: its errors are in the test output)',
    stop: () =>
      (stopped ??= (async () => {
        await new Promise<void>(resolve => {
          server.close(() => resolve())
          server.closeAllConnections()
        })
        await app.close()
      })()),
  }
}

/**
 * The real program when src/main.ts exists, else the engine in-process. `BERTH_E2E_IN_PROCESS=1`
 * forces the in-process engine (local mode only).
 *
 * `BERTH_E2E_REFERENCE=registry2` runs the same tests against Debian's docker-registry instead: a way
 * to check that a failing e2e test is right about what real registries do (never set in CI).
 */
export async function startLocalBerth(options: { datadir: string; host?: string }): Promise<Berth> {
  if (process.env.BERTH_E2E_REFERENCE === 'registry2') {
    const registry = await startRegistry2({ rootDirectory: path.join(options.datadir, 'data'), host: options.host ?? '127.0.0.1' })
    return {
      url: registry.url,
      hostPort: registry.hostPort,
      port: registry.port,
      httpPort: undefined,
      datadir: options.datadir,
      pid: registry.pid,
      output: registry.output,
      stop: registry.stop,
    }
  }
  if (process.env.BERTH_E2E_IN_PROCESS !== '1' && (await hasMain())) return startBerth(options)
  return startBerthInProcess(options)
}

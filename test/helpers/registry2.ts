/**
 * Debian's `docker-registry` (distribution 2.8.2, the `registry:2` the seed runs) on loopback, for layout
 * compatibility tests and as a reference server.
 *
 * The generated config stores under `rootDirectory` (give it `<datadir>/data`, as the seed's compose
 * file mounts `./datadir/data` on /var/lib/registry), enables DELETE, and optionally turns on htpasswd
 * auth exactly as the seed's README does.
 */
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { freePort, makeTempDir, probeStatus, removeDir, startDaemon, waitFor } from './procs.js'

export const DOCKER_REGISTRY = '/usr/bin/docker-registry'

export interface Registry2Options {
  /** Filesystem root (distribution's `storage.filesystem.rootdirectory`). */
  rootDirectory: string
  /** An htpasswd file (bcrypt entries): turns on basic auth. */
  htpasswd?: string
  /** Default 127.0.0.1. */
  host?: string
  /** Default: a free port. */
  port?: number
  /** Serve HTTPS with these PEM files. */
  tls?: { certificate: string; key: string }
}

export interface Registry2 {
  /** e.g. `http://127.0.0.1:41234` */
  readonly url: string
  /** `127.0.0.1:41234` (what clients put in image references). */
  readonly hostPort: string
  readonly port: number
  readonly pid: number
  readonly output: () => string
  /** Stops the registry and removes its config folder (not the storage root). Idempotent. */
  readonly stop: () => Promise<void>
}

export async function startRegistry2(options: Registry2Options): Promise<Registry2> {
  const host = options.host ?? '127.0.0.1'
  const port = options.port ?? (await freePort(host))
  const listen = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
  const configDir = await makeTempDir('registry2')
  const config = {
    version: 0.1,
    log: { level: 'info', accesslog: { disabled: true }, fields: { service: 'registry' } },
    storage: {
      filesystem: { rootdirectory: options.rootDirectory },
      delete: { enabled: true },
      // The upload purger would wander through _uploads at start; nothing to purge in a test.
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: {
      addr: listen,
      secret: 'berth-test-secret',
      headers: { 'X-Content-Type-Options': ['nosniff'] },
      ...(options.tls ? { tls: { certificate: options.tls.certificate, key: options.tls.key } } : {}),
    },
    ...(options.htpasswd ? { auth: { htpasswd: { realm: 'basic-realm', path: options.htpasswd } } } : {}),
  }
  const configFile = path.join(configDir, 'config.yml')
  // JSON is YAML: no YAML writer needed.
  await writeFile(configFile, JSON.stringify(config, null, 2))
  const daemon = startDaemon('docker-registry', DOCKER_REGISTRY, ['serve', configFile])
  const scheme = options.tls ? 'https' : 'http'
  const url = `${scheme}://${listen}`
  let stopped: Promise<void> | undefined
  const stop = () =>
    (stopped ??= (async () => {
      await daemon.stop()
      await removeDir(configDir)
    })())
  try {
    // 200 without auth, 401 with it: either way it is serving.
    await waitFor(
      `docker-registry on ${url}`,
      async () => {
        const status = await probeStatus(`${url}/v2/`)
        return status === 200 || status === 401
      },
      { daemon, timeoutMs: 60_000 },
    )
  } catch (error) {
    await stop()
    throw error
  }
  return { url, hostPort: listen, port, pid: daemon.pid, output: () => daemon.output(), stop }
}

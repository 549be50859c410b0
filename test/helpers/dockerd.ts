/**
 * A private Docker Engine for one test file: Debian's dockerd 20.10 in its own mount namespace.
 *
 * What it is:
 * - `/usr/sbin/dockerd --iptables=false --bridge=none` with its own `--data-root`, `--exec-root`,
 *   `--pidfile` and `-H unix://<dir>/docker.sock` under a temp folder; it starts its own containerd.
 *   No bridge means containers cannot publish ports; registry traffic (push/pull/login) is made by the
 *   daemon itself on the host network, so that is not a limit for registry tests.
 * - It runs under `unshare -m --propagation private`, with a private file bind-mounted on /etc/hosts,
 *   a private folder on /etc/docker (so certs.d, daemon.json and the daemon's key.json stay in the temp
 *   folder) and a private tmpfs on /run/containerd (its own containerd, even when a system one runs).
 *   The real /etc is never written.
 * - The docker CLI is Debian's `/usr/bin/docker` (20.10, matching the daemon; a newer client may be earlier
 *   in PATH), run inside the same namespace with `nsenter`, with its own `--config` folder (so `docker
 *   login` never touches ~/.docker). The CLI reads /etc/hosts and certs.d itself for `docker manifest`.
 *
 * What was verified on the test machine (Debian 12, 2026-11):
 * - dockerd treats 127.0.0.0/8 as an insecure registry: `localhost:<port>` and `127.0.0.1:<port>` are
 *   reached over plain HTTP (and would skip certificate checks over HTTPS). Good for local mode.
 * - `::1` is *not* insecure: a name that resolves to `::1` gets full certificate validation. Without the
 *   CA in certs.d a push fails with `x509: certificate signed by unknown authority`; after addCa() it
 *   works, with no daemon restart. So HTTPS tests use `DOCKER_TLS_NAME` (`berth.test`, mapped to ::1 in the
 *   private /etc/hosts) and a server listening on [::1]:<port> with a certificate for that name.
 * - The daemon's Go resolver caches /etc/hosts for up to 5 s: pass names in `hosts` at start, or expect
 *   a delay after addHost().
 */
import { mkdir, writeFile, appendFile } from 'node:fs/promises'
import path from 'node:path'
import { makeTempDir, probeStatus, removeDir, run, startDaemon, waitFor, type Daemon, type RunOptions, type RunResult } from './procs.js'

export const DOCKERD = '/usr/sbin/dockerd'
export const DOCKER = '/usr/bin/docker'
/** Resolves to ::1 inside every private dockerd namespace; use it for certificate-checked HTTPS. */
export const DOCKER_TLS_NAME = 'berth.test'
/** The base image every dockerd made here starts with (the seed's `docker tag app localhost:5000/app`). */
export const BASE_IMAGE = 'app:latest'

export interface DockerdOptions {
  /** Extra /etc/hosts entries for the daemon: name → address. `berth.test → ::1` is always there. */
  hosts?: Record<string, string>
  /** Passed as --insecure-registry (host:port). Loopback 127.0.0.0/8 needs none. */
  insecureRegistries?: string[]
  /** Import BASE_IMAGE at start (default true). */
  baseImage?: boolean
  /** Pass --debug to dockerd (its log is in output()). */
  debug?: boolean
  /** Start timeout, default 60 s. */
  timeoutMs?: number
  /** Written as the daemon's /etc/docker/daemon.json (default `{}`), e.g. `{ "registry-mirrors": [...] }`. */
  daemonConfig?: Record<string, unknown>
}

export interface Dockerd {
  /** Temp folder holding everything; removed by stop(). */
  readonly dir: string
  readonly socket: string
  /** DOCKER_HOST value for this daemon. */
  readonly host: string
  /** The CLI's --config folder (holds config.json after `docker login`). */
  readonly configDir: string
  /** Bind-mounted on /etc/docker/certs.d inside the namespace. */
  readonly certsDir: string
  readonly pid: number
  /** Runs Debian's docker CLI against this daemon, inside its mount namespace. Throws CommandError on failure. */
  docker(args: readonly string[], options?: RunOptions): Promise<RunResult>
  /** Runs any command inside the daemon's mount namespace (sees the private /etc/hosts and /etc/docker). */
  inNamespace(command: string, args: readonly string[], options?: RunOptions): Promise<RunResult>
  /** Trust `caPem` for registry `hostPort` (e.g. `berth.test:5443`): certs.d/<hostPort>/ca.crt. */
  addCa(hostPort: string, caPem: string): Promise<void>
  /** A client certificate for mTLS to `hostPort`: certs.d/<hostPort>/client.cert + client.key. */
  addClientCertificate(hostPort: string, certPem: string, keyPem: string): Promise<void>
  /** Appends a hosts entry (the daemon may see it only after its 5 s cache expires). */
  addHost(name: string, address: string): Promise<void>
  /** `docker import` of a tarball made of `files` (path → content), tagged `tag`. Returns the image id. */
  importImage(tag: string, files: Record<string, string | Uint8Array>): Promise<string>
  /**
   * `docker build` (classic builder) of a context made of `files` (must include `Dockerfile`).
   * Instructions that run nothing (FROM, COPY, LABEL, ENV …) work here; RUN needs a network the
   * daemon does not have (--bridge=none), so avoid it. Returns the image id.
   */
  build(tag: string, files: Record<string, string | Uint8Array>): Promise<string>
  /** `docker image inspect` of one image, parsed. */
  inspectImage(reference: string): Promise<{ Id: string; RepoDigests: string[]; RepoTags: string[] }>
  /** The daemon's log so far. */
  output(): string
  /** Stops the daemon (and its containerd) and removes the temp folder. Idempotent. */
  stop(): Promise<void>
}

async function writeTree(root: string, files: Record<string, string | Uint8Array>): Promise<void> {
  for (const [file, content] of Object.entries(files)) {
    const target = path.join(root, file)
    await mkdir(path.dirname(target), { recursive: true })
    await writeFile(target, content)
  }
}

export async function startDockerd(options: DockerdOptions = {}): Promise<Dockerd> {
  const dir = await makeTempDir('dockerd')
  const etcDocker = path.join(dir, 'etc-docker')
  const certsDir = path.join(etcDocker, 'certs.d')
  const configDir = path.join(dir, 'cli-config')
  const hostsFile = path.join(dir, 'hosts')
  const socket = path.join(dir, 'docker.sock')
  await Promise.all([
    mkdir(certsDir, { recursive: true }),
    mkdir(configDir, { recursive: true }),
    mkdir(path.join(dir, 'data'), { recursive: true }),
    mkdir(path.join(dir, 'exec'), { recursive: true }),
  ])
  const hosts: Record<string, string> = { [DOCKER_TLS_NAME]: '::1', ...options.hosts }
  await writeFile(
    hostsFile,
    '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' +
      Object.entries(hosts)
        .map(([name, address]) => `${address} ${name}\n`)
        .join(''),
  )
  // The daemon sees this folder as /etc/docker: an empty daemon.json means no host settings leak in.
  await writeFile(path.join(etcDocker, 'daemon.json'), `${JSON.stringify(options.daemonConfig ?? {})}\n`)

  const dockerdArgs = [
    '--iptables=false',
    '--ip6tables=false',
    '--bridge=none',
    '--data-root',
    path.join(dir, 'data'),
    '--exec-root',
    path.join(dir, 'exec'),
    '--pidfile',
    path.join(dir, 'docker.pid'),
    '-H',
    `unix://${socket}`,
    ...(options.insecureRegistries ?? []).flatMap(registry => ['--insecure-registry', registry]),
    ...(options.debug ? ['--debug'] : []),
  ]
  // `sh` only sets up the private mounts, then execs dockerd: the daemon keeps the child's pid.
  // A private tmpfs on /run/containerd: dockerd would use a system containerd whose socket it finds
  // there (shared with other daemons), and containerd's shims put their sockets in /run/containerd/s.
  // With the tmpfs, every dockerd starts its own containerd and nothing is left in the real /run.
  const script = [
    'set -e',
    'mount --bind "$1" /etc/hosts',
    'mount --bind "$2" /etc/docker',
    'mkdir -p /run/containerd',
    'mount -t tmpfs -o mode=0700 berth-test /run/containerd',
    'shift 2',
    'exec "$@"',
  ].join('; ')
  const daemon: Daemon = startDaemon(
    'dockerd',
    'unshare',
    ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', hostsFile, etcDocker, DOCKERD, ...dockerdArgs],
    {
      env: { DOCKER_HOST: undefined },
    },
  )

  let stopped: Promise<void> | undefined
  const stop = () =>
    (stopped ??= (async () => {
      await daemon.stop({ timeoutMs: 15_000 })
      await removeDir(dir)
    })())

  const inNamespace = (command: string, args: readonly string[], runOptions: RunOptions = {}) =>
    run('nsenter', ['-t', String(daemon.pid), '-m', '--', command, ...args], runOptions)

  const docker = (args: readonly string[], runOptions: RunOptions = {}) =>
    inNamespace(DOCKER, ['-H', `unix://${socket}`, '--config', configDir, ...args], {
      ...runOptions,
      env: { DOCKER_HOST: undefined, DOCKER_CONFIG: undefined, DOCKER_CONTEXT: undefined, ...runOptions.env },
    })

  const result: Dockerd = {
    dir,
    socket,
    host: `unix://${socket}`,
    configDir,
    certsDir,
    pid: daemon.pid,
    docker,
    inNamespace,
    async addCa(hostPort, caPem) {
      const target = path.join(certsDir, hostPort)
      await mkdir(target, { recursive: true })
      await writeFile(path.join(target, 'ca.crt'), caPem)
    },
    async addClientCertificate(hostPort, certPem, keyPem) {
      const target = path.join(certsDir, hostPort)
      await mkdir(target, { recursive: true })
      await writeFile(path.join(target, 'client.cert'), certPem)
      await writeFile(path.join(target, 'client.key'), keyPem, { mode: 0o600 })
    },
    async addHost(name, address) {
      // Append in place: the bind mount follows the inode, so a rename would not be seen.
      await appendFile(hostsFile, `${address} ${name}\n`)
    },
    async importImage(tag, files) {
      const rootfs = await makeTempDir('rootfs')
      try {
        await writeTree(rootfs, files)
        const tarball = path.join(dir, `import-${Date.now()}-${Math.random().toString(16).slice(2)}.tar`)
        // Fixed owner and mtime: the same files give the same layer (diff id) every time.
        await run('tar', ['--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '--sort=name', '-C', rootfs, '-cf', tarball, '.'])
        const imported = await docker(['import', '--change', 'CMD ["/hello"]', tarball, tag])
        await removeDir(tarball)
        return imported.stdout.trim()
      } finally {
        await removeDir(rootfs)
      }
    },
    async build(tag, files) {
      const context = await makeTempDir('build')
      try {
        await writeTree(context, files)
        const built = await docker(['build', '--quiet', '--tag', tag, context], { env: { DOCKER_BUILDKIT: '0' } })
        return built.stdout.trim()
      } finally {
        await removeDir(context)
      }
    },
    async inspectImage(reference) {
      const { stdout } = await docker(['image', 'inspect', reference])
      const [image] = JSON.parse(stdout) as { Id: string; RepoDigests: string[] | null; RepoTags: string[] | null }[]
      if (!image) throw new Error(`docker image inspect ${reference}: no image`)
      return { Id: image.Id, RepoDigests: image.RepoDigests ?? [], RepoTags: image.RepoTags ?? [] }
    },
    output: () => daemon.output(),
    stop,
  }

  try {
    await waitFor('dockerd to answer /_ping', async () => (await probeStatus('http://docker/_ping', { socketPath: socket })) === 200, {
      daemon,
      timeoutMs: options.timeoutMs ?? 60_000,
    })
    if (options.baseImage ?? true) {
      await result.importImage(BASE_IMAGE, { hello: 'hello from the berth test base image\n', 'etc/app-release': 'app 1\n' })
    }
  } catch (error) {
    await stop()
    throw error
  }
  return result
}

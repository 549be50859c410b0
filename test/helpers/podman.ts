/**
 * podman 4.3 (Debian) as a real registry client, with a private image store: `--storage-driver vfs`,
 * its own `--root`, `--runroot`, `--tmpdir` and auth file under a temp folder, so tests never touch
 * /var/lib/containers nor each other.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { makeTempDir, removeDir, run, type RunOptions, type RunResult } from './procs.js'
import type { RegistryAccess } from './skopeo.js'

export const PODMAN = '/usr/bin/podman'

export interface Podman {
  readonly dir: string
  /** Runs `podman <private store flags> <args>`. Throws CommandError on failure. */
  podman(args: readonly string[], options?: RunOptions): Promise<RunResult>
  login(hostPort: string, user: string, password: string, access?: RegistryAccess, options?: RunOptions): Promise<RunResult>
  push(source: string, destination: string, access?: RegistryAccess, options?: RunOptions): Promise<RunResult>
  pull(reference: string, access?: RegistryAccess, options?: RunOptions): Promise<RunResult>
  /** Image id of a local image. */
  imageId(reference: string): Promise<string>
  /** Removes the private store. Idempotent. */
  cleanup(): Promise<void>
}

function accessArgs(access: RegistryAccess | undefined): string[] {
  const args: string[] = []
  if (access?.tlsVerify !== undefined) args.push(`--tls-verify=${access.tlsVerify}`)
  if (access?.certDir) args.push('--cert-dir', access.certDir)
  if (access?.creds) args.push('--creds', access.creds)
  return args
}

export async function createPodman(): Promise<Podman> {
  const dir = await makeTempDir('podman')
  const authFile = path.join(dir, 'auth.json')
  const globals = [
    '--root',
    path.join(dir, 'root'),
    '--runroot',
    path.join(dir, 'run'),
    '--tmpdir',
    path.join(dir, 'tmp'),
    '--storage-driver',
    'vfs',
    '--cgroup-manager',
    'cgroupfs',
    '--events-backend',
    'none',
  ]
  const podman = (args: readonly string[], options: RunOptions = {}) =>
    run(PODMAN, [...globals, ...args], {
      ...options,
      env: { REGISTRY_AUTH_FILE: authFile, TMPDIR: path.join(dir, 'tmp'), ...options.env },
    })
  let cleaned: Promise<void> | undefined
  await mkdir(path.join(dir, 'tmp'))
  // podman refuses an --authfile that does not exist.
  await writeFile(authFile, '{"auths":{}}\n', { mode: 0o600 })
  return {
    dir,
    podman,
    login: (hostPort, user, password, access, options = {}) =>
      podman(['login', '--authfile', authFile, ...accessArgs(access), '--username', user, '--password-stdin', hostPort], { ...options, input: password }),
    push: (source, destination, access, options) => podman(['push', '--authfile', authFile, ...accessArgs(access), source, destination], options),
    pull: (reference, access, options) => podman(['pull', '--authfile', authFile, ...accessArgs(access), reference], options),
    async imageId(reference) {
      const { stdout } = await podman(['image', 'inspect', '--format', '{{.Id}}', reference])
      return stdout.trim()
    },
    cleanup: () =>
      (cleaned ??= (async () => {
        // vfs layers are plain folders; nothing is mounted, so removing the tree is enough.
        await removeDir(dir)
      })()),
  }
}

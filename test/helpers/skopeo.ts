/**
 * skopeo 1.9 (Debian) as a real registry client: copy images between OCI layouts and registries, read
 * manifests byte for byte.
 *
 * Every call uses `--insecure-policy` (tests copy unsigned images) and a private auth file (never root's
 * ~/.docker or /run/containers auth). Registry references are `docker://<host:port>/<repo>:<tag|@digest>`.
 */
import { rmSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import os from 'node:os'
import { run, type RunOptions, type RunResult } from './procs.js'

export const SKOPEO = '/usr/bin/skopeo'

/** How to reach one side of a copy (or the image of an inspect). */
export interface RegistryAccess {
  /** false for plain HTTP or an untrusted certificate (default true, like skopeo). */
  tlsVerify?: boolean
  /** Folder with `*.crt` CA files (and client `*.cert`/`*.key`). */
  certDir?: string
  /** `user:password` */
  creds?: string
}

export interface CopyOptions {
  /** Copy every image of an index (`--all`). */
  all?: boolean
  /** Fail rather than change any digest (`--preserve-digests`, default true). */
  preserveDigests?: boolean
  /** Convert the manifest (`--format oci|v2s2`). */
  format?: 'oci' | 'v2s2'
  src?: RegistryAccess
  dest?: RegistryAccess
}

// An empty auth file of our own: skopeo then uses only the creds given on the command line, never
// root's credentials. Made once per process, removed at exit.
const noAuthFile = path.join(os.tmpdir(), `berth-skopeo-auth-${process.pid}.json`)
let authFileReady: Promise<void> | undefined
function ensureAuthFile(): Promise<void> {
  return (authFileReady ??= writeFile(noAuthFile, '{"auths":{}}\n', { mode: 0o600 }).then(() => {
    process.on('exit', () => rmSync(noAuthFile, { force: true }))
  }))
}

function accessArgs(side: 'src' | 'dest' | '', access: RegistryAccess | undefined): string[] {
  const prefix = side ? `--${side}-` : '--'
  const args = [`${prefix}authfile`, noAuthFile]
  if (!access) return args
  if (access.tlsVerify !== undefined) args.push(`${prefix}tls-verify=${access.tlsVerify}`)
  if (access.certDir) args.push(`${prefix}cert-dir`, access.certDir)
  if (access.creds) args.push(`${prefix}creds`, access.creds)
  return args
}

/** Runs `skopeo --insecure-policy <args>`. Throws CommandError on failure. */
export async function skopeo(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  await ensureAuthFile()
  return run(SKOPEO, ['--insecure-policy', ...args], { ...options, env: { REGISTRY_AUTH_FILE: noAuthFile, ...options.env } })
}

export function copy(source: string, destination: string, options: CopyOptions = {}, runOptions: RunOptions = {}): Promise<RunResult> {
  return skopeo(
    [
      'copy',
      '--quiet',
      ...(options.all ? ['--all'] : []),
      ...((options.preserveDigests ?? true) ? ['--preserve-digests'] : []),
      ...(options.format ? ['--format', options.format] : []),
      ...accessArgs('src', options.src),
      ...accessArgs('dest', options.dest),
      source,
      destination,
    ],
    runOptions,
  )
}

/** The manifest (or index) bytes exactly as the registry served them. */
export async function inspectRaw(reference: string, access?: RegistryAccess, runOptions: RunOptions = {}): Promise<Buffer> {
  const result = await skopeo(['inspect', '--raw', ...accessArgs('', access), reference], runOptions)
  return result.stdoutBytes
}

/** `skopeo inspect` (parsed): Digest, RepoTags, Layers … */
export async function inspect(reference: string, access?: RegistryAccess): Promise<{ Digest: string; RepoTags: string[]; Layers: string[] }> {
  const result = await skopeo(['inspect', ...accessArgs('', access), reference])
  return JSON.parse(result.stdout) as { Digest: string; RepoTags: string[]; Layers: string[] }
}

/** `skopeo list-tags` → tags. */
export async function listTags(reference: string, access?: RegistryAccess): Promise<string[]> {
  const result = await skopeo(['list-tags', ...accessArgs('', access), reference])
  return (JSON.parse(result.stdout) as { Tags: string[] }).Tags
}

/**
 * The ceiling for `skopeo pull` (issue 21): the image the `skopeo-pull` case pulls, served by
 * nginx as static files with the seed stack's TLS settings (same certificate, protocols and
 * ciphers, `listen … ssl http2`, Debian's http settings with `sendfile on`). `/v2/` answers 200;
 * the manifest is a file at its tag's API path and the blobs are the registry's own `data` files,
 * reached by digest, each with its `Content-Type` and `Docker-Content-Digest`. Nothing else is
 * served, and no login is asked: skopeo sends its credentials only when challenged, so this
 * ceiling has no authentication in it (Berth and the seed check Basic credentials on every request).
 *
 * One nginx per pull, started before the clock with the image's manifest in its config.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import crypto from 'node:crypto'
import { closeSync, openSync } from 'node:fs'
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import https from 'node:https'
import path from 'node:path'
import { blobDataPath, tagCurrentLinkPath } from '../../src/storage/paths.js'
import { skopeoPull, type ClientContext } from './clients.js'
import type { CaseHooks } from './hooks.js'
import type { BenchPki } from './pki.js'
import type { CaseResult } from './report.js'
import { nginxMainDirectives, nginxTempPaths, seedTlsDirectives, type Stack } from './stacks.js'
import { fmt, freePort, sleep, stopChild } from './util.js'

/** Berth's `skopeo-pull` target against this ceiling, measured in the same run. */
export const STATIC_CEILING_SHARE = 0.95

export interface StaticImage {
  /** The registry storage root holding `docker/registry/v2` (filesystem storage). */
  storageRoot: string
  repository: string
  tag: string
}

export interface StaticNginx {
  /** `127.0.0.1:<port>`, for image references. */
  host: string
  logs: string[]
  stop(): Promise<void>
}

const DIGEST = /^sha256:[0-9a-f]{64}$/

/** The manifest `tag` points at in a registry:2-layout storage root: its digest, bytes and media type. */
export async function readTaggedManifest(image: StaticImage): Promise<{ digest: string; bytes: Buffer; mediaType: string }> {
  const digest = (await readFile(path.join(image.storageRoot, tagCurrentLinkPath(image.repository, image.tag)), 'utf8')).trim()
  if (!DIGEST.test(digest)) throw new Error(`${image.repository}:${image.tag}: unexpected tag link ${JSON.stringify(digest)}`)
  const bytes = await readFile(path.join(image.storageRoot, blobDataPath(digest)))
  const mediaType = (JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown }).mediaType
  if (typeof mediaType !== 'string') throw new Error(`${digest}: the manifest has no mediaType field`)
  return { digest, bytes, mediaType }
}

/** The nginx.conf of the static server; exported for the config test. */
export function staticNginxConf(options: {
  dir: string
  port: number
  pki: BenchPki
  image: StaticImage
  manifest: { digest: string; mediaType: string; file: string }
}): string {
  const { dir, port, pki, image, manifest } = options
  const blobs = path.join(image.storageRoot, 'docker', 'registry', 'v2', 'blobs', 'sha256')
  return `# Debian's /etc/nginx/nginx.conf main/http settings, as the seed stack's.
${nginxMainDirectives(dir)}
http {
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    access_log ${dir}/access.log;
${nginxTempPaths(dir)}
    # No type by file name: every answer's type is set below.
    types {}

    server {
        listen 127.0.0.1:${port} ssl http2;
        server_name localhost;
${seedTlsDirectives(pki)}
        location = /v2/ {
            default_type application/json;
            add_header Docker-Distribution-Api-Version registry/2.0 always;
            return 200 '{}';
        }
        location = /v2/${image.repository}/manifests/${image.tag} {
            alias ${manifest.file};
            default_type ${manifest.mediaType};
            add_header Docker-Content-Digest ${manifest.digest} always;
        }
        location ~ "^/v2/${escapeRegex(image.repository)}/blobs/sha256:(?<prefix>[0-9a-f]{2})(?<rest>[0-9a-f]{62})$" {
            alias ${blobs}/$prefix/$prefix$rest/data;
            default_type application/octet-stream;
            add_header Docker-Content-Digest sha256:$prefix$rest always;
        }
        location / {
            return 404;
        }
    }
}
`
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** Starts nginx serving `image` from its storage root; resolves once `/v2/` answers 200 over TLS. */
export async function startStaticNginx(dir: string, pki: BenchPki, image: StaticImage): Promise<StaticNginx> {
  await mkdir(dir, { recursive: true })
  const manifest = await readTaggedManifest(image)
  const manifestFile = path.join(dir, 'manifest.json')
  await writeFile(manifestFile, manifest.bytes)
  const port = await freePort()
  const conf = path.join(dir, 'nginx.conf')
  await writeFile(conf, staticNginxConf({ dir, port, pki, image, manifest: { digest: manifest.digest, mediaType: manifest.mediaType, file: manifestFile } }))
  const log = path.join(dir, 'stderr.log')
  const fd = openSync(log, 'a')
  let child: ChildProcess
  try {
    child = spawn('/usr/sbin/nginx', ['-p', dir, '-c', conf, '-g', 'daemon off;'], { stdio: ['ignore', fd, fd] })
  } finally {
    closeSync(fd)
  }
  const host = `127.0.0.1:${port}`
  const server: StaticNginx = { host, logs: [log, path.join(dir, 'error.log')], stop: () => stopChild(child) }
  try {
    const ca = await readFile(pki.caCert)
    for (let tries = 0; ; tries++) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`static nginx exited (${child.exitCode ?? child.signalCode}) while starting: ${await readFile(log, 'utf8').catch(() => '')}`)
      }
      const status = await new Promise<number>(resolve => {
        const request = https.get({ hostname: '127.0.0.1', port, path: '/v2/', ca, servername: 'localhost', agent: false }, response => {
          response.resume()
          resolve(response.statusCode ?? 0)
        })
        request.on('error', () => resolve(0))
      })
      if (status === 200) break
      if (tries > 100) throw new Error(`static nginx at ${host} not ready: GET /v2/ answered ${status}`)
      await sleep(100)
    }
  } catch (error) {
    await server.stop()
    throw error
  }
  return server
}

export interface StaticPullOptions {
  stacks: Stack[]
  pki: BenchPki
  /** Where the pulled copy is written, then removed. */
  clientRoot: string
  /** Where each stack holds the image the `skopeo-pull` case pulls. */
  repository: string
  tag: string
  /** The image's layer bytes on a stack (the figure is layer bytes per second, as skopeo-pull's). */
  bytes(stack: Stack): number
  /** Counts from 0. */
  round: number
}

/**
 * Pulls `repository:tag` from a stack with skopeo (`dir:` keeps the manifest's bytes and names each
 * blob by its digest) and lays the copy out as registry:2 stores it under `root`, which it returns.
 */
export async function copyToLocalLayout(client: ClientContext, repository: string, tag: string, root: string): Promise<string> {
  const pulled = `${root}-pulled`
  await mkdir(path.dirname(root), { recursive: true })
  await skopeoPull(client, repository, tag, pulled)
  const place = async (hex: string, from: string) => {
    const data = path.join(root, blobDataPath(`sha256:${hex}`))
    await mkdir(path.dirname(data), { recursive: true })
    await rename(from, data)
  }
  const manifest = await readFile(path.join(pulled, 'manifest.json'))
  const manifestHex = crypto.createHash('sha256').update(manifest).digest('hex')
  for (const name of await readdir(pulled)) if (/^[0-9a-f]{64}$/.test(name)) await place(name, path.join(pulled, name))
  await place(manifestHex, path.join(pulled, 'manifest.json'))
  const link = path.join(root, tagCurrentLinkPath(repository, tag))
  await mkdir(path.dirname(link), { recursive: true })
  await writeFile(link, `sha256:${manifestHex}`)
  await rm(pulled, { recursive: true, force: true })
  return root
}

/**
 * One `skopeo-pull-static` sample: nginx serves the image from Berth's storage root (the seed's
 * without Berth; with S3, a local copy of Berth's); skopeo pulls it exactly as in `skopeo-pull`.
 */
export async function runStaticPull(hooks: CaseHooks, options: StaticPullOptions): Promise<void> {
  const source = options.stacks.find(stack => stack.name === 'berth') ?? options.stacks[0]
  if (source === undefined) return
  const dir = path.join(options.clientRoot, 'static-nginx')
  const dest = path.join(options.clientRoot, 'pull-static')
  let server: StaticNginx | undefined
  try {
    // On S3, a local copy of the same image (pulled from Berth before the clock) in the same layout.
    const storageRoot =
      source.s3 === undefined
        ? source.storageRoot
        : await copyToLocalLayout({ host: source.host, pki: options.pki }, options.repository, options.tag, path.join(dir, 'copy'))
    server = await startStaticNginx(dir, options.pki, { storageRoot, repository: options.repository, tag: options.tag })
    await hooks.settle()
    const seconds = await skopeoPull({ host: server.host, pki: options.pki }, options.repository, options.tag, dest)
    const rate = options.bytes(source) / seconds / 1e6
    hooks.record('skopeo-pull-static', 'berth', rate)
    hooks.progress(`r${options.round + 1}/${hooks.rounds} static nginx    skopeo pull of ${source.name}'s copy: ${fmt(rate)} MB/s (${fmt(seconds)} s)`)
  } catch (error) {
    hooks.fail('skopeo-pull-static', source.name, error, options.round)
  } finally {
    await server?.stop()
    await rm(dest, { recursive: true, force: true })
    await rm(dir, { recursive: true, force: true })
  }
}

/**
 * Holds `skopeo-pull` to STATIC_CEILING_SHARE of `skopeo-pull-static` (Berth's median against the
 * ceiling's), on top of its own target; notes each stack's share.
 */
export function judgeStaticCeiling(results: CaseResult[]): void {
  const pull = results.find(result => result.id === 'skopeo-pull')
  const ceiling = results.find(result => result.id === 'skopeo-pull-static')?.stacks.berth?.median
  if (pull === undefined || ceiling === undefined || ceiling <= 0) return
  const seed = pull.stacks.seed?.median
  const berth = pull.stacks.berth?.median
  if (berth !== undefined) {
    const share = berth / ceiling
    const ok = share >= STATIC_CEILING_SHARE
    pull.met = (pull.met ?? true) && ok
    pull.notes.push(
      `Berth at ${fmt(share)}× the static-nginx ceiling (${fmt(ceiling)} MB/s; target ≥ ${STATIC_CEILING_SHARE}×: ${ok ? 'met' : 'NOT met'})` +
        (seed !== undefined ? `, the seed at ${fmt(seed / ceiling)}×` : ''),
    )
  }
}

/**
 * The clients a user points at a registry: skopeo for images, curl for raw blob transfers,
 * wrk (GET) and ab (HEAD; wrk cannot send HEAD) for request rates. Each returns one figure and
 * throws if the registry did not do what was asked, so a fast failure never reads as a fast run.
 */
import { open, readFile } from 'node:fs/promises'
import https from 'node:https'
import type { BlobRef } from './content.js'
import type { BenchPki } from './pki.js'
import { run } from './util.js'

export interface ClientContext {
  host: string
  pki: BenchPki
}

const skopeoBase = ['--insecure-policy', 'copy', '--quiet', '--retry-times', '0']

/** `skopeo copy oci:… docker://…`; returns seconds. */
export async function skopeoPush(ctx: ClientContext, source: string, repository: string, tag: string): Promise<number> {
  const result = await run('skopeo', [
    ...skopeoBase,
    '--dest-creds',
    `${ctx.pki.user}:${ctx.pki.password}`,
    '--dest-cert-dir',
    ctx.pki.caDir,
    source,
    `docker://${ctx.host}/${repository}:${tag}`,
  ])
  return result.seconds
}

/** `skopeo copy docker://… dir:…` (skopeo verifies every digest); returns seconds. */
export async function skopeoPull(ctx: ClientContext, repository: string, tag: string, destDir: string): Promise<number> {
  const result = await run('skopeo', [
    ...skopeoBase,
    '--src-creds',
    `${ctx.pki.user}:${ctx.pki.password}`,
    '--src-cert-dir',
    ctx.pki.caDir,
    `docker://${ctx.host}/${repository}:${tag}`,
    `dir:${destDir}`,
  ])
  return result.seconds
}

/** `skopeo copy <image> docker://…` to a registry without a login, its certificate not checked (an upstream on loopback); returns seconds. */
export async function skopeoPushAnonymous(source: string, host: string, repository: string, tag: string): Promise<number> {
  const result = await run('skopeo', [...skopeoBase, '--dest-tls-verify=false', source, `docker://${host}/${repository}:${tag}`])
  return result.seconds
}

export interface PullTiming {
  seconds: number
  /** skopeo's own CPU time, user + system (from /usr/bin/time). */
  cpuSeconds: number
}

/**
 * `skopeo copy docker://… dir:…` like skopeoPull, with the login optional (`ctx.pki` still gives the
 * CA), run under /usr/bin/time so the client's CPU time is known: on a machine with few cores a
 * pull's wall time depends on what every process in the chain needs.
 */
export async function skopeoPullTimed(ctx: ClientContext, repository: string, tag: string, destDir: string, login = true): Promise<PullTiming> {
  const mark = '@@cpu'
  const result = await run('/usr/bin/time', [
    '-f',
    `${mark} %U %S`,
    'skopeo',
    ...skopeoBase,
    ...(login ? ['--src-creds', `${ctx.pki.user}:${ctx.pki.password}`] : []),
    '--src-cert-dir',
    ctx.pki.caDir,
    `docker://${ctx.host}/${repository}:${tag}`,
    `dir:${destDir}`,
  ])
  const match = new RegExp(`^${mark} ([\\d.]+) ([\\d.]+)$`, 'm').exec(result.stderr)
  if (match === null) throw new Error(`cannot read /usr/bin/time's output: ${result.stderr.slice(-400)}`)
  return { seconds: result.seconds, cpuSeconds: Number(match[1]) + Number(match[2]) }
}

interface CurlResult {
  status: number
  seconds: number
  httpVersion: string
  headers: Record<string, string[]>
  sizeDownload: number
  sizeUpload: number
}

const MARK = '\n@@curl-w@@\n'

async function curl(ctx: ClientContext, args: string[], stdinFd?: number): Promise<CurlResult> {
  const result = await run(
    'curl',
    ['-sS', '--cacert', ctx.pki.caCert, '-u', `${ctx.pki.user}:${ctx.pki.password}`, '-w', `${MARK}%{json}${MARK}%{header_json}`, ...args],
    stdinFd === undefined ? {} : { stdinFd },
  )
  const [, infoText, headersText] = result.stdout.split(MARK)
  if (headersText === undefined) throw new Error(`cannot read curl's -w output:\n${result.stdout}`)
  const info = JSON.parse(infoText!) as Record<string, unknown>
  const headers = JSON.parse(headersText) as Record<string, string[]>
  return {
    status: Number(info.http_code),
    seconds: Number(info.time_total),
    httpVersion: String(info.http_version),
    headers,
    sizeDownload: Number(info.size_download),
    sizeUpload: Number(info.size_upload),
  }
}

function expectStatus(what: string, result: CurlResult, expected: number): void {
  if (result.status !== expected) throw new Error(`${what}: expected HTTP ${expected}, got ${result.status}`)
}

function location(ctx: ClientContext, result: CurlResult): URL {
  const value = result.headers.location?.[0]
  if (!value) throw new Error('upload response has no Location header')
  return new URL(value, `https://${ctx.host}`)
}

async function startUpload(ctx: ClientContext, repository: string): Promise<{ url: URL; seconds: number }> {
  const started = await curl(ctx, ['-o', '/dev/null', '-X', 'POST', '-H', 'Content-Length: 0', `https://${ctx.host}/v2/${repository}/blobs/uploads/`])
  expectStatus('POST blobs/uploads/', started, 202)
  return { url: location(ctx, started), seconds: started.seconds }
}

export interface TransferResult {
  seconds: number
  httpVersion: string
}

/** Monolithic upload: POST, then one PUT carrying the whole blob and its digest. */
export async function curlPutBlob(ctx: ClientContext, repository: string, file: string, blob: BlobRef): Promise<TransferResult> {
  const upload = await startUpload(ctx, repository)
  upload.url.searchParams.set('digest', blob.digest)
  const put = await curl(ctx, ['-o', '/dev/null', '-X', 'PUT', '-T', file, '-H', 'Content-Type: application/octet-stream', upload.url.href])
  expectStatus('PUT blob', put, 201)
  return { seconds: upload.seconds + put.seconds, httpVersion: put.httpVersion }
}

/**
 * Streamed upload as docker and skopeo do it: POST, one PATCH whose body is read from a pipe
 * (length unknown, so HTTP/1.1 uses chunked transfer coding), then an empty PUT with the digest.
 */
export async function curlPatchBlob(ctx: ClientContext, repository: string, file: string, blob: BlobRef): Promise<TransferResult> {
  const upload = await startUpload(ctx, repository)
  const handle = await open(file, 'r')
  let patch: CurlResult
  try {
    patch = await curl(ctx, ['-o', '/dev/null', '-X', 'PATCH', '-T', '-', '-H', 'Content-Type: application/octet-stream', upload.url.href], handle.fd)
  } finally {
    await handle.close()
  }
  expectStatus('PATCH blob', patch, 202)
  // No size check here: with chunked coding curl counts the chunk framing in size_upload. The
  // closing PUT proves the bytes: the registry answers 201 only if the digest matches.
  const done = location(ctx, patch)
  done.searchParams.set('digest', blob.digest)
  const put = await curl(ctx, ['-o', '/dev/null', '-X', 'PUT', '--data-binary', '', '-H', 'Content-Type: application/octet-stream', done.href])
  expectStatus('PUT (close upload)', put, 201)
  return { seconds: upload.seconds + patch.seconds + put.seconds, httpVersion: patch.httpVersion }
}

/** GET of a blob to /dev/null (following a redirect if the registry sends one). */
export async function curlGetBlob(ctx: ClientContext, repository: string, blob: BlobRef): Promise<TransferResult> {
  const get = await curl(ctx, ['-o', '/dev/null', '-L', `https://${ctx.host}/v2/${repository}/blobs/${blob.digest}`])
  expectStatus('GET blob', get, 200)
  if (get.sizeDownload !== blob.size) throw new Error(`GET returned ${get.sizeDownload} bytes, expected ${blob.size}`)
  return { seconds: get.seconds, httpVersion: get.httpVersion }
}

function basicAuth(ctx: ClientContext): string {
  return 'Basic ' + Buffer.from(`${ctx.pki.user}:${ctx.pki.password}`).toString('base64')
}

/** Parses wrk's summary; exported for the parser test. */
export function parseWrk(output: string): { rps: number; requests: number; errors: number } {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(output)
  const requests = /(\d+) requests in/.exec(output)
  if (!rps || !requests) throw new Error(`cannot read wrk output:\n${output}`)
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(output)
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output)
  const errors = Number(non2xx?.[1] ?? 0) + (socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0)
  return { rps: Number(rps[1]), requests: Number(requests[1]), errors }
}

/** Parses ab's summary; exported for the parser test. */
export function parseAb(output: string): { rps: number; requests: number; errors: number } {
  const rps = /Requests per second:\s+([\d.]+)/.exec(output)
  const complete = /Complete requests:\s+(\d+)/.exec(output)
  if (!rps || !complete) throw new Error(`cannot read ab output:\n${output}`)
  const non2xx = /Non-2xx responses:\s+(\d+)/.exec(output)
  // ab counts "Length" failures when response sizes vary; HEAD has no body, so any failure is real.
  const failed = /Failed requests:\s+(\d+)/.exec(output)
  return { rps: Number(rps[1]), requests: Number(complete[1]), errors: Number(non2xx?.[1] ?? 0) + Number(failed?.[1] ?? 0) }
}

export const RATE_CONNECTIONS = 16

/**
 * A Bearer token from a registry's token service (`GET /token?service=…&scope=…`, distribution's
 * token protocol) for the bench user, who logs in there with Basic credentials as docker does.
 * Throws unless the answer is 200 with a token.
 */
export async function fetchToken(ctx: ClientContext, service: string, scope: string): Promise<string> {
  const ca = await readFile(ctx.pki.caCert)
  const [hostname, port] = ctx.host.split(':')
  const query = new URLSearchParams({ service, scope })
  const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const request = https.get(
      { hostname, port, path: `/token?${query}`, ca, servername: 'localhost', agent: false, headers: { Authorization: basicAuth(ctx) } },
      response => {
        let text = ''
        response.setEncoding('utf8').on('data', (chunk: string) => (text += chunk))
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text }))
        response.on('error', reject)
      },
    )
    request.on('error', reject)
    request.setTimeout(10_000, () => request.destroy(new Error('token request timed out')))
  })
  if (status !== 200) throw new Error(`GET /token (${scope}): HTTP ${status}: ${body.slice(0, 300)}`)
  const token = (JSON.parse(body) as { token?: unknown }).token
  if (typeof token !== 'string' || token === '') throw new Error(`GET /token (${scope}): no token in the answer`)
  return token
}

/** How a rate client authenticates: Basic with the bench user, a Bearer token, or not at all. */
export type RateAuth = { kind: 'basic' } | { kind: 'bearer'; token: string } | { kind: 'anonymous' }

/** GETs per second with wrk (2 threads, 16 keep-alive connections), Basic auth unless told otherwise. */
export async function wrkGet(ctx: ClientContext, urlPath: string, seconds: number, accept?: string, auth: RateAuth = { kind: 'basic' }): Promise<number> {
  const headers: string[] = []
  if (auth.kind === 'basic') headers.push('-H', `Authorization: ${basicAuth(ctx)}`)
  else if (auth.kind === 'bearer') headers.push('-H', `Authorization: Bearer ${auth.token}`)
  if (accept) headers.push('-H', `Accept: ${accept}`)
  const result = await run('wrk', ['-t2', `-c${RATE_CONNECTIONS}`, `-d${seconds}s`, ...headers, `https://${ctx.host}${urlPath}`])
  const parsed = parseWrk(result.stdout)
  if (parsed.errors > 0 || parsed.requests === 0) {
    throw new Error(`wrk GET ${urlPath}: ${parsed.errors} errors in ${parsed.requests} requests\n${result.stdout}`)
  }
  return parsed.rps
}

/** Authenticated HEADs per second with `ab -i -k` (HTTP/1.0 keep-alive, 16 connections). */
export async function abHead(ctx: ClientContext, urlPath: string, seconds: number, accept?: string): Promise<number> {
  const headers = accept ? ['-H', `Accept: ${accept}`] : []
  // -n after -t: -t alone caps the run at 50000 requests.
  const result = await run(
    'ab',
    [
      '-q',
      '-i',
      '-k',
      '-c',
      String(RATE_CONNECTIONS),
      '-t',
      String(seconds),
      '-n',
      '100000000',
      '-A',
      `${ctx.pki.user}:${ctx.pki.password}`,
      ...headers,
      `https://${ctx.host}${urlPath}`,
    ],
    { allowFailure: true },
  )
  if (result.code !== 0) throw new Error(`ab HEAD ${urlPath} failed:\n${result.stderr || result.stdout}`)
  const parsed = parseAb(result.stdout)
  if (parsed.errors > 0 || parsed.requests === 0) {
    throw new Error(`ab HEAD ${urlPath}: ${parsed.errors} errors in ${parsed.requests} requests\n${result.stdout}`)
  }
  return parsed.rps
}

/**
 * What the scale-out e2e files (test/e2e/scale-out*.test.ts) share: several Berth processes on one
 * bucket of a real S3 server, a round-robin balancer in front of them, and skopeo pulls checked
 * byte for byte. One source of truth, so every scale-out test balances and checks the same way.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import type { ExecutionContext, TestFn } from 'ava'
import type { S3Server } from './ceph.js'
import { fileDigest, OciLayout, type BuiltImage } from './images.js'
import { copy, type RegistryAccess } from './skopeo.js'

/** The instances serve plain HTTP on loopback: skopeo must not ask for TLS. */
export const plainHttp: RegistryAccess = { tlsVerify: false }

/**
 * A list of stops run newest first after the file's tests (also when the setup failed halfway,
 * so a half-started cluster is still torn down). Push a stop right after each thing starts.
 */
export function stopAfterAll(test: TestFn): (() => Promise<unknown>)[] {
  const started: (() => Promise<unknown>)[] = []
  test.after.always(async () => {
    for (const stop of started.reverse()) await stop().catch(() => {})
  })
  return started
}

/** `--storage s3` and the flags that put an instance on `s3`'s bucket under `prefix`. */
export function s3StorageArgs(s3: S3Server, prefix: string): string[] {
  return ['--storage', 's3', '--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-region', s3.region, '--s3-prefix', prefix]
}

/**
 * Passes one request on to `target` as is, bodies streaming both ways (nothing buffered); a
 * failed upstream connection is a 502. `onResponse` sees the upstream status before it is relayed.
 */
export function forward(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  target: { host: string; port: number | string },
  agent?: http.Agent,
  onResponse?: (status: number) => void,
): void {
  const upstream = http.request({ host: target.host, port: target.port, method: req.method, path: req.url, headers: req.headers, agent }, response => {
    onResponse?.(response.statusCode ?? 0)
    res.writeHead(response.statusCode ?? 502, response.headers)
    response.pipe(res)
  })
  upstream.on('error', () => {
    if (!res.headersSent) res.writeHead(502)
    res.end()
  })
  req.pipe(upstream)
}

/** One request the balancer passed on: to which instance, and what it answered. */
export interface Hit {
  readonly instance: number
  readonly method: string
  readonly path: string
  readonly status: number
}

export interface Balancer {
  readonly url: string
  readonly hostPort: string
  readonly hits: Hit[]
  close(): Promise<void>
}

/**
 * The balancer: a few lines of Node on a free loopback port. Each request (not each connection)
 * goes to the next instance in turn, with no sticky sessions, so the requests of one upload land on
 * several instances. What went where is recorded in `hits` for the assertions.
 */
export async function startBalancer(targets: readonly { readonly url: string }[]): Promise<Balancer> {
  const agent = new http.Agent({ keepAlive: true })
  const hits: Hit[] = []
  let next = 0
  const server = http.createServer((req, res) => {
    const instance = next++ % targets.length
    const target = new URL((targets[instance] as { url: string }).url)
    forward(req, res, { host: target.hostname, port: target.port }, agent, status => {
      hits.push({ instance, method: req.method ?? '', path: (req.url ?? '').split('?')[0] ?? '', status })
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    hostPort: `127.0.0.1:${port}`,
    hits,
    close: async () => {
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
      agent.destroy()
    },
  }
}

/**
 * A `pullAndCheck(t, reference, image)` that pulls `reference` with skopeo into a fresh OCI layout
 * under `work()` and asserts the manifest bytes and every blob's digest are those of `image`.
 */
export function pullChecker(work: () => string): (t: ExecutionContext, reference: string, image: BuiltImage) => Promise<void> {
  let outs = 0
  return async (t, reference, image) => {
    const out = await OciLayout.create(path.join(work(), `out-${++outs}`))
    await copy(reference, out.ref('pulled'), { src: plainHttp })
    t.true((await out.readBlob(image.manifest.digest)).equals(image.manifestBytes), `${reference}: manifest bytes identical`)
    for (const blob of image.blobs) t.is(await fileDigest(out.blobPath(blob.digest)), blob.digest, `${reference}: blob ${blob.digest} intact`)
  }
}

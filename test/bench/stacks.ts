/**
 * The two stacks under test, each started the way its users run it, on loopback ports:
 *
 * - seed: nginx 1.22 terminating TLS (http2, `client_max_body_size 5G`, the seed's four
 *   proxy_set_header lines, Debian's nginx.conf defaults and certbot's TLS options) in front of
 *   distribution 2.8.2 (`docker-registry serve config.yml`, the registry:2 image's default config
 *   plus htpasswd auth, filesystem storage). As in the seed, registry does auth; nginx only TLS.
 * - berth: the built bundle, `node dist/berth.cjs serve ...`, with the same cert, key and htpasswd,
 *   and access rules on (`--access`, see benchAccessRules): the configuration a registry that
 *   serves public images runs, with Berth's own token service at `/token`.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import https from 'node:https'
import path from 'node:path'
import type { BenchPki } from './pki.js'
import { freePort, sleep, stopChild } from './util.js'

/** `berth-metrics`: Berth with `--metrics-listen`, scraped every 5 s, to compare with `berth`. */
export type StackName = 'berth' | 'seed' | 'berth-metrics'

/** `npm run bench -- --storage s3`: both stacks store in one S3 bucket (each under its own prefix). */
export interface S3Target {
  readonly endpoint: string
  readonly region: string
  readonly bucket: string
  readonly accessKeyId: string
  readonly secretAccessKey: string
  readonly prefix: string
}

export interface Stack {
  readonly name: StackName
  /** `127.0.0.1:<port>`, what clients put in image references. */
  readonly host: string
  /** The storage root holding `docker/registry/v2`. */
  readonly storageRoot: string
  /** Set with --storage s3: where the stack stores instead of storageRoot. */
  readonly s3?: S3Target
  /** Root processes; their descendants count too. */
  pids(): number[]
  /** Log files, shown when something fails. */
  readonly logs: string[]
  /** Berth's token service (`/token`), and the `service` its tokens are for; the seed has none. */
  readonly tokenService?: string
  stop(): Promise<void>
}

/** Berth's first --domain: the name of its token service (the challenge's `service`, the tokens' `aud`). */
export const BERTH_DOMAIN = 'localhost'

/**
 * The access file the Berth stack runs with: the bench user may do everything on `bench/**` and
 * `public/**`, and everyone (anonymous or logged in) may pull `public/**`; nothing else is allowed.
 */
export function benchAccessRules(user: string): string {
  return `rules:
  - repository: "bench/**"
    who: [${user}]
    can: [pull, push, overwrite, delete]
  - repository: "public/**"
    who: [${user}]
    can: [pull, push, overwrite, delete]
  - repository: "public/**"
    who: [anonymous, authenticated]
    can: [pull]
`
}

/**
 * Starts a server with stdout and stderr going straight to a log file (the child writes to the
 * file itself: piping its output through this process would cost the harness CPU during rate tests).
 */
function spawnLogged(command: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv): ChildProcess {
  const fd = openSync(logFile, 'a')
  try {
    return spawn(command, args, { stdio: ['ignore', fd, fd], env: env ?? process.env })
  } finally {
    closeSync(fd) // the child holds its own copy
  }
}

async function tail(file: string, lines = 20): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trim().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no log)'
  }
}

/** Waits until `GET https://host/v2/` answers 401 without credentials (auth on, registry up). */
async function waitReady(host: string, caCert: string, children: ChildProcess[], logs: string[], timeoutMs = 30_000): Promise<void> {
  const ca = await readFile(caCert)
  const deadline = Date.now() + timeoutMs
  let lastError = ''
  while (Date.now() < deadline) {
    for (const child of children) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(
          `${child.spawnfile} exited (${child.exitCode ?? child.signalCode}) while starting:\n` + (await Promise.all(logs.map(l => tail(l)))).join('\n'),
        )
      }
    }
    const status = await new Promise<number>(resolve => {
      const [hostname, port] = host.split(':')
      const request = https.get({ hostname, port, path: '/v2/', ca, servername: 'localhost', agent: false }, response => {
        response.resume()
        resolve(response.statusCode ?? 0)
      })
      request.on('error', error => {
        lastError = error.message
        resolve(0)
      })
      request.setTimeout(2000, () => request.destroy(new Error('timeout')))
    })
    if (status === 401) return
    if (status !== 0) lastError = `GET /v2/ answered ${status}, expected 401`
    await sleep(200)
  }
  throw new Error(`stack at ${host} not ready after ${timeoutMs} ms: ${lastError}\n` + (await Promise.all(logs.map(l => tail(l)))).join('\n'))
}

/**
 * The seed's TLS settings for an nginx `server` block (8-space indented lines), shared by the seed
 * stack and the static-file ceiling (static-ceiling.ts) so both terminate TLS alike.
 */
/** Debian's nginx.conf main section (user, workers, events), its files kept in `dir`. */
export function nginxMainDirectives(dir: string): string {
  return `user root;
worker_processes auto;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events {
    worker_connections 768;
}`
}

/** nginx's temporary folders moved into `dir` (an http-block fragment). */
export function nginxTempPaths(dir: string): string {
  return `    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;`
}

/**
 * The registry:2 image's /etc/docker/registry/config.yml with the address moved to loopback, on the
 * filesystem or S3 (redirects off: bytes go through the registry, as through Berth without
 * --s3-redirect), with htpasswd auth when `htpasswd` is given (the seed's REGISTRY_AUTH=htpasswd).
 */
export function registry2ImageConfig(options: { port: number; storage: { root: string } | S3Target; htpasswd?: string }): string {
  const { storage } = options
  const driver =
    'root' in storage
      ? `  filesystem:
    rootdirectory: ${storage.root}`
      : `  s3:
    accesskey: ${storage.accessKeyId}
    secretkey: ${storage.secretAccessKey}
    region: ${storage.region}
    regionendpoint: ${storage.endpoint}
    bucket: ${storage.bucket}
    rootdirectory: /${storage.prefix}
    secure: false
    v4auth: true
  # Bytes through the registry on both stacks (Berth does not redirect unless --s3-redirect).
  redirect:
    disable: true`
  const auth =
    options.htpasswd === undefined
      ? ''
      : `auth:
  htpasswd:
    realm: Registry Realm
    path: ${options.htpasswd}
`
  return `version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
${driver}
http:
  addr: 127.0.0.1:${options.port}
  headers:
    X-Content-Type-Options: [nosniff]
${auth}health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`
}

export function seedTlsDirectives(pki: BenchPki): string {
  return `        ssl_certificate     ${pki.serverChain};
        ssl_certificate_key ${pki.serverKey};
        # certbot's options-ssl-nginx.conf (ssl_dhparam left out: it only serves DHE suites,
        # which no client here negotiates). The seed's \`ssl_verify_client on\` is left out
        # too: it cannot start without a client CA, and Berth does not require client certs.
        ssl_session_cache shared:le_nginx_SSL:10m;
        ssl_session_timeout 1440m;
        ssl_session_tickets off;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers off;
        ssl_ciphers "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384";
`
}

export async function startSeed(dir: string, pki: BenchPki, s3?: S3Target): Promise<Stack> {
  const nginxDir = path.join(dir, 'nginx')
  const storageRoot = path.join(dir, 'data')
  await mkdir(nginxDir, { recursive: true })
  await mkdir(storageRoot, { recursive: true })
  const registryPort = await freePort()
  const httpsPort = await freePort()
  const httpPort = await freePort()

  // The registry:2 image's /etc/docker/registry/config.yml, with the seed's htpasswd auth
  // (REGISTRY_AUTH=htpasswd in the compose file) and the address moved to loopback.
  const registryConfig = path.join(dir, 'config.yml')
  await writeFile(registryConfig, registry2ImageConfig({ port: registryPort, storage: s3 ?? { root: storageRoot }, htpasswd: pki.htpasswd }))
  const nginxConf = path.join(nginxDir, 'nginx.conf')
  await writeFile(
    nginxConf,
    `# Debian's /etc/nginx/nginx.conf main/http settings, paths moved into the bench dir.
${nginxMainDirectives(nginxDir)}
http {
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log ${nginxDir}/access.log;
    gzip on;
${nginxTempPaths(nginxDir)}

    # The seed's two server blocks.
    server {
        listen 127.0.0.1:${httpPort};
        server_name localhost;
        return 301 https://$server_name$request_uri;
    }
    server {
        listen 127.0.0.1:${httpsPort} ssl http2;
        server_name localhost;
${seedTlsDirectives(pki)}
        client_max_body_size 5G;

        location / {
            proxy_pass http://127.0.0.1:${registryPort};
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }
    }
}
`,
  )
  const registryLog = path.join(dir, 'registry.log')
  const nginxLog = path.join(nginxDir, 'stderr.log')
  const logs = [registryLog, nginxLog, path.join(nginxDir, 'error.log')]
  // AWS_CA_BUNDLE (set on some machines) makes registry 2.8's aws-sdk-go panic at start.
  const registryEnv = { ...process.env }
  delete registryEnv['AWS_CA_BUNDLE']
  const registry = spawnLogged('/usr/bin/docker-registry', ['serve', registryConfig], registryLog, registryEnv)
  const nginx = spawnLogged('/usr/sbin/nginx', ['-p', nginxDir, '-c', nginxConf, '-g', 'daemon off;'], nginxLog)
  const host = `127.0.0.1:${httpsPort}`
  const stack: Stack = {
    name: 'seed',
    host,
    storageRoot,
    logs,
    ...(s3 !== undefined ? { s3 } : {}),
    pids: () => [registry.pid, nginx.pid].filter((pid): pid is number => pid !== undefined),
    stop: async () => {
      await Promise.all([stopChild(nginx), stopChild(registry)])
    },
  }
  try {
    await waitReady(host, pki.caCert, [registry, nginx], logs)
  } catch (error) {
    await stack.stop()
    throw error
  }
  return stack
}

export interface BerthOptions {
  /** Command and leading args that run Berth, e.g. [node, dist/berth.cjs]. */
  command: string[]
  /** Extra node flags (e.g. --cpu-prof) are passed through NODE_OPTIONS-free argv by the caller. */
  repoRoot: string
  s3?: S3Target
  /** Run with `--metrics-listen` on loopback, scraped every `scrapeMs` like a Prometheus would (name `berth-metrics`). */
  metrics?: { scrapeMs: number }
  /** More `berth serve` arguments (e.g. --webhook). */
  args?: readonly string[]
  /** More environment variables (e.g. NODE_EXTRA_CA_CERTS for an upstream's private CA). */
  env?: Readonly<Record<string, string>>
}

export async function startBerth(dir: string, pki: BenchPki, options: BerthOptions): Promise<Stack> {
  const datadir = path.join(dir, 'datadir')
  await mkdir(datadir, { recursive: true })
  const accessFile = path.join(dir, 'access.yml')
  await writeFile(accessFile, benchAccessRules(pki.user))
  const httpsPort = await freePort()
  const httpPort = await freePort()
  const [command, ...leading] = options.command
  const args = [
    ...leading,
    'serve',
    '--domain',
    BERTH_DOMAIN,
    '--tls-cert',
    pki.serverChain,
    '--tls-key',
    pki.serverKey,
    '--https-port',
    String(httpsPort),
    '--http-port',
    String(httpPort),
    '--host',
    '127.0.0.1',
    '--datadir',
    datadir,
    '--htpasswd',
    pki.htpasswd,
    '--access',
    accessFile,
  ]
  const metricsPort = options.metrics === undefined ? undefined : await freePort()
  if (metricsPort !== undefined) args.push('--metrics-listen', `127.0.0.1:${metricsPort}`)
  const s3 = options.s3
  if (s3 !== undefined) {
    args.push('--storage', 's3', '--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-region', s3.region, '--s3-prefix', s3.prefix)
  }
  args.push(...(options.args ?? []))
  const env = {
    ...process.env,
    ...(s3 === undefined ? {} : { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey }),
    ...options.env,
  }
  const log = path.join(dir, 'berth.log')
  const child = spawnLogged(command!, args, log, env)
  const host = `127.0.0.1:${httpsPort}`
  const scraper = scrapeMetrics(metricsPort, options.metrics?.scrapeMs)
  const stack: Stack = {
    name: metricsPort === undefined ? 'berth' : 'berth-metrics',
    host,
    storageRoot: path.join(datadir, 'data'),
    logs: [log],
    tokenService: BERTH_DOMAIN,
    ...(s3 !== undefined ? { s3 } : {}),
    pids: () => (child.pid === undefined ? [] : [child.pid]),
    stop: () => {
      scraper.stop()
      return stopChild(child, 10_000) // --cpu-prof writes its profile on a clean exit
    },
  }
  try {
    await waitReady(host, pki.caCert, [child], [log])
  } catch (error) {
    await stack.stop()
    throw error
  }
  return stack
}

/** GETs `/metrics` every `everyMs` (the whole text read, as Prometheus does) until stopped; a no-op without a port. */
function scrapeMetrics(port: number | undefined, everyMs = 5000): { stop(): void } {
  if (port === undefined) return { stop() {} }
  const timer = setInterval(() => {
    fetch(`http://127.0.0.1:${port}/metrics`)
      .then(response => response.text())
      .catch(() => undefined)
  }, everyMs)
  timer.unref()
  return { stop: () => clearInterval(timer) }
}

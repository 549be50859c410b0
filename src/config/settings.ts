/**
 * Every setting of `berth serve`, declared once. The table drives the command-line flags and
 * their `--help` text, the `BERTH_*` environment variables and the config-file keys, so the three
 * can never disagree. Precedence (see load.ts): flag > environment > config file > default.
 */
import type { LogFormat, LogLevel } from '../log.js'
import type { QuotaSetting } from '../storage/quota.js'
import type { RetentionPolicy } from '../storage/retention.js'
import {
  ACME_DIRECTORIES,
  parseAcmeDirectory,
  parseBoolean,
  parseCount,
  parseDomains,
  parseDuration,
  parseEmail,
  parseEnum,
  parseHost,
  parsePort,
  parseSize,
  parseString,
  parseUpstream,
  InvalidValue,
  isLoopbackHost,
  parseListenAddress,
  parseMirrorPrefix,
  parseMirrors,
  parseWebhooks,
  parseRetention,
  parseQuotas,
  type MirrorSetting,
  type WebhookSetting,
} from './values.js'

/**
 * The defaults, in one place: config.ts applies them, the table below shows them in `--help`, and
 * no other layer has its own (each layer takes the resolved values as options).
 */
export const DEFAULTS = {
  port: 5000,
  /** Local mode's listen address: this machine only (HTTPS mode listens on every interface). */
  localHost: '127.0.0.1',
  datadir: './datadir',
  httpsPort: 443,
  httpPort: 80,
  realm: 'Berth Registry',
  /** The seed's `client_max_body_size 5G`. */
  maxBody: 5 * 1024 ** 3,
  acmeDirectory: ACME_DIRECTORIES.letsencrypt,
  certs: './certs',
  logLevel: 'info' as LogLevel,
  logFormat: 'text' as LogFormat,
  /** The seed recipe's proxy_read_timeout 900. */
  idleTimeout: 15 * 60_000,
  /** Time a client has to send complete request headers (nginx's client_header_timeout). */
  headersTimeout: 60_000,
  /** Time a client has to complete its TLS handshake (Node's own default is 120 s). */
  handshakeTimeout: 10_000,
  /** Open connections in total when the process's file limit is unknown (else edge/connection-limits.ts derives it from that limit). */
  maxConnections: 1024,
  /** Open connections per client address (IPv6: per /64); never more than a quarter of the total unless set. */
  maxConnectionsPerAddress: 512,
  /** How often /readyz's background checks (storage write, upstream) run, and how long one may take (distribution's storagedriver health interval). */
  readinessInterval: 10_000,
  readinessTimeout: 5_000,
  /** registry:2's `uploadpurging` age and interval. */
  uploadMaxAge: 168 * 3600_000,
  uploadPurgeInterval: 24 * 3600_000,
  /** How long a mirrored tag is served without asking its upstream again (zot's manifestCheckInterval). */
  mirrorTagTtl: 5 * 60_000,
  /** With --mirror-max-size: the cache is measured and trimmed this often, and this long after new content was fetched (mirror/cache-eviction.ts). */
  mirrorEvictionInterval: 10 * 60_000,
  mirrorEvictionDelay: 10_000,
  /** An image fetched or pulled this recently is never evicted (a client may be pulling its layers now). */
  mirrorEvictionMinAge: 60_000,
  /** Webhooks (events/webhooks.ts): one attempt may take this long; then it counts as failed. */
  webhookTimeout: 10_000,
  /** Tries of one delivery before it becomes a dead letter, and the longest it is retried (from when it was queued). */
  webhookMaxAttempts: 10,
  webhookMaxAge: 24 * 3600_000,
  /** The wait after the first failure; each next one is 4 times longer (with ±20% jitter), at most webhookRetryMax. */
  webhookRetryMin: 1_000,
  webhookRetryMax: 3600_000,
  /** Deliveries held in memory per endpoint; more wait in the store and are read back as the queue drains. */
  webhookQueued: 1_000,
  /** Events per endpoint waiting to be written to the store; beyond it new ones are dropped (and counted). */
  webhookUnwritten: 10_000,
  /** A serving process's claim on its pending deliveries is rewritten this often and lapses after webhookLease (then another process adopts them). */
  webhookHeartbeat: 10_000,
  webhookLease: 60_000,
  /** Retention policies (storage/retention.ts) are applied this often while serving, when there are any. */
  retentionInterval: 24 * 3600_000,
} as const

/** Upload purging of `berth serve` and `berth gc`, from the defaults above. */
export const UPLOAD_PURGING = { maxAgeMs: DEFAULTS.uploadMaxAge, intervalMs: DEFAULTS.uploadPurgeInterval } as const

/** Settings as parsed, before defaults and cross-checks (see config.ts for the resolved Config). */
export interface SettingValues {
  local: boolean
  port: number
  host: string
  datadir: string
  domain: string[]
  tlsCert: string
  tlsKey: string
  selfSigned: boolean
  httpsPort: number
  httpPort: number
  htpasswd: string
  allowAnonymous: boolean
  realm: string
  maxBody: number
  clientCa: string
  upstream: string
  acme: boolean
  acmeEmail: string
  acmeAgreeTos: boolean
  acmeDirectory: string
  acmeEabKid: string
  acmeEabHmac: string
  certs: string
  logLevel: LogLevel
  logFormat: LogFormat
  storage: 'filesystem' | 's3'
  s3Endpoint: string
  s3Bucket: string
  s3Region: string
  s3Prefix: string
  s3Redirect: boolean
  gcInterval: number
  internalListen: string
  metricsListen: string
  metricsRepositoryLabels: boolean
  idleTimeout: number
  maxConnections: number
  maxConnectionsPerAddress: number
  uploadMaxAge: number
  allowSparseManifests: boolean
  access: string
  readOnly: boolean
  auditLog: string
  mirror: MirrorSetting[]
  mirrorDefault: string
  mirrorTagTtl: number
  mirrorMaxSize: number
  webhook: WebhookSetting[]
  webhookSecret: string
  retention: RetentionPolicy[]
  retentionInterval: number
  quota: QuotaSetting[]
}

export type SettingKey = keyof SettingValues

export interface Setting<K extends SettingKey = SettingKey> {
  /** camelCase key, as in a config file (kebab-case `https-port` is accepted there too). */
  readonly key: K
  /** Long flag without dashes: `https-port` → `--https-port`. */
  readonly flag: string
  /** `<port>` etc.; absent for switches. */
  readonly argument?: string
  readonly env: string
  readonly description: string
  /** Shown in help as "(default: ...)"; the real default is applied in config.ts. */
  readonly defaultText?: string
  /** Paths are resolved against the working directory (flags, env) or the config file's folder. */
  readonly isPath?: boolean
  /** A repeatable flag whose values add up (`--domain a --domain b`). */
  readonly isList?: boolean
  /** Secret: never echoed in errors or logs. */
  readonly isSecret?: boolean
  /** Another name the config file accepts for it (a list reads better in the plural: `webhooks:`). */
  readonly fileKey?: string
  readonly parse: (raw: unknown) => SettingValues[K]
}

function setting<K extends SettingKey>(definition: Setting<K>): Setting<K> {
  return definition
}

const pathValue = (raw: unknown): string => parseString(raw)

/** The internal door: loopback `host:port`, a bare port (127.0.0.1), or `unix:/path`. */
const parseListen = (raw: unknown): string => {
  const { host } = parseListenAddress(raw)
  if (host !== undefined && !isLoopbackHost(host)) throw new InvalidValue('a loopback address:port (127.0.0.1:5001, [::1]:5001) or unix:/path')
  return parseString(raw)
}

/** The metrics listener: `host:port`, `[v6]:port`, or a bare port (127.0.0.1); any interface may be named. */
const parseMetricsListen = (raw: unknown): string => {
  const { host } = parseListenAddress(raw)
  if (host === undefined) throw new InvalidValue('address:port (127.0.0.1:9100, 0.0.0.0:9100, [::1]:9100) or a port')
  return parseString(raw)
}

/** An S3 endpoint: http(s) URL, no credentials in it (they come from the AWS variables). */
const parseEndpoint = (raw: unknown): string => parseUpstream(raw)

export const SETTINGS = [
  setting({
    key: 'local',
    flag: 'local',
    env: 'BERTH_LOCAL',
    parse: parseBoolean,
    description: "plain HTTP on --port (5000) for use on this machine, like the seed's local registry; basic auth only if the htpasswd file exists",
  }),
  setting({
    key: 'port',
    flag: 'port',
    argument: '<port>',
    env: 'BERTH_PORT',
    parse: parsePort,
    defaultText: '5000',
    description: 'HTTP port in --local mode',
  }),
  setting({
    key: 'host',
    flag: 'host',
    argument: '<address>',
    env: 'BERTH_HOST',
    parse: parseHost,
    defaultText: '127.0.0.1 with --local, else all interfaces',
    description:
      'address to listen on; 0.0.0.0 or :: opens --local to other machines (then anyone who reaches it can push, pull and delete unless the htpasswd file has a user)',
  }),
  setting({
    key: 'datadir',
    flag: 'datadir',
    argument: '<dir>',
    env: 'BERTH_DATADIR',
    parse: pathValue,
    isPath: true,
    defaultText: './datadir',
    description: 'where images are stored (<dir>/data, registry:2 layout) and the htpasswd file lives',
  }),
  setting({
    key: 'domain',
    flag: 'domain',
    argument: '<name>',
    env: 'BERTH_DOMAIN',
    parse: parseDomains,
    isList: true,
    description: 'name clients use (docker login <name>); repeat for more names, comma-separated in the variable',
  }),
  setting({
    key: 'tlsCert',
    flag: 'tls-cert',
    argument: '<file>',
    env: 'BERTH_TLS_CERT',
    parse: pathValue,
    isPath: true,
    description: 'certificate chain in PEM, leaf first (certbot: fullchain.pem); reloaded when it changes',
  }),
  setting({
    key: 'tlsKey',
    flag: 'tls-key',
    argument: '<file>',
    env: 'BERTH_TLS_KEY',
    parse: pathValue,
    isPath: true,
    description: 'private key in PEM for --tls-cert (certbot: privkey.pem)',
  }),
  setting({
    key: 'selfSigned',
    flag: 'self-signed',
    env: 'BERTH_SELF_SIGNED',
    parse: parseBoolean,
    description: 'make a local CA and a server certificate under --certs (once) and serve it',
  }),
  setting({
    key: 'httpsPort',
    flag: 'https-port',
    argument: '<port>',
    env: 'BERTH_HTTPS_PORT',
    parse: parsePort,
    defaultText: '443',
    description: 'HTTPS port',
  }),
  setting({
    key: 'httpPort',
    flag: 'http-port',
    argument: '<port>',
    env: 'BERTH_HTTP_PORT',
    parse: parsePort,
    defaultText: '80',
    description: 'HTTP port: redirects to HTTPS and answers ACME challenges',
  }),
  setting({
    key: 'htpasswd',
    flag: 'htpasswd',
    argument: '<file>',
    env: 'BERTH_HTPASSWD',
    parse: pathValue,
    isPath: true,
    defaultText: '<datadir>/htpasswd',
    description: 'users for basic auth (bcrypt; berth htpasswd add, or Apache htpasswd -B)',
  }),
  setting({
    key: 'access',
    flag: 'access',
    argument: '<file>',
    env: 'BERTH_ACCESS',
    parse: pathValue,
    isPath: true,
    defaultText: '<datadir>/access.yml when it exists',
    description:
      'per-repository access rules (YAML: which users, groups, anonymous or authenticated callers may pull, push, overwrite or delete which repositories); reloaded when it changes; check with berth access check',
  }),
  setting({
    key: 'auditLog',
    flag: 'audit-log',
    argument: '<file>',
    env: 'BERTH_AUDIT_LOG',
    parse: pathValue,
    isPath: true,
    description:
      'append one JSON line per change (push, tag move, delete, garbage collection, login, access-file reload) with the user and address to this file (0600); SIGHUP reopens it after rotation',
  }),
  setting({
    key: 'readOnly',
    flag: 'read-only',
    env: 'BERTH_READ_ONLY',
    parse: parseBoolean,
    description: 'refuse every write (push, tag, delete) while pulls go on, e.g. during a backup or a migration',
  }),
  setting({
    key: 'allowAnonymous',
    flag: 'allow-anonymous',
    env: 'BERTH_ALLOW_ANONYMOUS',
    parse: parseBoolean,
    description:
      'serve HTTPS without a login (anyone who reaches the port can push, pull and delete); without it HTTPS mode refuses to start until the htpasswd file has a user. Also for --upstream when that registry checks logins itself',
  }),
  setting({
    key: 'realm',
    flag: 'realm',
    argument: '<text>',
    env: 'BERTH_REALM',
    parse: parseString,
    defaultText: 'Berth Registry',
    description: 'basic-auth realm shown to clients',
  }),
  setting({
    key: 'maxBody',
    flag: 'max-body',
    argument: '<size>',
    env: 'BERTH_MAX_BODY',
    parse: parseSize,
    defaultText: '5g',
    description: 'largest request body (one layer upload), like nginx client_max_body_size',
  }),
  setting({
    key: 'clientCa',
    flag: 'client-ca',
    argument: '<file>',
    env: 'BERTH_CLIENT_CA',
    parse: pathValue,
    isPath: true,
    description: 'require client certificates signed by this CA (nginx ssl_verify_client on)',
  }),
  setting({
    key: 'upstream',
    flag: 'upstream',
    argument: '<url>',
    env: 'BERTH_UPSTREAM',
    parse: parseUpstream,
    description: 'front another registry (e.g. http://127.0.0.1:5000, a registry:2) instead of the built-in one',
  }),
  setting({
    key: 'acme',
    flag: 'acme',
    env: 'BERTH_ACME',
    parse: parseBoolean,
    description: "get and renew certificates automatically (Let's Encrypt, HTTP-01 on --http-port)",
  }),
  setting({
    key: 'acmeEmail',
    flag: 'acme-email',
    argument: '<email>',
    env: 'BERTH_ACME_EMAIL',
    parse: parseEmail,
    description: 'contact address for the ACME account (expiry notices)',
  }),
  setting({
    key: 'acmeAgreeTos',
    flag: 'acme-agree-tos',
    env: 'BERTH_ACME_AGREE_TOS',
    parse: parseBoolean,
    description: "agree to the ACME CA's terms of service (required with --acme)",
  }),
  setting({
    key: 'acmeDirectory',
    flag: 'acme-directory',
    argument: '<name|url>',
    env: 'BERTH_ACME_DIRECTORY',
    parse: parseAcmeDirectory,
    defaultText: 'letsencrypt',
    description: 'letsencrypt, letsencrypt-staging, zerossl, or any RFC 8555 directory URL',
  }),
  setting({
    key: 'acmeEabKid',
    flag: 'acme-eab-kid',
    argument: '<kid>',
    env: 'BERTH_ACME_EAB_KID',
    parse: parseString,
    description: 'external account binding key id (ZeroSSL and other CAs that need one)',
  }),
  setting({
    key: 'acmeEabHmac',
    flag: 'acme-eab-hmac',
    argument: '<key>',
    env: 'BERTH_ACME_EAB_HMAC',
    parse: parseString,
    isSecret: true,
    description: 'external account binding HMAC key (base64url)',
  }),
  setting({
    key: 'certs',
    flag: 'certs',
    argument: '<dir>',
    env: 'BERTH_CERTS',
    parse: pathValue,
    isPath: true,
    defaultText: './certs',
    description: 'where ACME and self-signed certificates and keys are kept',
  }),
  setting({
    key: 'storage',
    flag: 'storage',
    argument: '<kind>',
    env: 'BERTH_STORAGE',
    parse: parseEnum(['filesystem', 's3'] as const),
    defaultText: 'filesystem',
    description: 'filesystem (<datadir>/data) or s3 (a bucket, shared by any number of instances behind a load balancer)',
  }),
  setting({
    key: 's3Endpoint',
    flag: 's3-endpoint',
    argument: '<url>',
    env: 'BERTH_S3_ENDPOINT',
    parse: parseEndpoint,
    defaultText: 'AWS',
    description:
      'S3-compatible service (Ceph RGW, MinIO, R2 ...), e.g. http://10.0.0.5:7480; uses path-style addressing. Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS credential chain',
  }),
  setting({
    key: 's3Bucket',
    flag: 's3-bucket',
    argument: '<name>',
    env: 'BERTH_S3_BUCKET',
    parse: parseString,
    description: 'bucket for images with --storage s3 (must exist)',
  }),
  setting({
    key: 's3Region',
    flag: 's3-region',
    argument: '<region>',
    env: 'BERTH_S3_REGION',
    parse: parseString,
    defaultText: 'AWS_REGION, else us-east-1',
    description: 'S3 region',
  }),
  setting({
    key: 's3Prefix',
    flag: 's3-prefix',
    argument: '<path>',
    env: 'BERTH_S3_PREFIX',
    parse: parseString,
    defaultText: 'bucket root',
    description: "folder inside the bucket, like registry:2's s3 rootdirectory (its data there is served as is)",
  }),
  setting({
    key: 'gcInterval',
    flag: 'gc-interval',
    argument: '<duration>',
    env: 'BERTH_GC_INTERVAL',
    parse: parseDuration,
    defaultText: 'off',
    description: 'collect garbage this often while serving (e.g. 24h): frees blobs no manifest references, untouched for 1 h; same as berth gc',
  }),
  setting({
    key: 'internalListen',
    flag: 'internal-listen',
    argument: '<address>',
    env: 'BERTH_INTERNAL_LISTEN',
    parse: parseListen,
    defaultText: 'off',
    description:
      'also serve the registry API without TLS on this loopback address or unix socket (127.0.0.1:5001, unix:/run/berth.sock), with the same logins, for tools and sidecars on this machine',
  }),
  setting({
    key: 'metricsListen',
    flag: 'metrics-listen',
    argument: '<address:port>',
    env: 'BERTH_METRICS_LISTEN',
    parse: parseMetricsListen,
    defaultText: 'off',
    description:
      'serve Prometheus metrics at GET /metrics on this separate plain-HTTP listener (127.0.0.1:9100; a bare port means loopback), never on the registry ports',
  }),
  setting({
    key: 'metricsRepositoryLabels',
    flag: 'metrics-repository-labels',
    env: 'BERTH_METRICS_REPOSITORY_LABELS',
    parse: parseBoolean,
    description: 'label manifest push and pull counts with the repository name (the first 1000 names; the rest count as "_other")',
  }),
  setting({
    key: 'idleTimeout',
    flag: 'idle-timeout',
    argument: '<duration>',
    env: 'BERTH_IDLE_TIMEOUT',
    parse: parseDuration,
    defaultText: '15m',
    description: 'close a connection when nothing moves on it this long (no limit on a whole upload)',
  }),
  setting({
    key: 'maxConnections',
    flag: 'max-connections',
    argument: '<count>',
    env: 'BERTH_MAX_CONNECTIONS',
    parse: parseCount,
    defaultText: 'from the open-file limit',
    description: 'open connections in total; beyond it new ones are answered 503 (keep it below the open-file limit, ulimit -n)',
  }),
  setting({
    key: 'maxConnectionsPerAddress',
    flag: 'max-connections-per-address',
    argument: '<count>',
    env: 'BERTH_MAX_CONNECTIONS_PER_ADDRESS',
    parse: parseCount,
    defaultText: '512, at most a quarter of the total',
    description: 'open connections from one client address (IPv6: one /64); beyond it new ones are closed at once',
  }),
  setting({
    key: 'uploadMaxAge',
    flag: 'upload-max-age',
    argument: '<duration>',
    env: 'BERTH_UPLOAD_MAX_AGE',
    parse: parseDuration,
    defaultText: '168h',
    description: 'abandoned uploads older than this are deleted (checked daily), as registry:2 uploadpurging',
  }),
  setting({
    key: 'allowSparseManifests',
    flag: 'allow-sparse-manifests',
    env: 'BERTH_ALLOW_SPARSE_MANIFESTS',
    parse: parseBoolean,
    description:
      'accept image indexes whose child manifests, and manifests whose layers, are not stored here (partial copies of multi-platform images); pulls of the missing parts get 404',
  }),
  setting({
    key: 's3Redirect',
    flag: 's3-redirect',
    env: 'BERTH_S3_REDIRECT',
    parse: parseBoolean,
    description: 'answer layer downloads with a redirect to a presigned S3 URL (clients must reach --s3-endpoint)',
  }),
  setting({
    key: 'mirror',
    flag: 'mirror',
    argument: '<prefix=url>',
    env: 'BERTH_MIRROR',
    parse: parseMirrors,
    isList: true,
    isSecret: true,
    description:
      'pull-through cache: names under <prefix>/ (or asked with ?ns=<prefix>) are fetched from that registry once, stored and served; repeat for more upstreams, comma-separated in the variable; credentials per upstream in the config file',
  }),
  setting({
    key: 'mirrorDefault',
    flag: 'mirror-default',
    argument: '<prefix>',
    env: 'BERTH_MIRROR_DEFAULT',
    parse: parseMirrorPrefix,
    description: "pulls of names that are no repository here and carry no mirror prefix go to this mirror (for docker's registry-mirrors)",
  }),
  setting({
    key: 'mirrorTagTtl',
    flag: 'mirror-tag-ttl',
    argument: '<duration>',
    env: 'BERTH_MIRROR_TAG_TTL',
    parse: parseDuration,
    defaultText: '5m',
    description: 'serve a mirrored tag this long before asking the upstream (one HEAD) whether it moved; digests are never re-checked',
  }),
  setting({
    key: 'mirrorMaxSize',
    flag: 'mirror-max-size',
    argument: '<size>',
    env: 'BERTH_MIRROR_MAX_SIZE',
    parse: parseSize,
    defaultText: 'no limit',
    description:
      'cap the bytes the pull-through cache holds (pushed images never count): in the background, the least recently pulled cached images are evicted, then garbage collection frees their blobs (berth du shows cached and pushed bytes)',
  }),
  setting({
    key: 'webhook',
    flag: 'webhook',
    argument: '<url>',
    env: 'BERTH_WEBHOOK',
    parse: parseWebhooks,
    isList: true,
    isSecret: true,
    fileKey: 'webhooks',
    description:
      "POST each push and delete (distribution's notification envelope, after the change is stored) to this URL; queued in the store and retried until a 2xx, listed by berth events; repeat for more endpoints, comma-separated in the variable; per endpoint events (push, delete, pull, gc), repositories, headers, timeout, secret and format (cloudevents) under webhooks: in the config file",
  }),
  setting({
    key: 'webhookSecret',
    flag: 'webhook-secret',
    argument: '<secret>',
    env: 'BERTH_WEBHOOK_SECRET',
    parse: parseString,
    isSecret: true,
    description:
      'sign webhook bodies: X-Berth-Signature-256: sha256=<hex HMAC-SHA256 of the body with this secret> (for endpoints without a secret of their own)',
  }),
  setting({
    key: 'retention',
    flag: 'retention',
    argument: '<policy>',
    env: 'BERTH_RETENTION',
    parse: parseRetention,
    isList: true,
    description:
      'retention policies under retention: in the config file, each {repositories: [globs], keep: {last, tags, pushedWithin, pulledWithin}, untagged: {olderThan}}; a tag is kept when any keep rule keeps it, the first policy matching a repository applies, repositories no policy matches keep everything (JSON here; see berth retention --dry-run)',
  }),
  setting({
    key: 'retentionInterval',
    flag: 'retention-interval',
    argument: '<duration>',
    env: 'BERTH_RETENTION_INTERVAL',
    parse: parseDuration,
    defaultText: '24h when retention policies are set',
    description:
      'apply the retention policies this often while serving, then collect garbage if anything was removed ("off": only berth retention applies them)',
  }),
  setting({
    key: 'quota',
    flag: 'quota',
    argument: '<quota>',
    env: 'BERTH_QUOTA',
    parse: parseQuotas,
    isList: true,
    fileKey: 'quotas',
    description:
      'size limits under quotas: in the config file, each {repositories: [globs], maxSize: 10g}; the first quota matching a repository applies, and a push that would take it past maxSize is refused with DENIED (JSON here; berth du shows usage against quota)',
  }),
  setting({
    key: 'logLevel',
    flag: 'log-level',
    argument: '<level>',
    env: 'BERTH_LOG_LEVEL',
    parse: parseEnum(['debug', 'info', 'warn', 'error'] as const),
    defaultText: 'info',
    description: 'debug, info, warn or error',
  }),
  setting({
    key: 'logFormat',
    flag: 'log-format',
    argument: '<format>',
    env: 'BERTH_LOG_FORMAT',
    parse: parseEnum(['text', 'json'] as const),
    defaultText: 'text',
    description: 'text (time LEVEL message key=value) or json (one object per line: time, level, msg and the fields)',
  }),
] as const satisfies readonly Setting[]

export function findSetting(name: string): Setting | undefined {
  const camel = name.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase())
  return (SETTINGS as readonly Setting[]).find(item => item.key === camel || item.flag === name || item.fileKey === name)
}

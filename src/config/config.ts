/**
 * The resolved configuration of `berth serve`: defaults applied, paths absolute, and the
 * combinations checked (a certificate source for HTTPS, ACME's required companions, ...).
 * Only `cli/` and `server.ts` read it; each layer gets a plain options object built from it.
 */
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { addUserCommand } from '../container.js'
import type { LogFormat, LogLevel } from '../log.js'
import { ConfigError } from './errors.js'
import type { SettingValues } from './settings.js'
import type { MirrorSetting, WebhookSetting } from './values.js'
import { DEFAULTS } from './settings.js'
import type { StorageChoice } from '../storage/open-storage.js'
import type { QuotaSetting } from '../storage/quota.js'
import type { RetentionPolicy } from '../storage/retention.js'

export { DEFAULTS }
export type { StorageChoice }

/** Where the HTTPS certificate comes from. */
export type CertificateChoice =
  | { readonly kind: 'none' }
  | { readonly kind: 'files'; readonly cert: string; readonly key: string }
  | { readonly kind: 'self-signed' }
  | {
      readonly kind: 'acme'
      readonly directory: string
      readonly email: string | undefined
      readonly agreeTos: true
      readonly eab: { readonly kid: string; readonly hmacKey: string } | undefined
    }

export interface Config {
  /** `local`: plain HTTP on `port`. `https`: HTTPS on `httpsPort` plus redirects/challenges on `httpPort`. */
  readonly mode: 'local' | 'https'
  /** Listen address; undefined = all interfaces (dual-stack). Local mode defaults to loopback (`DEFAULTS.localHost`). */
  readonly host: string | undefined
  readonly port: number
  readonly httpsPort: number
  readonly httpPort: number
  readonly datadir: string
  /** Filesystem (`<datadir>/data`) or an S3 bucket. */
  readonly storage: StorageChoice
  /** Names clients use; may be empty in local mode and with --self-signed / --tls-cert. */
  readonly domains: readonly string[]
  readonly certificate: CertificateChoice
  readonly certs: string
  readonly htpasswd: string
  /** True when the user named the htpasswd file (then it must exist); false for the default path. */
  readonly isHtpasswdExplicit: boolean
  /**
   * HTTPS mode may run without users (--allow-anonymous). Without it, HTTPS mode (engine or
   * --upstream) refuses to start unless the htpasswd file has at least one user: see
   * `noUsersMessage`. Local mode never needs it.
   */
  readonly allowAnonymous: boolean
  /**
   * The access-rules file (access/rules.ts): the one named (it must exist), else `<datadir>/access.yml`
   * when that exists; undefined: no rules, every user who logs in may do everything.
   */
  readonly accessFile: string | undefined
  /** The audit trail (`--audit-log`), JSON lines; undefined: none. */
  readonly auditLog: string | undefined
  /** Refuse every write; pulls go on. */
  readonly readOnly: boolean
  readonly realm: string
  readonly maxBody: number
  readonly clientCa: string | undefined
  /** Another registry to front; when set no engine is started. */
  readonly upstream: string | undefined
  readonly logLevel: LogLevel
  readonly logFormat: LogFormat
  /** Garbage collection inside serve every this many ms (storage/gc-schedule.ts); undefined: off. */
  readonly gcIntervalMs: number | undefined
  /** The internal door (`host:port` on loopback, or `unix:/path`); undefined: off. */
  readonly internalListen: string | undefined
  /** The Prometheus metrics listener (`host:port`); undefined: off. */
  readonly metricsListen: string | undefined
  /** Label manifest push/pull counts by repository (bounded). */
  readonly metricsRepositoryLabels: boolean
  /** Socket inactivity limit of every connection. */
  readonly idleTimeoutMs: number
  /** Open connections in total; undefined: derived from the open-file limit at start (edge/connection-limits.ts). */
  readonly maxConnections: number | undefined
  /** Open connections per client address; undefined: DEFAULTS.maxConnectionsPerAddress, at most a quarter of the total. */
  readonly maxConnectionsPerAddress: number | undefined
  /** Abandoned uploads older than this are purged. */
  readonly uploadMaxAgeMs: number
  /** Accept manifests whose layers or index children are not stored (registry app `allowSparseManifests`). */
  readonly allowSparseManifests: boolean
  /** Pull-through mirrors: a path prefix each, and the registry it fetches from. */
  readonly mirrors: readonly MirrorSetting[]
  /** The mirror prefix for names that are no local repository and carry no prefix; undefined: off. */
  readonly mirrorDefault: string | undefined
  /** A mirrored tag is re-checked with the upstream at most this often. */
  readonly mirrorTagTtlMs: number
  /** The pull-through cache's cap in bytes (least recently pulled images evicted first); undefined: no cap. */
  readonly mirrorMaxSizeBytes: number | undefined
  /** Webhook endpoints, each with its secret (its own, else `--webhook-secret`) and its events (default push and delete). */
  readonly webhooks: readonly WebhookSetting[]
  /** Retention policies (storage/retention.ts), in file order: the first one matching a repository applies. */
  readonly retention: readonly RetentionPolicy[]
  /** Retention inside serve every this many ms; undefined: off (no policies, or `--retention-interval off`). */
  readonly retentionIntervalMs: number | undefined
  /** Repository quotas (storage/quota.ts), in file order: the first one matching a repository applies. */
  readonly quotas: readonly QuotaSetting[]
  readonly configFile: string | undefined
  /** Settings given that have no effect in this mode; printed as warnings at start. */
  readonly warnings: readonly string[]
}

export interface BuildOptions {
  /** `berth doctor` checks a half-made setup too: HTTPS without a certificate source is not an error there. */
  readonly allowNoCertificate?: boolean
}

/** A parsed value together with the folder its relative paths are resolved against. */
export type ResolvedValues = Partial<SettingValues>

/**
 * Applies defaults and checks the combinations. `values` holds what flags, environment and
 * file gave, already merged by precedence, with paths already absolute.
 */
export function buildConfig(values: ResolvedValues, cwd: string, configFile?: string, options: BuildOptions = {}): Config {
  const warnings: string[] = []
  const mode = values.local ? 'local' : 'https'
  const datadir = values.datadir ?? resolve(cwd, DEFAULTS.datadir)
  const domains = values.domain ?? []

  if (values.tlsCert !== undefined && values.tlsKey === undefined) {
    throw new ConfigError('--tls-cert needs --tls-key: give the private key file of the certificate too')
  }
  if (values.tlsKey !== undefined && values.tlsCert === undefined) {
    throw new ConfigError('--tls-key needs --tls-cert: give the certificate chain file (certbot: fullchain.pem) too')
  }
  const sources = [
    values.tlsCert !== undefined ? '--tls-cert' : undefined,
    values.selfSigned ? '--self-signed' : undefined,
    values.acme ? '--acme' : undefined,
  ].filter((item): item is string => item !== undefined)

  if (mode === 'local' && sources.length > 0) {
    throw new ConfigError(`--local serves plain HTTP and cannot be combined with ${sources.join(', ')}; drop --local to serve HTTPS`)
  }
  if (mode === 'local' && values.clientCa !== undefined) {
    throw new ConfigError('--client-ca needs HTTPS and cannot be combined with --local')
  }
  if (sources.length > 1) {
    throw new ConfigError(`choose one certificate source, not ${sources.join(' and ')}`)
  }
  if (mode === 'https' && sources.length === 0 && !options.allowNoCertificate) {
    throw new ConfigError(
      'HTTPS mode needs a certificate: --tls-cert/--tls-key, --acme (with --domain), or --self-signed; or use --local for plain HTTP on :5000',
    )
  }

  let certificate: CertificateChoice = { kind: 'none' }
  if (values.tlsCert !== undefined && values.tlsKey !== undefined) {
    certificate = { kind: 'files', cert: values.tlsCert, key: values.tlsKey }
  } else if (values.selfSigned) {
    certificate = { kind: 'self-signed' }
  } else if (values.acme) {
    if (domains.length === 0) {
      throw new ConfigError('--acme needs at least one --domain (the name that resolves to this server)')
    }
    const wildcard = domains.find(name => name.startsWith('*.'))
    if (wildcard !== undefined) {
      throw new ConfigError(`--domain ${wildcard}: wildcard names cannot be validated over HTTP-01; name each host instead`)
    }
    if (!values.acmeAgreeTos) {
      throw new ConfigError("--acme needs --acme-agree-tos (BERTH_ACME_AGREE_TOS=true): you must accept the CA's terms of service")
    }
    if ((values.acmeEabKid === undefined) !== (values.acmeEabHmac === undefined)) {
      throw new ConfigError('--acme-eab-kid and --acme-eab-hmac go together: give both (from your CA account page) or neither')
    }
    certificate = {
      kind: 'acme',
      directory: values.acmeDirectory ?? DEFAULTS.acmeDirectory,
      email: values.acmeEmail,
      agreeTos: true,
      eab: values.acmeEabKid !== undefined && values.acmeEabHmac !== undefined ? { kid: values.acmeEabKid, hmacKey: values.acmeEabHmac } : undefined,
    }
  }
  if (certificate.kind !== 'acme') {
    const acmeOnly = (['acmeEmail', 'acmeAgreeTos', 'acmeDirectory', 'acmeEabKid', 'acmeEabHmac'] as const).filter(
      key => values[key] !== undefined && values[key] !== false,
    )
    if (acmeOnly.length > 0) warnings.push(`ACME settings are ignored without --acme (${acmeOnly.map(toFlag).join(', ')})`)
  }

  let storage: StorageChoice = { kind: 'filesystem' }
  const s3Only = (['s3Endpoint', 's3Bucket', 's3Region', 's3Prefix', 's3Redirect'] as const).filter(key => values[key] !== undefined && values[key] !== false)
  if (values.storage === 's3') {
    if (values.upstream !== undefined)
      throw new ConfigError('--storage s3 and --upstream exclude each other: with --upstream another registry stores the images')
    if (values.s3Bucket === undefined)
      throw new ConfigError('--storage s3 needs --s3-bucket (an existing bucket; credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)')
    storage = {
      kind: 's3',
      endpoint: values.s3Endpoint,
      bucket: values.s3Bucket,
      region: values.s3Region,
      prefix: (values.s3Prefix ?? '').replace(/^\/+|\/+$/g, ''),
      redirect: values.s3Redirect === true,
    }
  } else if (s3Only.length > 0) {
    warnings.push(`${s3Only.map(toFlag).join(', ')} ignored without --storage s3`)
  }

  const httpsPort = values.httpsPort ?? DEFAULTS.httpsPort
  const httpPort = values.httpPort ?? DEFAULTS.httpPort
  if (mode === 'https' && httpsPort === httpPort) {
    throw new ConfigError(`--https-port and --http-port are both ${httpsPort}; they must differ`)
  }
  if (mode === 'local') {
    const httpsOnly = (['httpsPort', 'httpPort'] as const).filter(key => values[key] !== undefined)
    if (httpsOnly.length > 0) warnings.push(`${httpsOnly.map(toFlag).join(', ')} ignored in --local mode (it listens on --port)`)
  } else if (values.port !== undefined) {
    warnings.push('--port is the --local port; HTTPS listens on --https-port and --http-port')
  }
  if (mode === 'local' && values.allowAnonymous) {
    warnings.push('--allow-anonymous has no effect in --local mode: it needs no login unless the htpasswd file exists')
  }

  const mirrors = values.mirror ?? []
  if (mirrors.length > 0 && values.upstream !== undefined) {
    throw new ConfigError('--mirror and --upstream exclude each other: with --upstream another registry stores the images')
  }
  if (values.mirrorDefault !== undefined && !mirrors.some(mirror => mirror.prefix === values.mirrorDefault)) {
    const known = mirrors.map(mirror => mirror.prefix).join(', ')
    throw new ConfigError(`--mirror-default ${values.mirrorDefault} names no --mirror prefix${known === '' ? ' (none given)' : ` (given: ${known})`}`)
  }
  if (mirrors.length === 0 && values.mirrorTagTtl !== undefined) warnings.push('--mirror-tag-ttl ignored without --mirror')
  if (mirrors.length === 0 && values.mirrorMaxSize !== undefined) warnings.push('--mirror-max-size ignored without --mirror')

  const webhooks = (values.webhook ?? []).map(hook => ({
    ...hook,
    secret: hook.secret ?? values.webhookSecret,
    events: hook.events ?? (['push', 'delete'] as const),
  }))
  if (webhooks.length > 0 && values.upstream !== undefined)
    warnings.push('--webhook ignored with --upstream (the registry behind it stores the images and would send the events)')
  if (webhooks.length === 0 && values.webhookSecret !== undefined) warnings.push('--webhook-secret ignored without --webhook')

  const retention = values.retention ?? []
  const retentionInterval = values.retentionInterval ?? DEFAULTS.retentionInterval
  if (retention.length > 0 && values.upstream !== undefined)
    warnings.push('retention policies ignored with --upstream (the registry behind it stores the images)')
  if (retention.length === 0 && values.retentionInterval !== undefined && values.retentionInterval > 0)
    warnings.push('--retention-interval ignored without retention policies')
  const quotas = values.quota ?? []
  if (quotas.length > 0 && values.upstream !== undefined) warnings.push('quotas ignored with --upstream (the registry behind it stores the images)')

  return {
    mode,
    host: values.host ?? (mode === 'local' ? DEFAULTS.localHost : undefined),
    port: values.port ?? DEFAULTS.port,
    httpsPort,
    httpPort,
    datadir,
    storage,
    domains,
    certificate,
    certs: values.certs ?? resolve(cwd, DEFAULTS.certs),
    htpasswd: values.htpasswd ?? resolve(datadir, 'htpasswd'),
    isHtpasswdExplicit: values.htpasswd !== undefined,
    allowAnonymous: values.allowAnonymous === true,
    accessFile: values.access ?? defaultAccessFile(datadir),
    auditLog: values.auditLog,
    readOnly: values.readOnly === true,
    realm: values.realm ?? DEFAULTS.realm,
    maxBody: values.maxBody ?? DEFAULTS.maxBody,
    clientCa: values.clientCa,
    upstream: values.upstream,
    logLevel: values.logLevel ?? DEFAULTS.logLevel,
    logFormat: values.logFormat ?? DEFAULTS.logFormat,
    gcIntervalMs: values.gcInterval !== undefined && values.gcInterval > 0 ? values.gcInterval : undefined,
    internalListen: values.internalListen,
    metricsListen: values.metricsListen,
    metricsRepositoryLabels: values.metricsRepositoryLabels === true,
    idleTimeoutMs: values.idleTimeout ?? DEFAULTS.idleTimeout,
    maxConnections: values.maxConnections,
    maxConnectionsPerAddress: values.maxConnectionsPerAddress,
    uploadMaxAgeMs: values.uploadMaxAge ?? DEFAULTS.uploadMaxAge,
    allowSparseManifests: values.allowSparseManifests === true,
    mirrors,
    mirrorDefault: values.mirrorDefault,
    mirrorTagTtlMs: values.mirrorTagTtl ?? DEFAULTS.mirrorTagTtl,
    mirrorMaxSizeBytes: mirrors.length > 0 ? values.mirrorMaxSize : undefined,
    webhooks: values.upstream !== undefined ? [] : webhooks,
    retention: values.upstream !== undefined ? [] : retention,
    quotas: values.upstream !== undefined ? [] : quotas,
    retentionIntervalMs: retention.length > 0 && values.upstream === undefined && retentionInterval > 0 ? retentionInterval : undefined,
    configFile,
    warnings,
  }
}

/**
 * The one line `berth serve` stops with (exit 2) and `berth doctor` reports when HTTPS mode has no
 * user to log in with and --allow-anonymous was not given. Safe by default: an HTTPS registry is
 * reachable from the network, so it never starts open to anonymous pushes by accident.
 * `reason` says what is missing: no file, or a file without users.
 */
export function noUsersMessage(config: Pick<Config, 'htpasswd' | 'upstream'>, reason: 'no-file' | 'empty'): string {
  const what = reason === 'no-file' ? 'no users' : `no users in ${config.htpasswd}`
  const when = config.upstream !== undefined ? `, e.g. when ${config.upstream} checks logins itself` : ''
  return `${what}: HTTPS mode needs a login. Add one with: ${addUserCommand(config.htpasswd)} (or pass --allow-anonymous to serve without one${when})`
}

/** `<datadir>/access.yml` when it exists: rules apply as soon as the file is there, and nobody's setup changes without one. */
function defaultAccessFile(datadir: string): string | undefined {
  const file = resolve(datadir, 'access.yml')
  return existsSync(file) ? file : undefined
}

function toFlag(key: string): string {
  return '--' + key.replace(/[A-Z]/g, letter => '-' + letter.toLowerCase())
}

/**
 * The edge: Berth's front door. Listeners (doors) only accept connections; every request goes through
 * one chain of steps around one innermost handler — the engine in this process, or the streaming
 * proxy with `--upstream`:
 *
 *   access log → connection limit → [HSTS] → health probes → [client certificate] → Host check
 *     → body limit → [web UI: `/`, `/ui/…`, `/api/ui/…`, its own session login, never a challenge]
 *     → authentication (+ token realm and authorization with access rules)
 *     → read-only → [steps of the composition root, e.g. drain]
 *     → 100-continue + response turn → engine | proxy                       ([…]: HTTPS door only)
 *
 * Doors: HTTPS (TLS) with port 80 beside it (ACME HTTP-01, health probes and redirects, its own
 * short chain: [metrics] → access log → connection limit → health probes → redirect), or
 * plain HTTP in local mode; and optionally the internal door (loopback or a unix socket), which
 * serves the same chain minus the TLS-only steps.
 */
import http from 'node:http'
import { readFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { compose, type Door, type Handler, type Step } from '../http/exchange.js'
import { CachedCheck, type ReadinessCheck } from '../health.js'
import type { Logger } from '../log.js'
import { HtpasswdAccessController } from './auth/basic-auth.js'
import type { LoginThrottleOptions } from './auth/throttle.js'
import { ConnectionLimits, type ConnectionLimitOptions } from './connection-limits.js'
import { closeServer, listen, serve, serverOptions, urlOf, type ListenAddress, type ListenerTimeouts, type Server } from './listeners.js'
import { UpstreamProxy } from './proxy.js'
import { createRedirectHandler, port80Route } from './redirect.js'
import { accessLog } from './steps/access-log.js'
import { auditLogin, authenticate } from './steps/authenticate.js'
import { NO_EVENTS, type EventSink } from '../events/events.js'
import {
  authenticateCaller,
  authorizeRequest,
  refuseWrites,
  TOKEN_PATH,
  type AccessControlOptions,
  type DenialReason,
  type RulePolicy,
} from './steps/access-control.js'
import type { ResourceAccess } from '../access/scope.js'
import { tokenEndpoint } from '../access/token-endpoint.js'
import type { TokenService } from '../access/token-service.js'
import { bodyLimit } from './steps/body-limit.js'
import { clientCertificate } from './steps/client-cert.js'
import { healthProbes } from './steps/health.js'
import { hostCheck } from './steps/host-check.js'
import { securityHeaders } from './steps/security-headers.js'
import { continueAndTakeTurn } from './steps/turn.js'
import { webUi } from '../web/web-ui.js'
import type { Sessions } from '../web/sessions.js'
import type { UiApiOptions } from '../web/ui-api.js'
import type { CertificateProvider, ChallengeResponder } from './tls/certificate-source.js'
import { createHttpsServer } from './tls/https-server.js'

export interface EdgeOptions extends ListenerTimeouts {
  /** Bind address of the public doors; default every interface. */
  host?: string
  /** 'local': plain HTTP on localPort. 'https': TLS on httpsPort plus redirect/ACME on httpPort. */
  mode: 'local' | 'https'
  /** Ports (0 = random, for tests): localPort in local mode, httpPort and httpsPort in https mode. */
  localPort?: number
  httpPort?: number
  httpsPort?: number
  /** The HTTPS port clients use, for redirect Locations, when it differs from httpsPort (a container mapping 443→8443). */
  publicHttpsPort?: number
  /** Configured names: port 80 redirects only to these (no open redirect). */
  domains: readonly string[]
  /** Required in https mode; started once port 80 listens (so ACME HTTP-01 can be answered), stopped on close. */
  certificate?: CertificateProvider
  /** ACME HTTP-01 answers served on port 80. */
  challenges?: ChallengeResponder
  /** PEM bundle of CAs client certificates must chain to (nginx `ssl_verify_client on`); HTTPS door only. */
  clientCaPath?: string
  /** When set and the file exists → basic auth; the file is watched (created later → auth switches on). */
  htpasswdPath?: string
  /** What a missing or empty htpasswd file means: 'open' (no login needed) or 'closed' (every request 401). Default 'open'. */
  whenNoUsers?: 'open' | 'closed'
  /** Basic auth realm. */
  realm: string
  /** Per-request body limit in bytes. */
  maxBodyBytes: number
  /** Failed-login throttle per address. */
  loginThrottle?: LoginThrottleOptions
  /** Open connections over all doors, in total and per client address; unlimited when undefined. */
  connectionLimits?: ConnectionLimitOptions
  /** The innermost handler: Berth's engine, called in this process. */
  engine?: Handler
  /** Without `engine`: the registry the proxy forwards to (`--upstream`). */
  upstream?: { url: string }
  /** The internal door: a loopback port or a unix socket. Off when undefined. */
  internalListen?: ListenAddress
  /**
   * Access rules (`--access`) with Berth's token service: Bearer challenges, the token realm at
   * `/token`, and per-repository decisions. Undefined: the htpasswd users may do everything (Basic).
   */
  access?: {
    /** The rules in force now (reloaded on change). */
    readonly policy: () => RulePolicy
    /** Issues and checks the tokens of the realm at `/token`. */
    readonly tokens: TokenService
    /** The repository a request really reads (mirrors); see AccessControlOptions.repositoryOf. */
    readonly repositoryOf?: (name: string, query: URLSearchParams) => Promise<string>
    /** Mirror prefixes: a token may grant pull on `library/x` when the rules allow it on `<prefix>/library/x`. */
    readonly mirrorPrefixes?: readonly string[]
  }
  /** The audit trail: logins (successes, failures, throttling). */
  events?: EventSink
  /** `--read-only`, asked per request (it can be switched without a restart). */
  readOnly?: () => boolean
  /** Steps of the composition root, run after authentication, just before the innermost handler. */
  innerSteps?: readonly Step[]
  /**
   * The web UI and its JSON API (src/web) on every registry door, before authentication (it logs
   * users in with its own session cookie and never answers with a challenge). Off when undefined.
   */
  ui?: Omit<UiApiOptions, 'readOnly' | 'events'> & { readonly sessions: Sessions }
  /**
   * What `/readyz` checks besides what the edge knows itself: in HTTPS mode, a certificate loaded
   * and not expired; with `upstream` and this option, that the upstream answers (`GET /v2/` below
   * 500, probed every `probeIntervalMs`).
   */
  readiness?: { checks?: readonly ReadinessCheck[]; probeIntervalMs: number; probeTimeoutMs: number }
  /** Metrics of every door (port 80 counts its requests as `redirect` or `acme_challenge`); off when undefined. */
  metrics?: EdgeMetrics
  logger: Logger
}

/** What the edge reports to metrics (implemented by metrics/registry-metrics.ts). */
export interface EdgeMetrics {
  /** The outermost step of each registry door's chain: records every exchange when its response closes. */
  readonly step: Step
  /** The same for another door, whose requests `routeOf` names (port 80: `port80Route`). */
  stepFor(routeOf: (path: string) => string | undefined): Step
  /** Credentials were given and were wrong (401). */
  loginFailed(): void
  /** An address that failed too often was refused (429). */
  loginThrottled(): void
  /** The access rules refused a request. */
  accessDenied(reason: DenialReason): void
}

export interface EdgeUrls {
  local?: string
  http?: string
  https?: string
  internal?: string
}

export interface Edge {
  /** Bound addresses (port 0 resolved), e.g. `https://127.0.0.1:8443`; a wildcard bind shows as localhost. */
  readonly urls: EdgeUrls
  /** Stops listening, ends connections, stops watchers and the certificate provider. Idempotent. */
  close(): Promise<void>
}

export async function startEdge(options: EdgeOptions): Promise<Edge> {
  const { logger } = options
  if (options.mode === 'https' && !options.certificate) throw new TypeError('startEdge: https mode needs a certificate provider')
  const cleanups: (() => Promise<void> | void)[] = []
  const cleanup = async (): Promise<void> => {
    for (const step of cleanups.splice(0).reverse()) {
      await Promise.resolve()
        .then(step)
        .catch((error: unknown) => logger.warn('edge shutdown step failed', { error: (error as Error).message }))
    }
  }
  try {
    const clientCa = options.mode === 'https' && options.clientCaPath ? await readFile(options.clientCaPath, 'utf8') : undefined
    const limits = options.connectionLimits ? new ConnectionLimits(options.connectionLimits) : undefined
    const { chainFor, health } = await buildChains(options, clientCa, limits, cleanups)
    const open = async (server: Server, door: Door, port: number | string, host: string | undefined, scheme = 'http'): Promise<string> => {
      limits?.attach(server)
      serve(server, door, chainFor(door), options, logger)
      cleanups.push(() => closeServer(server))
      await listen(server, port, host)
      return urlOf(scheme, server)
    }
    const urls: EdgeUrls = {}
    if (options.mode === 'local') {
      urls.local = await open(http.createServer(serverOptions(options)), 'local', required(options.localPort, 'localPort'), options.host)
    } else {
      await startHttpsDoors(options, clientCa, limits, health, open, urls, cleanups)
    }
    if (options.internalListen !== undefined) {
      const { port, host } = options.internalListen
      urls.internal = await open(http.createServer(serverOptions(options)), 'internal', port, host)
    }
    logger.info('listening', {
      ...urls,
      mode: options.mode,
      to: options.engine ? 'in-process engine' : options.upstream?.url,
      domains: options.domains.join(',') || undefined,
    })
    let closing: Promise<void> | undefined
    return { urls, close: () => (closing ??= cleanup()) }
  } catch (error) {
    await cleanup()
    throw error
  }
}

/** The request chain of each door, around one innermost handler. */
async function buildChains(
  options: EdgeOptions,
  clientCa: string | undefined,
  limits: ConnectionLimits | undefined,
  cleanups: (() => Promise<void> | void)[],
): Promise<{ chainFor: (door: Door) => Handler; health: Step }> {
  const { logger } = options
  const secure = options.mode === 'https'
  const auth = options.htpasswdPath
    ? await HtpasswdAccessController.open(options.htpasswdPath, {
        logger,
        whenMissing: options.whenNoUsers ?? 'open',
        ...(options.loginThrottle ? { throttle: options.loginThrottle } : {}),
      })
    : undefined
  if (auth) cleanups.push(() => auth.close())
  else if (secure) logger.warn('no htpasswd file configured: the registry accepts requests without credentials')
  const checks = [...(options.readiness?.checks ?? [])]
  if (secure) checks.push(certificateCheck(options.certificate as CertificateProvider))
  let inner = options.engine
  if (inner === undefined) {
    if (options.upstream === undefined) throw new TypeError('startEdge: needs an engine or an upstream')
    const proxy = new UpstreamProxy({ url: options.upstream.url, logger, idleTimeoutMs: options.idleTimeoutMs })
    cleanups.push(() => proxy.close())
    inner = proxy.handle
    if (options.readiness !== undefined) checks.push(upstreamCheck(proxy, options.readiness, logger, cleanups))
  }
  const log = accessLog(logger)
  const first = [...(options.metrics ? [options.metrics.step] : []), log, ...(limits ? [limits.step] : [])]
  const health = healthProbes(checks)
  const common: Step[] = [
    hostCheck,
    bodyLimit(options.maxBodyBytes),
    ...(options.ui ? [uiStep(options, options.ui, auth)] : []),
    ...accessSteps(options, auth),
    ...(options.readOnly ? [refuseWrites(options.readOnly)] : []),
    ...(options.innerSteps ?? []),
    continueAndTakeTurn,
  ]
  const registry = compose([...first, health, ...common], inner)
  const tls = compose([...first, securityHeaders, health, ...(clientCa !== undefined ? [clientCertificate(logger)] : []), ...common], inner)
  return { chainFor: door => (door === 'https' ? tls : registry), health }
}

/** The web UI step: the same users, rules, events and read-only switch as the registry. */
function uiStep(options: EdgeOptions, ui: NonNullable<EdgeOptions['ui']>, auth: HtpasswdAccessController | undefined): Step {
  return webUi({
    ...ui,
    auth,
    policy: options.access?.policy,
    refusals: options.metrics,
    events: options.events ?? NO_EVENTS,
    readOnly: options.readOnly ?? (() => false),
    logger: options.logger,
  })
}

/** Who may do what: the token realm and the access rules, or (without rules) htpasswd Basic for everything. */
function accessSteps(options: EdgeOptions, auth: HtpasswdAccessController | undefined): Step[] {
  const access = options.access
  if (access === undefined) return auth ? [authenticate(auth, options.realm, options.metrics, options.events)] : []
  const refusals = options.metrics
  const control: AccessControlOptions = {
    htpasswd: auth,
    policy: access.policy,
    tokens: access.tokens,
    service: access.tokens.service,
    fallbackHost: options.domains[0] ?? 'localhost',
    ...(refusals ? { refusals } : {}),
    ...(access.repositoryOf ? { repositoryOf: access.repositoryOf } : {}),
    ...(options.events ? { events: options.events } : {}),
  }
  const endpoint = tokenEndpoint({
    tokens: access.tokens,
    realm: options.realm,
    logger: options.logger,
    login: async exchange => {
      const header = exchange.req.headers.authorization
      if (header === undefined || auth === undefined) return { kind: 'anonymous' }
      const decision = await auth.check(header, exchange.remote)
      auditLogin(options.events, exchange, decision)
      if (decision.kind === 'ok') return { kind: 'ok', user: decision.user }
      if (decision.kind === 'throttled') {
        refusals?.loginThrottled()
        return { kind: 'throttled', retryAfterSeconds: decision.retryAfterSeconds }
      }
      if (decision.kind === 'challenge') {
        if (decision.user !== undefined) refusals?.loginFailed()
        return { kind: 'refused' }
      }
      // No users configured (local mode without a file): credentials prove nothing; anonymous.
      return { kind: 'anonymous' }
    },
    grant: (subject, requested) => grantedActions(access.policy(), subject, requested, access.mirrorPrefixes ?? []),
  })
  const tokenRealm: Step = (exchange, next) => {
    if (exchange.path !== TOKEN_PATH) return next(exchange)
    exchange.route = 'token'
    return endpoint(exchange)
  }
  return [tokenRealm, authenticateCaller(control), authorizeRequest(control)]
}

/**
 * What the rules let `subject` do on a requested resource: the repository actions, and the catalog
 * to anyone (it lists what the caller may pull). A token names the repository as the client asked
 * for it, which for a mirror reached through `?ns=` or the default mirror is not the stored name, so
 * pull is also granted when the rules allow it under a mirror prefix: the authorization step asks
 * the rules again about the stored name on every request, so this never lets more through.
 */
function grantedActions(policy: RulePolicy, subject: string | undefined, requested: Readonly<ResourceAccess>, mirrorPrefixes: readonly string[]): string[] {
  if (requested.type === 'registry') return requested.name === 'catalog' ? ['*'] : []
  if (requested.type !== 'repository') return []
  return TOKEN_ACTIONS.filter(
    action =>
      policy.allows(subject, requested.name, action) ||
      (action === 'pull' && mirrorPrefixes.some(prefix => policy.allows(subject, `${prefix}/${requested.name}`, action))),
  )
}

/** The scope actions of distribution's token protocol; `overwrite` rides on `push`. */
const TOKEN_ACTIONS = ['pull', 'push', 'delete'] as const

/** `--upstream` readiness: the upstream answers, probed in the background (stopped with the edge). */
function upstreamCheck(
  proxy: UpstreamProxy,
  timing: { probeIntervalMs: number; probeTimeoutMs: number },
  logger: Logger,
  cleanups: (() => Promise<void> | void)[],
): ReadinessCheck {
  const check = new CachedCheck({
    name: 'upstream',
    probe: () => proxy.probe(timing.probeTimeoutMs),
    failureText: 'not answering',
    intervalMs: timing.probeIntervalMs,
    timeoutMs: timing.probeTimeoutMs,
    logger,
  })
  void check.start()
  cleanups.push(() => check.stop())
  return check
}

/** HTTPS readiness: a certificate is loaded and has not expired. */
function certificateCheck(provider: CertificateProvider): ReadinessCheck {
  return {
    name: 'certificate',
    failure() {
      const certificate = provider.current()
      if (certificate === undefined) return 'none loaded'
      return certificate.notAfter.getTime() <= Date.now() ? 'expired' : undefined
    },
  }
}

type OpenDoor = (server: Server, door: Door, port: number | string, host: string | undefined, scheme?: string) => Promise<string>

/** Port 80 (ACME answers and redirects) first, so the certificate provider can order; then HTTPS. */
async function startHttpsDoors(
  options: EdgeOptions,
  clientCa: string | undefined,
  limits: ConnectionLimits | undefined,
  health: Step,
  open: OpenDoor,
  urls: EdgeUrls,
  cleanups: (() => Promise<void> | void)[],
): Promise<void> {
  const provider = options.certificate as CertificateProvider
  let httpsServer: Server | undefined
  const redirect = createRedirectHandler({
    domains: options.domains,
    challenges: options.challenges,
    httpsPort: () => options.publicHttpsPort ?? (httpsServer?.address() as AddressInfo | null)?.port ?? required(options.httpsPort, 'httpsPort'),
  })
  const port80 = http.createServer(serverOptions(options))
  limits?.attach(port80)
  const first = [...(options.metrics ? [options.metrics.stepFor(port80Route)] : []), accessLog(options.logger), ...(limits ? [limits.step] : [])]
  serve(port80, 'http', compose([...first, health], redirect), options, options.logger)
  cleanups.push(() => closeServer(port80))
  await listen(port80, required(options.httpPort, 'httpPort'), options.host)
  urls.http = urlOf('http', port80)

  await provider.start()
  cleanups.push(() => provider.stop())
  httpsServer = createHttpsServer({ certificate: provider, ...(clientCa !== undefined ? { clientCa } : {}), timeouts: options, logger: options.logger })
  urls.https = await open(httpsServer, 'https', required(options.httpsPort, 'httpsPort'), options.host, 'https')
}

function required(port: number | undefined, name: string): number {
  if (port === undefined) throw new TypeError(`startEdge: ${name} is required in this mode`)
  return port
}

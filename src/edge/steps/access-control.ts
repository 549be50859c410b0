/**
 * Authentication and authorization under access rules (`--access`), two steps of the chain:
 *
 *   authenticateCaller  who is asking: a Bearer token of Berth's token service, htpasswd Basic
 *                       credentials (curl, scripts), or nobody (anonymous). Sets `exchange.user`
 *                       and `exchange.access` (what this caller may do, per repository).
 *   authorizeRequest    what the request needs (registry/access-needs.ts) against `exchange.access`.
 *
 * A caller may do an action on a repository when the rules in force allow it, and, with a token,
 * when the token also grants it (a token's `push` covers `overwrite`). Refusals follow the token
 * protocol so that every client knows what to do next:
 *   - anonymous, a token that lacks the scope, or a bad token: 401 UNAUTHORIZED with
 *     `WWW-Authenticate: Bearer realm="<scheme>://<host>/token",service="…",scope="repository:<name>:<actions>"`,
 *     so docker, podman, skopeo and containerd fetch a token (anonymously, or with the login they hold);
 *   - a known user the rules refuse: 403 DENIED (docker prints "denied: requested access to the
 *     resource is denied" and does not retry);
 *   - wrong Basic credentials: 401 with the challenge; an address that failed too often: 429.
 */
import type { AccessAction, Exchange, Permissions, Step } from '../../http/exchange.js'
import { RegistryError } from '../../http/errors.js'
import { sendError } from '../../http/respond.js'
import { accessNeeded, isWrite } from '../../registry/access-needs.js'
import { parseBasicAuthorization, type HtpasswdAccessController } from '../auth/basic-auth.js'
import type { EventSink } from '../../events/events.js'
import { auditLogin, type LoginRefusals } from './authenticate.js'

/** The access rules in force (access/rules.ts AccessPolicy). */
export interface RulePolicy {
  allows(user: string | undefined, repository: string, action: AccessAction): boolean
}

/** A token's grant, as in its `access` claim. */
export interface TokenGrant {
  readonly type: string
  readonly name: string
  readonly actions: readonly string[]
}

export type TokenCheck = { readonly ok: true; readonly subject: string | undefined; readonly access: readonly TokenGrant[] } | { readonly ok: false }

export interface TokenVerifier {
  verify(token: string): TokenCheck | Promise<TokenCheck>
}

/** Why the access rules refused a request (a metric label). */
export type DenialReason = 'anonymous' | 'scope' | 'invalid_token' | 'denied'

/** The path of the token realm on every registry door. */
export const TOKEN_PATH = '/token'

export interface AccessControlOptions {
  /** The htpasswd users; undefined when no file is configured (every caller is anonymous). */
  readonly htpasswd: HtpasswdAccessController | undefined
  /** The rules in force now; read once per request. */
  readonly policy: () => RulePolicy
  readonly tokens: TokenVerifier
  /** The token service's name (`service=` and the tokens' audience). */
  readonly service: string
  /** The host named in the realm when the request's Host header is missing or unusable. */
  readonly fallbackHost: string
  readonly refusals?: LoginRefusals & { accessDenied(reason: DenialReason): void }
  /**
   * The repository a request for `name` really reads (a mirror's prefixed name for containerd's
   * `?ns=` or the default mirror); the rules are asked about it, while a token's grant names the
   * repository as the client asked for it. Default: `name`.
   */
  readonly repositoryOf?: (name: string, query: URLSearchParams) => Promise<string>
  /** The audit trail: logins. */
  readonly events?: EventSink
}

/** What one caller may do: the rules, narrowed by the token's grants when the caller came with a token. */
export class CallerPermissions implements Permissions {
  constructor(
    readonly user: string | undefined,
    private readonly policy: RulePolicy,
    /** Granted actions by repository, when the caller came with a token. */
    private readonly granted: ReadonlyMap<string, ReadonlySet<string>> | undefined,
    /** The token grants `registry:catalog:*`. */
    private readonly catalog = false,
  ) {}

  get hasToken(): boolean {
    return this.granted !== undefined
  }

  /** A token may list the catalog when it grants `registry:catalog:*`; without a token anyone may (filtered). */
  get mayListCatalog(): boolean {
    return this.granted === undefined || this.catalog
  }

  /** The catalog names what the rules let this caller pull (a catalog grant is not narrowed per repository). */
  listable(repository: string): boolean {
    return this.rulesAllow(repository, 'pull')
  }

  may(repository: string, action: AccessAction): boolean {
    return this.rulesAllow(repository, action) && this.tokenAllows(repository, action)
  }

  rulesAllow(repository: string, action: AccessAction): boolean {
    return this.policy.allows(this.user, repository, action)
  }

  tokenAllows(repository: string, action: AccessAction): boolean {
    if (this.granted === undefined) return true
    const actions = this.granted.get(repository)
    return actions !== undefined && (actions.has('*') || actions.has(action === 'overwrite' ? 'push' : action))
  }
}

export function authenticateCaller(options: AccessControlOptions): Step {
  return async (exchange, next) => {
    const header = exchange.req.headers.authorization
    const policy = options.policy()
    if (header === undefined) {
      exchange.access = new CallerPermissions(undefined, policy, undefined)
      return next(exchange)
    }
    const bearer = /^\s*bearer\s+(\S+)\s*$/i.exec(header)?.[1]
    if (bearer !== undefined) {
      const check = await options.tokens.verify(bearer)
      // A token of a user since removed from the htpasswd file is void at once, not at its expiry.
      if (!check.ok || (check.subject !== undefined && options.htpasswd?.hasUser(check.subject) !== true)) {
        options.refusals?.accessDenied('invalid_token')
        return challenge(exchange, options, undefined, 'invalid_token')
      }
      exchange.user = check.subject
      exchange.credential = 'bearer'
      const grants = grantsOf(check.access)
      exchange.access = new CallerPermissions(check.subject, policy, grants.byRepository, grants.catalog)
      return next(exchange)
    }
    if (parseBasicAuthorization(header) === undefined) return challenge(exchange, options)
    const decision = options.htpasswd === undefined ? ({ kind: 'open' } as const) : await options.htpasswd.check(header, exchange.remote)
    auditLogin(options.events, exchange, decision)
    if (decision.kind === 'challenge') {
      if (decision.user !== undefined) options.refusals?.loginFailed()
      return challenge(exchange, options)
    }
    if (decision.kind === 'throttled') {
      options.refusals?.loginThrottled()
      const headers = { 'Retry-After': String(decision.retryAfterSeconds) }
      return sendError(exchange, new RegistryError('TOOMANYREQUESTS', null, { message: 'too many failed logins from this address; retry later', headers }))
    }
    // 'open': no users are configured, so credentials prove nothing and the caller is anonymous.
    const user = decision.kind === 'ok' ? decision.user : undefined
    exchange.user = user
    if (user !== undefined) exchange.credential = 'basic'
    exchange.access = new CallerPermissions(user, policy, undefined)
    return next(exchange)
  }
}

export function authorizeRequest(options: AccessControlOptions): Step {
  return async (exchange, next) => {
    const caller = exchange.access
    if (!(caller instanceof CallerPermissions)) throw new Error('authorizeRequest runs after authenticateCaller')
    const need = accessNeeded(exchange.req.method ?? 'GET', exchange.path)
    if (need.kind === 'caller' && caller.user === undefined && !caller.hasToken) return challenge(exchange, options)
    // distribution's rule: a token lists the catalog only with that grant; clients then ask for it.
    if (need.kind === 'catalog' && !caller.mayListCatalog) {
      options.refusals?.accessDenied('scope')
      return challenge(exchange, options, 'registry:catalog:*', 'insufficient_scope')
    }
    if (need.kind === 'invalid-name') {
      return sendError(exchange, new RegistryError('NAME_INVALID', { name: need.repository.slice(0, 300) }))
    }
    if (need.kind !== 'repository') return next(exchange)
    const { repository, actions } = need
    const stored = options.repositoryOf === undefined ? repository : await options.repositoryOf(repository, exchange.query)
    for (const action of actions) {
      const rulesAllow = caller.rulesAllow(stored, action)
      if (rulesAllow && caller.tokenAllows(repository, action)) continue
      if (caller.user !== undefined && !rulesAllow) {
        options.refusals?.accessDenied('denied')
        return sendError(
          exchange,
          new RegistryError('DENIED', { repository: stored.slice(0, 300), action }, { message: `requested access to the resource is denied (${action})` }),
        )
      }
      const scope = `repository:${repository}:${actions.join(',')}`
      options.refusals?.accessDenied(caller.hasToken ? 'scope' : 'anonymous')
      return challenge(exchange, options, scope, caller.hasToken ? 'insufficient_scope' : undefined)
    }
    return next(exchange)
  }
}

/** `--read-only`: every request that could change what is stored gets 405 UNSUPPORTED, as distribution's read-only mode. */
export function refuseWrites(readOnly: () => boolean): Step {
  return async (exchange, next) => {
    if (!readOnly() || !isWrite(exchange.req.method ?? 'GET', exchange.path)) return next(exchange)
    sendError(
      exchange,
      new RegistryError('UNSUPPORTED', null, {
        message: 'the registry is read-only for maintenance: pulls work, pushes and deletes are refused until its operator switches it back',
      }),
    )
  }
}

/** The realm URL on the host the client asked for (the Host check ran before), or the configured one. */
export function realmOf(exchange: Exchange, fallbackHost: string): string {
  const host = exchange.req.headers.host
  const usable = host !== undefined && /^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/.test(host)
  return `${exchange.door === 'https' ? 'https' : 'http'}://${usable ? host : fallbackHost}${TOKEN_PATH}`
}

function challenge(exchange: Exchange, options: AccessControlOptions, scope?: string, error?: 'invalid_token' | 'insufficient_scope'): Promise<void> {
  let value = `Bearer realm="${realmOf(exchange, options.fallbackHost)}",service="${options.service}"`
  // A repository name holds no quote or backslash (its grammar), so the scope needs no escaping.
  if (scope !== undefined) value += `,scope="${scope}"`
  if (error !== undefined) value += `,error="${error}"`
  sendError(exchange, new RegistryError('UNAUTHORIZED', null, { headers: { 'WWW-Authenticate': value } }))
  return Promise.resolve()
}

interface Grants {
  readonly byRepository: ReadonlyMap<string, ReadonlySet<string>>
  readonly catalog: boolean
}

/** Per token claim (the token service hands out one cached claim per token): each is read once, not per request. */
const grantsOfClaim = new WeakMap<readonly TokenGrant[], Grants>()

function grantsOf(access: readonly TokenGrant[]): Grants {
  let grants = grantsOfClaim.get(access)
  if (grants !== undefined) return grants
  const byRepository = new Map<string, Set<string>>()
  for (const grant of access) {
    if (grant.type !== 'repository') continue
    const actions = byRepository.get(grant.name) ?? new Set<string>()
    for (const action of grant.actions) actions.add(action)
    byRepository.set(grant.name, actions)
  }
  const catalog = access.some(grant => grant.type === 'registry' && grant.name === 'catalog' && grant.actions.includes('*'))
  grantsOfClaim.set(access, (grants = { byRepository, catalog }))
  return grants
}

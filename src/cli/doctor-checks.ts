/**
 * The checks of `berth doctor`: what breaks deployments, each with what to do about it.
 * Every check returns results instead of throwing, so one broken thing never hides the others.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { lookup } from 'node:dns/promises'
import { constants as fsConstants } from 'node:fs'
import { access, readFile, readdir, stat, statfs } from 'node:fs/promises'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { createServer, type AddressInfo } from 'node:net'
import { networkInterfaces } from 'node:os'
import { dirname, join } from 'node:path'
import { loadAccessFile } from '../access/access-file.js'
import { AccessFileError } from '../access/rules.js'
import { noUsersMessage, type Config } from '../config/config.js'
import { addUserCommand, ownershipFix } from '../container.js'
import { HtpasswdError, parseHtpasswd } from '../edge/auth/htpasswd.js'
import { daysLeft, inspectClientCa } from '../edge/tls/certificate-checks.js'
import { renewalDecision } from '../edge/tls/renewal.js'

export type Status = 'ok' | 'warn' | 'fail'

export interface CheckResult {
  readonly status: Status
  readonly subject: string
  readonly message: string
  /** What to do; absent when all is well. */
  readonly fix?: string
}

/** The ports `serve` would bind, with the flag that sets each. */
export function portsOf(config: Config): { port: number; label: string }[] {
  if (config.mode === 'local') return [{ port: config.port, label: 'local HTTP (--port)' }]
  return [
    { port: config.httpsPort, label: 'HTTPS (--https-port)' },
    { port: config.httpPort, label: 'HTTP redirect/ACME (--http-port)' },
  ]
}

/** Tries to bind the port as `serve` would; a busy port is fine if a registry answers on it. */
export async function checkPort(port: number, label: string, host: string | undefined): Promise<CheckResult> {
  const subject = `port ${port}, ${label}`
  const failure = await tryBind(port, host)
  if (failure === undefined) return { status: 'ok', subject, message: 'free, and this user may bind it' }
  if (failure === 'EACCES') {
    return {
      status: 'fail',
      subject,
      message: 'this user may not bind ports below 1024',
      fix: `sudo setcap cap_net_bind_service=+ep ${process.execPath} (or run as root, or use docker compose, which maps 80/443)`,
    }
  }
  if (failure === 'EADDRINUSE') {
    const registry = await answersAsRegistry(port)
    if (registry) return { status: 'ok', subject, message: 'in use by a running registry (it answers /v2/): probably Berth itself' }
    return {
      status: 'fail',
      subject,
      message: 'in use by another program',
      fix: `find it with: sudo ss -ltnp 'sport = :${port}' — stop it (e.g. nginx) or pick another port`,
    }
  }
  return { status: 'fail', subject, message: `cannot bind: ${failure}` }
}

function tryBind(port: number, host: string | undefined): Promise<string | undefined> {
  return new Promise(resolve => {
    const server = createServer()
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message))
    server.listen({ port, host: host ?? '::', exclusive: true }, () => {
      const bound = (server.address() as AddressInfo).port
      server.close(() => resolve(bound === port ? undefined : 'bound a different port'))
    })
  })
}

/** Whether a registry (Berth or another) answers on the port, over HTTP or HTTPS (any certificate). */
async function answersAsRegistry(port: number): Promise<boolean> {
  return (await probeRegistry(httpRequest as typeof httpsRequest, port)) || (await probeRegistry(httpsRequest, port))
}

function probeRegistry(send: typeof httpsRequest, port: number): Promise<boolean> {
  return new Promise(resolve => {
    const req = send({ host: 'localhost', port, path: '/v2/', method: 'GET', timeout: 2000, rejectUnauthorized: false }, response => {
      response.resume()
      const location = String(response.headers.location ?? '')
      // Berth's HTTP port redirects to https; its HTTPS port and local mode answer as a registry.
      resolve(response.headers['docker-distribution-api-version'] !== undefined || location.startsWith('https://'))
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', () => resolve(false))
    req.end()
  })
}

/** Whether each --domain resolves, and to an address of this machine (NAT makes a mismatch normal). */
export async function checkDomain(domain: string): Promise<CheckResult> {
  const subject = `domain ${domain}`
  let addresses: string[]
  try {
    addresses = (await lookup(domain, { all: true })).map(entry => entry.address)
  } catch (error) {
    return {
      status: 'fail',
      subject,
      message: `does not resolve (${(error as NodeJS.ErrnoException).code ?? 'lookup failed'})`,
      fix: `create an A (and AAAA) record for ${domain} pointing to this server's public address`,
    }
  }
  const local = new Set(
    Object.values(networkInterfaces())
      .flat()
      .map(entry => entry?.address)
      .filter((address): address is string => address !== undefined),
  )
  if (addresses.some(address => local.has(address))) {
    return { status: 'ok', subject, message: `resolves to ${addresses.join(', ')}, an address of this machine` }
  }
  return {
    status: 'warn',
    subject,
    message: `resolves to ${addresses.join(', ')}, which is not an address of this machine`,
    fix: 'fine behind NAT or a port forward; otherwise fix the DNS record (ACME and clients will reach another host)',
  }
}

/** Who renews a certificate: nobody here (the user's files), Berth's ACME client, or its local CA. */
export type CertificateManager = 'user' | 'acme' | 'self-signed'

/** Below this many days a certificate nobody here renews is a warning: time to renew it by hand or by certbot. */
export const EXPIRY_WARNING_DAYS = 30

/**
 * The expiry line of a certificate. Files the user brings warn below EXPIRY_WARNING_DAYS; a
 * certificate Berth renews says when it will (ACME: renewal.ts's policy, without the CA's ARI
 * window, which can move it) and warns only when that time has passed.
 */
export function checkExpiry(subject: string, lifetime: { notBefore: Date; notAfter: Date }, managedBy: CertificateManager, now = Date.now()): CheckResult {
  const until = lifetime.notAfter.toISOString().slice(0, 10)
  const days = daysLeft(lifetime.notAfter, now)
  if (lifetime.notAfter.getTime() <= now) {
    const fix =
      managedBy === 'user' ? 'renew it (or use --acme to let Berth renew)' : 'berth serve renews it at start; if it is running, its log says why it could not'
    return { status: 'fail', subject, message: `expired on ${until}`, fix }
  }
  const valid = `valid until ${until} (${days} days)`
  if (managedBy === 'acme') {
    const renewal = renewalDecision(lifetime, now)
    const at = renewal.at.toISOString().slice(0, 10)
    if (!renewal.due)
      return {
        status: 'ok',
        subject,
        message: `${valid}; ACME renews it around ${at} (a third of its lifetime before expiry; the CA's renewal window can move it)`,
      }
    return {
      status: 'warn',
      subject,
      message: `${valid}; ACME renewal was due on ${at}`,
      fix: 'berth serve renews it at start and retries in the background; if it is running, its log says why the CA refused',
    }
  }
  if (managedBy === 'self-signed') {
    if (days >= EXPIRY_WARNING_DAYS)
      return {
        status: 'ok',
        subject,
        message: `${valid}; berth serve re-issues it from the local CA at start once fewer than ${EXPIRY_WARNING_DAYS} days are left`,
      }
    return {
      status: 'warn',
      subject,
      message: `expires in ${days} days (${until})`,
      fix: 'restart berth serve: it re-issues the certificate from the local CA at start',
    }
  }
  if (days < EXPIRY_WARNING_DAYS) {
    return {
      status: 'warn',
      subject,
      message: `expires in ${days} days (${until})`,
      fix: 'renew it soon (certbot renew); berth serve picks up the renewed file by itself',
    }
  }
  return { status: 'ok', subject, message: valid }
}

/** A certificate chain file: readable, unexpired, key matches, intermediates present, names cover the domains. */
export async function checkCertificateFiles(
  certPath: string,
  keyPath: string | undefined,
  domains: readonly string[],
  managedBy: CertificateManager = 'user',
  now = Date.now(),
): Promise<CheckResult[]> {
  const subject = `certificate ${certPath}`
  let pem: string
  try {
    pem = await readFile(certPath, 'utf8')
  } catch (error) {
    return [{ status: 'fail', subject, message: `cannot read it (${(error as NodeJS.ErrnoException).code ?? 'error'})` }]
  }
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  if (blocks.length === 0) return [{ status: 'fail', subject, message: 'no PEM certificate in the file' }]
  let chain: X509Certificate[]
  try {
    chain = blocks.map(block => new X509Certificate(block))
  } catch (error) {
    return [{ status: 'fail', subject, message: `unreadable certificate: ${(error as Error).message}` }]
  }
  const results: CheckResult[] = []
  const leaf = chain[0] as X509Certificate
  results.push(checkExpiry(subject, { notBefore: new Date(leaf.validFrom), notAfter: new Date(leaf.validTo) }, managedBy, now))
  for (let index = 0; index + 1 < chain.length; index++) {
    const child = chain[index] as X509Certificate
    const parent = chain[index + 1] as X509Certificate
    if (!child.checkIssued(parent)) {
      results.push({
        status: 'fail',
        subject,
        message: `certificate ${index + 1} is not issued by certificate ${index + 2}: the chain is out of order`,
        fix: 'use the leaf first, then its intermediates (certbot: fullchain.pem)',
      })
    }
  }
  if (chain.length === 1 && !leaf.checkIssued(leaf)) {
    results.push({
      status: 'warn',
      subject,
      message: 'the file holds only the server certificate, no intermediates',
      fix: 'use the full chain (certbot: fullchain.pem, not cert.pem); otherwise docker says "x509: certificate signed by unknown authority"',
    })
  }
  for (const domain of domains) {
    if (leaf.checkHost(domain) === undefined) {
      results.push({
        status: 'fail',
        subject,
        message: `does not cover ${domain} (covers: ${leaf.subjectAltName ?? leaf.subject})`,
        fix: `get a certificate for ${domain}`,
      })
    }
  }
  if (keyPath !== undefined) {
    try {
      const key = createPrivateKey(await readFile(keyPath, 'utf8'))
      if (!leaf.checkPrivateKey(key))
        results.push({
          status: 'fail',
          subject: `key ${keyPath}`,
          message: 'does not belong to the certificate',
          fix: 'use the key issued with this certificate (certbot: privkey.pem)',
        })
    } catch (error) {
      results.push({
        status: 'fail',
        subject: `key ${keyPath}`,
        message: `cannot use it: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      })
    }
  }
  return results
}

/** The `--client-ca` file: exists, holds a CA certificate that parses, not expired (the rules: inspectClientCa). */
export async function checkClientCaFile(file: string, now = Date.now()): Promise<CheckResult[]> {
  const subject = `client CA ${file}`
  let pem: string
  try {
    pem = await readFile(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    return [
      {
        status: 'fail',
        subject,
        message: code === 'ENOENT' ? 'no such file' : `cannot read it (${code ?? 'error'})`,
        fix: "give --client-ca the PEM file of the CA that signs your clients' certificates",
      },
    ]
  }
  const { subjects, problems } = inspectClientCa(pem, now)
  if (problems.length === 0) return [{ status: 'ok', subject, message: `clients must present a certificate signed by ${subjects.join(', ')}` }]
  return problems.map(problem => ({
    status: problem.severity,
    subject,
    message: problem.message,
    fix:
      problem.severity === 'fail'
        ? "give --client-ca the PEM file of the CA that signs your clients' certificates (berth serve refuses this one)"
        : 'replace the CA before it expires, and issue new client certificates from it',
  }))
}

/** Private keys and the htpasswd file should be readable by their owner only. */
export async function checkPrivateFile(file: string, what: string): Promise<CheckResult | undefined> {
  let mode: number
  try {
    mode = (await stat(file)).mode
  } catch {
    return undefined
  }
  if ((mode & 0o077) === 0) return { status: 'ok', subject: `${what} ${file}`, message: `mode ${(mode & 0o777).toString(8)}, owner only` }
  return {
    status: 'warn',
    subject: `${what} ${file}`,
    message: `mode ${(mode & 0o777).toString(8)}: readable by other users`,
    fix: `chmod 600 ${file}`,
  }
}

/**
 * The users file as `berth serve` will see it. HTTPS mode without a user and without
 * --allow-anonymous is a FAIL with serve's own refusal line as the fix (serve will not start);
 * with --allow-anonymous it is a WARN (it starts, open to anyone who reaches it).
 */
export async function checkHtpasswdFile(
  config: Pick<Config, 'htpasswd' | 'isHtpasswdExplicit' | 'mode' | 'allowAnonymous' | 'upstream'>,
): Promise<CheckResult[]> {
  const { htpasswd: file, isHtpasswdExplicit: isExplicit, mode } = config
  const subject = `users ${file}`
  const mustHaveUsers = mode === 'https' && !config.allowAnonymous
  const noLogin = (reason: 'no-file' | 'empty'): CheckResult => ({
    status: 'fail',
    subject,
    message: `${reason === 'no-file' ? 'no file' : 'no users'}: berth serve refuses to start (HTTPS without a login)`,
    fix: noUsersMessage(config, reason),
  })
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT') {
      if (mode === 'local' && !isExplicit) return [{ status: 'ok', subject, message: 'no file: local mode runs without login' }]
      if (mustHaveUsers) return [noLogin('no-file')]
      return [{ status: isExplicit ? 'fail' : 'warn', subject, message: 'no file: anyone who reaches the registry can push', fix: addUserCommand(file) }]
    }
    return [{ status: 'fail', subject, message: `cannot read it (${code ?? 'error'})` }]
  }
  const results: CheckResult[] = []
  try {
    const users = parseHtpasswd(text, file)
    results.push(
      users.size === 0 && mustHaveUsers
        ? noLogin('empty')
        : users.size === 0
          ? { status: 'warn', subject, message: 'no users: every login is refused', fix: addUserCommand(file) }
          : { status: 'ok', subject, message: `${users.size} user${users.size === 1 ? '' : 's'}, bcrypt` },
    )
  } catch (error) {
    if (!(error instanceof HtpasswdError)) throw error
    results.push({
      status: 'fail',
      subject,
      message: error.message.replace(`${file} `, ''),
      fix: 'berth htpasswd add <user> replaces the line with a bcrypt one',
    })
  }
  const permissions = await checkPrivateFile(file, 'users')
  if (permissions?.status === 'warn') results.push(permissions)
  return results
}

/**
 * The access-rules file as `berth serve` will read it: every problem with its line and column (serve
 * refuses to start with any of them), or how many rules it holds. Without a file, one line says so.
 */
export async function checkAccessFile(config: Pick<Config, 'accessFile' | 'datadir'>): Promise<CheckResult[]> {
  const file = config.accessFile
  if (file === undefined) {
    return [
      {
        status: 'ok',
        subject: 'access rules',
        message: `none (no ${join(config.datadir, 'access.yml')}, no --access): every user who logs in may pull, push, overwrite and delete`,
      },
    ]
  }
  const subject = `access rules ${file}`
  try {
    const policy = await loadAccessFile(file)
    const anonymous = policy.namesAnonymous ? '; some allow anonymous access' : ''
    return [{ status: 'ok', subject, message: `${policy.ruleCount} rule${policy.ruleCount === 1 ? '' : 's'}${anonymous}` }]
  } catch (error) {
    if (!(error instanceof AccessFileError)) throw error
    const fix = 'correct the file: berth serve refuses to start with it, and a running one keeps the rules it loaded before'
    return error.all.map((problem, index) => ({
      status: 'fail' as const,
      subject,
      message: problem.line === undefined ? problem.problem : `line ${problem.line}, column ${problem.column ?? 1}: ${problem.problem}`,
      ...(index === error.all.length - 1 ? { fix } : {}),
    }))
  }
}

/**
 * The files under `folder` (at most `depth` levels of folders deep) whose name `matches`; a folder
 * that cannot be read counts as empty (doctor reports what it finds, it does not fail on a search).
 */
async function findFiles(folder: string, matches: (name: string) => boolean, depth: number): Promise<string[]> {
  if (depth === 0) return []
  let entries
  try {
    entries = await readdir(folder, { withFileTypes: true })
  } catch {
    return []
  }
  const found: string[] = []
  for (const entry of entries) {
    const path = join(folder, entry.name)
    if (entry.isDirectory()) found.push(...(await findFiles(path, matches, depth - 1)))
    else if (entry.isFile() && matches(entry.name)) found.push(path)
  }
  return found
}

/** Private keys Berth keeps under certs/ (ACME, self-signed): each should be 0600. */
export function findKeyFiles(folder: string, depth = 5): Promise<string[]> {
  return findFiles(folder, name => /\.(key|pem)$/.test(name) && /key/.test(name), depth)
}

/** Certificates Berth stored itself (ACME `*.crt` under certificates/, the self-signed server.crt). */
export function findStoredCertificates(folder: string, depth = 5): Promise<string[]> {
  return findFiles(folder, name => name.endsWith('.crt') && name !== 'ca.crt', depth)
}

/** The data folder: writable, and room for at least one maximum-size upload. */
export async function checkDatadir(datadir: string, maxBody: number): Promise<CheckResult[]> {
  const subject = `datadir ${datadir}`
  const results: CheckResult[] = []
  // A folder that does not exist yet is made by serve; judge the nearest existing parent instead.
  let existing = datadir
  while (
    !(await stat(existing).then(
      () => true,
      () => false,
    )) &&
    dirname(existing) !== existing
  )
    existing = dirname(existing)
  try {
    await access(existing, fsConstants.W_OK | fsConstants.X_OK)
    results.push({ status: 'ok', subject, message: existing === datadir ? 'writable' : `does not exist yet; berth serve creates it in ${existing}` })
  } catch {
    const info = await stat(existing)
    results.push({
      status: 'fail',
      subject,
      message: `${existing} is not writable by uid ${process.getuid?.() ?? '?'} (owned by uid ${info.uid})`,
      fix: ownershipFix(existing),
    })
  }
  const fs = await statfs(existing)
  const free = fs.bavail * fs.bsize
  const gib = (bytes: number) => `${(bytes / 1024 ** 3).toFixed(1)} GiB`
  if (free < Math.min(maxBody, 1024 ** 3)) {
    results.push({ status: 'fail', subject: `disk of ${existing}`, message: `${gib(free)} free`, fix: 'free space or move --datadir to a larger disk' })
  } else if (free < maxBody * 2) {
    results.push({
      status: 'warn',
      subject: `disk of ${existing}`,
      message: `${gib(free)} free, less than two maximum-size uploads (--max-body ${gib(maxBody)})`,
      fix: 'free space soon',
    })
  } else {
    results.push({ status: 'ok', subject: `disk of ${existing}`, message: `${gib(free)} free` })
  }
  return results
}

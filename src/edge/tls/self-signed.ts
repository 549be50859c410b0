/**
 * `--self-signed`: a local CA and a server certificate signed by it, made once and reused.
 *
 *   <certsDir>/local-ca/          0700
 *     ca.crt                      the CA to give clients (/etc/docker/certs.d/<host>/ca.crt)
 *     ca.key                      0600, never leaves this machine
 *     server.crt                  server leaf + CA (chain)
 *     server.key                  0600
 *
 * The CA lives 10 years, so clients configured once keep trusting it; the server certificate is
 * re-issued from the same CA when the configured names change or fewer than 30 days remain.
 * node-forge is used only to build and sign X.509 certificates (Node's crypto cannot); keys come
 * from Node's crypto.
 */
import { X509Certificate, generateKeyPair as generateKeyPairCallback, randomBytes } from 'node:crypto'
import { chmod, mkdir, open, readFile, rename, rm } from 'node:fs/promises'
import { isIP } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import forge from 'node-forge'
import type { Logger } from '../../log.js'
import { silentLogger } from '../../log.js'
import { hostPath } from '../../container.js'
import { toTlsCertificate } from './certificate-info.js'
import type { CertificateProvider, TlsCertificate } from './certificate-source.js'

const generateKeyPair = promisify(generateKeyPairCallback)
const DAY = 24 * 60 * 60 * 1000

export interface PemPair {
  readonly key: string
  readonly cert: string
}

async function newRsaKey(): Promise<{ pem: string; forgeKey: forge.pki.rsa.PrivateKey; forgePublic: forge.pki.rsa.PublicKey }> {
  const { privateKey } = await generateKeyPair('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  })
  const forgeKey = forge.pki.privateKeyFromPem(privateKey)
  return { pem: privateKey, forgeKey, forgePublic: forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e) }
}

function serialNumber(): string {
  // Positive, 16 bytes of randomness (RFC 5280 §4.1.2.2 allows up to 20 octets).
  return '01' + randomBytes(15).toString('hex')
}

/**
 * An unsigned certificate for `publicKey` with a fresh serial, valid from a day ago (a client
 * whose clock is a little behind still accepts it) for `days` days. The caller sets names,
 * extensions and signs.
 */
function newCertificate(publicKey: forge.pki.PublicKey, days: number): forge.pki.Certificate {
  const cert = forge.pki.createCertificate()
  cert.publicKey = publicKey
  cert.serialNumber = serialNumber()
  cert.validity.notBefore = new Date(Date.now() - DAY)
  cert.validity.notAfter = new Date(Date.now() + days * DAY)
  return cert
}

/** Makes a self-signed CA certificate (10 years by default). */
export async function createCertificateAuthority(options: { commonName?: string; days?: number } = {}): Promise<PemPair> {
  const key = await newRsaKey()
  const cert = newCertificate(key.forgePublic, options.days ?? 3650)
  const subject = [
    { name: 'commonName', value: options.commonName ?? 'Berth local CA' },
    { name: 'organizationName', value: 'Berth' },
  ]
  cert.setSubject(subject)
  cert.setIssuer(subject)
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ])
  cert.sign(key.forgeKey, forge.md.sha256.create())
  return { key: key.pem, cert: forge.pki.certificateToPem(cert) }
}

/**
 * Issues a leaf signed by `ca`: a server certificate for `names` (DNS names or IP addresses), or a
 * client certificate (`client: true`, for mTLS tests and `--client-ca` users).
 * The returned `cert` is the leaf only; append `ca.cert` for a chain.
 */
export async function issueCertificate(ca: PemPair, options: { names: readonly string[]; days?: number; client?: boolean }): Promise<PemPair> {
  const caCert = forge.pki.certificateFromPem(ca.cert)
  const caKey = forge.pki.privateKeyFromPem(ca.key)
  const key = await newRsaKey()
  const cert = newCertificate(key.forgePublic, options.days ?? 825)
  cert.setSubject([{ name: 'commonName', value: options.names[0] ?? 'berth' }])
  cert.setIssuer(caCert.subject.attributes)
  const altNames = options.names.map(name => (isIP(name) ? { type: 7, ip: name } : { type: 2, value: name }))
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: !options.client, clientAuth: options.client === true },
    ...(altNames.length > 0 ? [{ name: 'subjectAltName', altNames }] : []),
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ])
  cert.sign(caKey, forge.md.sha256.create())
  return { key: key.pem, cert: forge.pki.certificateToPem(cert) }
}

/** Writes a file atomically (temp file with the final mode, fsync, rename). */
export async function writeFileAtomic(path: string, content: string, mode: number): Promise<void> {
  const temp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  const handle = await open(temp, 'wx', mode)
  try {
    await handle.writeFile(content)
    await handle.sync()
  } finally {
    await handle.close()
  }
  try {
    await rename(temp, path)
  } catch (error) {
    await rm(temp, { force: true })
    throw error
  }
}

async function readPair(keyPath: string, certPath: string): Promise<PemPair | undefined> {
  try {
    const [key, cert] = await Promise.all([readFile(keyPath, 'utf8'), readFile(certPath, 'utf8')])
    return { key, cert }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

export interface SelfSignedCertificateProviderOptions {
  /** Parent folder (the CLI's `certs/`); the material goes to `<certsDir>/local-ca/`. */
  certsDir: string
  /** Names the server certificate must cover (DNS names or IPs). Empty → localhost, 127.0.0.1, ::1. */
  names: readonly string[]
  logger?: Logger
}

export class SelfSignedCertificateProvider implements CertificateProvider {
  /** Folder holding the CA and the server certificate. */
  readonly directory: string
  /** The CA certificate clients must trust (copy to `/etc/docker/certs.d/<host>/ca.crt`). */
  readonly caPath: string
  private readonly names: string[]
  private readonly logger: Logger
  private certificate: TlsCertificate | undefined

  constructor(options: SelfSignedCertificateProviderOptions) {
    this.directory = join(options.certsDir, 'local-ca')
    this.caPath = join(this.directory, 'ca.crt')
    this.names = options.names.length > 0 ? [...options.names] : ['localhost', '127.0.0.1', '::1']
    this.logger = options.logger ?? silentLogger
  }

  current(): TlsCertificate | undefined {
    return this.certificate
  }

  /** The certificate never changes while running (it is re-issued only at start). */
  onChange(): void {}

  /** The line the CLI prints for docker users of `host` (`name` or `name:port`). */
  dockerHint(host: string): string {
    return `self-signed TLS: docker clients must trust the local CA: copy ${hostPath(this.caPath)} to /etc/docker/certs.d/${host}/ca.crt on each client machine`
  }

  /** Loads or makes the CA and server certificate. @throws when the folder cannot be written or the CA files are corrupt. */
  async start(): Promise<void> {
    if (this.certificate) return
    await mkdir(this.directory, { recursive: true, mode: 0o700 })
    await chmod(this.directory, 0o700)
    const caKeyPath = join(this.directory, 'ca.key')
    let ca = await readPair(caKeyPath, this.caPath)
    if (ca) {
      toTlsCertificate(ca.key, ca.cert) // refuses a corrupt or mismatched CA instead of silently replacing it
    } else {
      ca = await createCertificateAuthority()
      await writeFileAtomic(caKeyPath, ca.key, 0o600)
      await writeFileAtomic(this.caPath, ca.cert, 0o644)
      this.logger.info('local CA created', { path: this.caPath })
    }
    const serverKeyPath = join(this.directory, 'server.key')
    const serverCertPath = join(this.directory, 'server.crt')
    const existing = await readPair(serverKeyPath, serverCertPath)
    let certificate = existing ? this.reusable(existing, ca) : undefined
    if (!certificate) {
      const leaf = await issueCertificate(ca, { names: this.names })
      const chain = leaf.cert + ca.cert
      await writeFileAtomic(serverKeyPath, leaf.key, 0o600)
      await writeFileAtomic(serverCertPath, chain, 0o644)
      certificate = toTlsCertificate(leaf.key, chain)
      this.logger.info('self-signed server certificate issued', { names: this.names.join(','), notAfter: certificate.notAfter.toISOString() })
    }
    this.certificate = certificate
  }

  async stop(): Promise<void> {}

  private reusable(pair: PemPair, ca: PemPair): TlsCertificate | undefined {
    try {
      const certificate = toTlsCertificate(pair.key, pair.cert)
      const leaf = new X509Certificate(pair.cert)
      if (!leaf.checkIssued(new X509Certificate(ca.cert))) return undefined
      if (certificate.notAfter.getTime() - Date.now() < 30 * DAY) return undefined
      const covers = (name: string): boolean => (isIP(name) ? leaf.checkIP(name) !== undefined : leaf.checkHost(name, { wildcards: false }) !== undefined)
      if (!this.names.every(covers)) return undefined
      return certificate
    } catch {
      return undefined
    }
  }
}

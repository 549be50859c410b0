/**
 * A certificate from files the user brings: the full chain (certbot's `fullchain.pem`, leaf first)
 * and its private key. Reloaded on SIGHUP and when either file changes (stat poll, which also sees
 * certbot's symlink swaps in `live/`). A new pair that does not load — half-written, mismatched,
 * corrupt — is logged and the current certificate stays in service.
 */
import { readFile, stat } from 'node:fs/promises'
import type { Logger } from '../../log.js'
import { silentLogger } from '../../log.js'
import { toTlsCertificate } from './certificate-info.js'
import type { CertificateProvider, TlsCertificate } from './certificate-source.js'

/** One process listener for every provider (tests run many), so Node does not warn about a leak. */
const sighupListeners = new Set<() => void>()
const onProcessSighup = (): void => {
  for (const listener of sighupListeners) listener()
}
function watchSighup(listener: () => void): void {
  if (sighupListeners.size === 0) process.on('SIGHUP', onProcessSighup)
  sighupListeners.add(listener)
}
function unwatchSighup(listener: () => void): void {
  if (sighupListeners.delete(listener) && sighupListeners.size === 0) process.off('SIGHUP', onProcessSighup)
}

export interface FileCertificateProviderOptions {
  /** PEM certificate chain, leaf first (certbot `fullchain.pem`). */
  certPath: string
  /** PEM private key of the leaf (unencrypted). */
  keyPath: string
  logger?: Logger
  /** How often the files are stat-ed, default 5000 ms. */
  pollMs?: number
  /** Reload on SIGHUP, default true. */
  reloadOnSighup?: boolean
}

export class FileCertificateProvider implements CertificateProvider {
  private certificate: TlsCertificate | undefined
  private readonly listeners: ((certificate: TlsCertificate) => void)[] = []
  private readonly logger: Logger
  private fingerprint = ''
  private timer: NodeJS.Timeout | undefined
  private reloading: Promise<void> | undefined
  private readonly onSighup = (): void => {
    this.logger.info('SIGHUP: reloading the TLS certificate', { cert: this.options.certPath })
    void this.reload(true)
  }

  constructor(private readonly options: FileCertificateProviderOptions) {
    this.logger = options.logger ?? silentLogger
  }

  current(): TlsCertificate | undefined {
    return this.certificate
  }

  onChange(listener: (certificate: TlsCertificate) => void): void {
    this.listeners.push(listener)
  }

  /** @throws Error naming the file when the pair cannot be read or does not match. */
  async start(): Promise<void> {
    if (this.timer) return
    this.fingerprint = await this.stamp()
    this.certificate = await this.read()
    this.logger.info('TLS certificate loaded', this.describe(this.certificate))
    this.timer = setInterval(() => void this.reload(false), this.options.pollMs ?? 5000)
    this.timer.unref()
    if (this.options.reloadOnSighup ?? true) watchSighup(this.onSighup)
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    unwatchSighup(this.onSighup)
  }

  /** Re-reads the files now (forced) or only if their stat changed. Resolves after the attempt; never rejects. */
  reload(force = true): Promise<void> {
    this.reloading ??= this.doReload(force).finally(() => (this.reloading = undefined))
    return this.reloading
  }

  private async doReload(force: boolean): Promise<void> {
    let fingerprint: string
    try {
      fingerprint = await this.stamp()
    } catch (error) {
      if (this.fingerprint !== 'error')
        this.logger.error('TLS certificate files unreadable; keeping the current certificate', { error: (error as Error).message })
      this.fingerprint = 'error'
      return
    }
    if (!force && fingerprint === this.fingerprint) return
    const previous = this.fingerprint
    this.fingerprint = fingerprint
    try {
      const certificate = await this.read()
      if (this.certificate && certificate.cert === this.certificate.cert && certificate.key === this.certificate.key) return
      this.certificate = certificate
      this.logger.info('TLS certificate reloaded', this.describe(certificate))
      for (const listener of this.listeners) listener(certificate)
    } catch (error) {
      // certbot writes the chain and the key one after the other: a poll between the two sees a
      // mismatched pair. Keep the old certificate; the next change of either file retries.
      if (force || previous !== fingerprint)
        this.logger.error('new TLS certificate not loaded; keeping the current certificate', { error: (error as Error).message })
    }
  }

  private async stamp(): Promise<string> {
    const [cert, key] = await Promise.all([stat(this.options.certPath), stat(this.options.keyPath)])
    return `${cert.ino}:${cert.size}:${cert.mtimeMs}|${key.ino}:${key.size}:${key.mtimeMs}`
  }

  private async read(): Promise<TlsCertificate> {
    const { certPath, keyPath } = this.options
    const [cert, key] = await Promise.all([readFile(certPath, 'utf8'), readFile(keyPath, 'utf8')])
    try {
      return toTlsCertificate(key, cert)
    } catch (error) {
      throw new Error(`${certPath} + ${keyPath}: ${(error as Error).message}`, { cause: error })
    }
  }

  private describe(certificate: TlsCertificate): Record<string, string> {
    return { cert: this.options.certPath, names: certificate.names.join(','), notAfter: certificate.notAfter.toISOString() }
  }
}

/**
 * The edge: Berth's front door. Listeners (HTTPS + HTTP redirect, or plain HTTP in local mode),
 * then per request: access log → body limit → basic auth → streaming proxy to the upstream
 * (the engine on its internal loopback port, or any registry with `--upstream`).
 */
import type { Logger } from '../log.js'
import type { CertificateProvider, ChallengeResponder } from './tls/certificate-source.js'

export interface EdgeOptions {
  /** Bind address; default all interfaces ('::', dual-stack). */
  host?: string
  /** 'local': plain HTTP on localPort. 'https': TLS on httpsPort plus redirect/ACME on httpPort. */
  mode: 'local' | 'https'
  /** Local mode port, default 5000 (0 = random, for tests). */
  localPort?: number
  /** HTTPS mode ports, default 80 and 443 (0 = random). */
  httpPort?: number
  httpsPort?: number
  /** Configured names: port 80 redirects only for these (no open redirect). */
  domains: string[]
  /** Required in https mode. */
  certificate?: CertificateProvider
  /** ACME HTTP-01 answers served on port 80. */
  challenges?: ChallengeResponder
  /** When set and the file exists → basic auth; the file is watched for changes. */
  htpasswdPath?: string
  /** Basic auth realm, default 'Berth Registry'. */
  realm?: string
  /** Per-request body limit, default 5 GiB. */
  maxBodyBytes?: number
  /** PEM bundle of CAs client certificates must chain to (nginx `ssl_verify_client on`). */
  clientCaPath?: string
  /** Where requests go. `secret` is sent as the `x-berth-internal` header. */
  upstream: { url: string; secret?: string }
  logger?: Logger
}

export interface Edge {
  /** Actual bound addresses (port 0 resolved), e.g. `https://[::1]:8443`. */
  readonly urls: { local?: string; http?: string; https?: string }
  /** Stops listening, ends connections, stops watchers. Idempotent. */
  close(): Promise<void>
}

export async function startEdge(options: EdgeOptions): Promise<Edge> {
  void options
  throw new Error('startEdge: not implemented yet')
}

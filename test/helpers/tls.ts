/**
 * Test PKI: a CA, a server certificate for loopback names and a client certificate, written to a folder
 * in the shapes clients want: `certs/ca.crt` for skopeo/podman `--cert-dir` (and docker certs.d),
 * `server.crt` = leaf + CA (a full chain, like certbot's fullchain.pem), keys 0600.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { createCertificateAuthority, issueCertificate } from '../../src/edge/tls/self-signed.js'
import type { PemPair } from '../../src/edge/tls/self-signed.js'

export interface TestPki {
  readonly dir: string
  readonly ca: PemPair
  /** The CA certificate file. */
  readonly caPath: string
  /** A folder holding only `ca.crt`: skopeo/podman `--cert-dir`, curl `--capath` no (use caPath). */
  readonly certDir: string
  /** Server chain (leaf + CA) and key. */
  readonly certPath: string
  readonly keyPath: string
  /** A client certificate signed by the CA (for --client-ca tests). */
  readonly clientCertPath: string
  readonly clientKeyPath: string
}

/** Default names: localhost, 127.0.0.1, ::1 and berth.test (the name the dockerd helper maps to ::1). */
export async function createTestPki(dir: string, names: readonly string[] = ['localhost', '127.0.0.1', '::1', 'berth.test']): Promise<TestPki> {
  await mkdir(dir, { recursive: true })
  const ca = await createCertificateAuthority({ commonName: 'Berth test CA' })
  const server = await issueCertificate(ca, { names })
  const client = await issueCertificate(ca, { names: ['berth-test-client'], client: true })
  const certDir = path.join(dir, 'certs')
  await mkdir(certDir, { recursive: true })
  const files = {
    caPath: path.join(dir, 'ca.crt'),
    certPath: path.join(dir, 'server.crt'),
    keyPath: path.join(dir, 'server.key'),
    clientCertPath: path.join(dir, 'client.cert'),
    clientKeyPath: path.join(dir, 'client.key'),
  }
  await writeFile(files.caPath, ca.cert)
  await writeFile(path.join(certDir, 'ca.crt'), ca.cert)
  await writeFile(files.certPath, server.cert + ca.cert)
  await writeFile(files.keyPath, server.key, { mode: 0o600 })
  await writeFile(files.clientCertPath, client.cert)
  await writeFile(files.clientKeyPath, client.key, { mode: 0o600 })
  return { dir, ca, certDir, ...files }
}

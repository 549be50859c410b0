/**
 * One CA, one server certificate and one htpasswd file, shared by both stacks so that neither
 * gets a cheaper handshake or a cheaper password check than the other.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { run } from './util.js'

export interface BenchPki {
  dir: string
  caCert: string
  /** Directory holding only `ca.crt`, the shape skopeo's --cert-dir expects. */
  caDir: string
  serverCert: string
  serverKey: string
  /** Leaf followed by the CA, as a user's chain file would be. */
  serverChain: string
  htpasswd: string
  user: string
  password: string
}

export async function makePki(dir: string): Promise<BenchPki> {
  await mkdir(dir, { recursive: true })
  const p = (name: string) => path.join(dir, name)
  const caDir = p('ca')
  await mkdir(caDir, { recursive: true })
  // ECDSA P-256, what Let's Encrypt issues by default today, for both CA and leaf.
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    p('ca.key'),
    '-out',
    p('ca.crt'),
    '-days',
    '2',
    '-subj',
    '/CN=Berth bench CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ])
  await run('openssl', [
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    p('server.key'),
    '-out',
    p('server.csr'),
    '-subj',
    '/CN=localhost',
  ])
  await writeFile(
    p('server.ext'),
    [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1',
      '',
    ].join('\n'),
  )
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    p('server.csr'),
    '-CA',
    p('ca.crt'),
    '-CAkey',
    p('ca.key'),
    '-CAcreateserial',
    '-out',
    p('server.crt'),
    '-days',
    '2',
    '-extfile',
    p('server.ext'),
  ])
  await writeFile(p('server-chain.crt'), (await readFile(p('server.crt'), 'utf8')) + (await readFile(p('ca.crt'), 'utf8')))
  await writeFile(path.join(caDir, 'ca.crt'), await readFile(p('ca.crt')))

  const user = 'bench'
  const password = 'bench-' + Math.random().toString(36).slice(2, 12)
  // Exactly what the seed's `htpasswd -Bbn` writes: bcrypt, `$2y$`, default cost 5.
  const line = await run('htpasswd', ['-nbB', user, password])
  await writeFile(p('htpasswd'), line.stdout.trim() + '\n', { mode: 0o600 })
  return {
    dir,
    caCert: p('ca.crt'),
    caDir,
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    serverChain: p('server-chain.crt'),
    htpasswd: p('htpasswd'),
    user,
    password,
  }
}

/**
 * TLS (issue #8) with testssl.sh (Debian `testssl.sh`) against the edge in HTTPS mode, serving a
 * chain like Let's Encrypt's fullchain.pem (leaf + intermediate, root not sent) made by openssl
 * here (90 days and a CRL URI, like Let's Encrypt's: certificate properties are not Berth's
 * findings). Checked from testssl's JSON: no protocol below TLS 1.2, no NULL/anonymous/export/low/3DES/
 * obsolete CBC-SHA1-only cipher class, the chain of trust passes with only the root trusted (so the
 * chain is complete), and no finding rated HIGH or CRITICAL.
 *
 * Quick mode: protocols, cipher classes, server defaults (certificate and chain), headers.
 * Full mode: testssl's whole default run (vulnerabilities included).
 */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'ava'
import { startBerth } from '../helpers/berth.js'
import { run } from '../helpers/procs.js'
import { FULL, tempDir } from './common.js'

async function makeChain(dir: string): Promise<{ root: string; chain: string; key: string }> {
  const sh = (script: string) => run('sh', ['-euc', script], { cwd: dir })
  await writeFile(
    join(dir, 'ca.ext'),
    'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n',
  )
  await writeFile(
    join(dir, 'leaf.ext'),
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\ncrlDistributionPoints=URI:http://crl.example.invalid/int.crl\n',
  )
  await sh(`
    openssl ecparam -name prime256v1 -genkey -noout -out root.key
    openssl req -x509 -new -key root.key -sha256 -days 120 -subj "/CN=Berth hardening root" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out root.pem
    openssl ecparam -name prime256v1 -genkey -noout -out int.key
    openssl req -new -key int.key -subj "/CN=Berth hardening intermediate" -out int.csr
    openssl x509 -req -in int.csr -CA root.pem -CAkey root.key -CAcreateserial -sha256 -days 120 -extfile ca.ext -out int.pem
    openssl ecparam -name prime256v1 -genkey -noout -out leaf.key
    openssl req -new -key leaf.key -subj "/CN=localhost" -out leaf.csr
    openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -CAcreateserial -sha256 -days 90 -extfile leaf.ext -out leaf.pem
    cat leaf.pem int.pem > fullchain.pem
  `)
  return { root: join(dir, 'root.pem'), chain: join(dir, 'fullchain.pem'), key: join(dir, 'leaf.key') }
}

interface Finding {
  id: string
  severity: string
  finding: string
}

test(`testssl.sh (${FULL ? 'full run' : 'protocols, ciphers, server defaults, headers'}): TLS 1.2+ only, no weak cipher, complete chain, nothing HIGH or CRITICAL`, async t => {
  t.timeout(FULL ? 900_000 : 240_000)
  const dir = await tempDir(t, 'berth-testssl-')
  const pki = await makeChain(dir)
  const berth = await startBerth({
    datadir: join(dir, 'datadir'),
    https: { domain: 'localhost', certFile: pki.chain, keyFile: pki.key, allowAnonymous: true }, // a TLS scan: no login needed
  })
  t.teardown(() => berth.stop())
  const json = join(dir, 'testssl.json')
  const checks = FULL ? [] : ['--protocols', '--std', '--server-defaults', '--headers', '--fs']
  await run(
    'testssl',
    [...checks, '--quiet', '--warnings', 'off', '--color', '0', '--add-ca', pki.root, '--ip', '127.0.0.1', '--jsonfile', json, `localhost:${berth.port}`],
    { timeoutMs: FULL ? 880_000 : 230_000, allowFailure: true },
  )
  const findings = JSON.parse(await readFile(json, 'utf8')) as Finding[]
  const byId = new Map(findings.map(f => [f.id, f]))
  const bad = findings.filter(f => f.severity === 'HIGH' || f.severity === 'CRITICAL')
  t.deepEqual(
    bad.map(f => `${f.id}: ${f.finding}`),
    [],
    'HIGH/CRITICAL findings',
  )
  for (const id of ['SSLv2', 'SSLv3', 'TLS1', 'TLS1_1']) t.regex(byId.get(id)?.finding ?? 'missing', /not offered/, id)
  t.regex(byId.get('TLS1_2')?.finding ?? '', /offered/, 'TLS1_2')
  t.regex(byId.get('TLS1_3')?.finding ?? '', /offered/, 'TLS1_3')
  for (const id of ['cipherlist_NULL', 'cipherlist_aNULL', 'cipherlist_EXPORT', 'cipherlist_LOW', 'cipherlist_3DES_IDEA']) {
    t.regex(byId.get(id)?.finding ?? 'missing', /not offered/, id)
  }
  t.regex(byId.get('cert_chain_of_trust')?.finding ?? 'missing', /passed/i, 'chain of trust (only the root is trusted, so the intermediate must be served)')
  const severities: Record<string, number> = {}
  for (const f of findings) severities[f.severity] = (severities[f.severity] ?? 0) + 1
  const notable = findings.filter(f => f.severity === 'MEDIUM' || f.severity === 'LOW').map(f => `${f.id} (${f.severity}): ${f.finding}`)
  t.log(`${findings.length} testssl findings by severity ${JSON.stringify(severities)}${notable.length ? `; LOW/MEDIUM: ${notable.join('; ')}` : ''}`)
})

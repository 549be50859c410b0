/**
 * The certificate checks serve and doctor share (src/edge/tls/certificate-checks.ts), doctor's
 * expiry rule (src/cli/doctor-checks.ts) and the hints that differ inside Berth's image
 * (src/container.ts): pure functions, no process, no socket.
 */
import test from 'ava'
import { checkExpiry } from '../../src/cli/doctor-checks.js'
import { addUserCommand, hostPath, ownershipFix } from '../../src/container.js'
import { inspectClientCa, uncoveredDomains, warnIfDomainsUncovered } from '../../src/edge/tls/certificate-checks.js'
import { toTlsCertificate } from '../../src/edge/tls/certificate-info.js'
import { createCertificateAuthority, issueCertificate, SelfSignedCertificateProvider } from '../../src/edge/tls/self-signed.js'

const DAY = 24 * 60 * 60 * 1000

test('uncoveredDomains: wildcards and IP addresses as TLS clients check them', async t => {
  const ca = await createCertificateAuthority()
  const pair = await issueCertificate(ca, { names: ['*.example.com', 'example.com', '10.0.0.5'] })
  const certificate = toTlsCertificate(pair.key, pair.cert + ca.cert)
  t.deepEqual(uncoveredDomains(certificate, ['example.com', 'docker.example.com', '10.0.0.5']), [])
  t.deepEqual(uncoveredDomains(certificate, ['a.b.example.com', 'docker.example.org', '10.0.0.6']), ['a.b.example.com', 'docker.example.org', '10.0.0.6'])
})

test('warnIfDomainsUncovered (for the start and for every reload) names the names the certificate has', async t => {
  const ca = await createCertificateAuthority()
  const pair = await issueCertificate(ca, { names: ['old.example.com'] })
  const certificate = toTlsCertificate(pair.key, pair.cert)
  const warnings: { message: string; fields: Record<string, unknown> | undefined }[] = []
  const logger = { warn: (message: string, fields?: Record<string, unknown>) => void warnings.push({ message, fields }) }
  warnIfDomainsUncovered(certificate, ['old.example.com'], logger)
  warnIfDomainsUncovered(undefined, ['docker.example.com'], logger)
  t.is(warnings.length, 0)
  warnIfDomainsUncovered(certificate, ['docker.example.com'], logger)
  t.is(warnings.length, 1)
  t.regex(warnings[0]!.message, /does not cover docker\.example\.com/)
  t.is(warnings[0]!.fields?.certificateNames, 'old.example.com')
})

test('inspectClientCa: garbage, a leaf, an expired CA fail; a good CA passes with its subject', async t => {
  const now = Date.now()
  const ca = await createCertificateAuthority({ commonName: 'Team CA' })
  const leaf = await issueCertificate(ca, { names: ['client'], client: true })
  t.regex(inspectClientCa('garbage\n', now).problems[0]!.message, /no PEM certificate/)
  t.regex(inspectClientCa('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', now).problems[0]!.message, /certificate 1 does not parse/)
  t.deepEqual(
    inspectClientCa(leaf.cert, now).problems.map(problem => problem.severity),
    ['fail'],
  )
  t.deepEqual(inspectClientCa(ca.cert, now), { subjects: ['Team CA'], problems: [] })
  const later = now + 3651 * DAY
  const expired = inspectClientCa(ca.cert, later)
  t.is(expired.problems[0]?.severity, 'fail')
  t.regex(expired.problems[0]!.message, /^expired on \d{4}-\d\d-\d\d/)
  const soon = inspectClientCa(ca.cert, now + 3640 * DAY)
  t.deepEqual(
    soon.problems.map(problem => problem.severity),
    ['warn'],
  )
  t.deepEqual(
    inspectClientCa(leaf.cert + ca.cert, now).problems.map(problem => problem.message),
    ['1 of 2 certificates are not CAs and are ignored'],
  )
})

test('doctor expiry: a certificate the user renews warns below 30 days; ACME says when it renews and warns only when that passed', t => {
  const now = Date.parse('2027-01-01T00:00:00Z')
  const issued = { notBefore: new Date(now - 71 * DAY), notAfter: new Date(now + 19 * DAY) }
  const user = checkExpiry('certificate c', issued, 'user', now)
  t.is(user.status, 'warn')
  t.is(user.message, 'expires in 19 days (2027-01-20)')
  t.is(checkExpiry('certificate c', { notBefore: new Date(now - 50 * DAY), notAfter: new Date(now + 40 * DAY) }, 'user', now).status, 'ok')

  const fresh = checkExpiry('certificate c', { notBefore: new Date(now - 10 * DAY), notAfter: new Date(now + 80 * DAY) }, 'acme', now)
  t.is(fresh.status, 'ok')
  t.regex(fresh.message, /^valid until 2027-03-22 \(80 days\); ACME renews it around 2027-02-20 /)
  const overdue = checkExpiry('certificate c', issued, 'acme', now)
  t.is(overdue.status, 'warn')
  t.regex(overdue.message, /ACME renewal was due on 2026-12-21$/)
  t.is(checkExpiry('certificate c', { notBefore: new Date(now - 90 * DAY), notAfter: new Date(now - DAY) }, 'acme', now).status, 'fail')
  t.is(checkExpiry('certificate c', issued, 'self-signed', now).status, 'warn')
})

test('inside the image (BERTH_IN_CONTAINER), paths are the host folders and commands go through compose', t => {
  const image = { BERTH_IN_CONTAINER: '1', BERTH_DATADIR: '/srv/berth/datadir' }
  t.is(hostPath('/srv/berth/certs/local-ca/ca.crt', image), './certs/local-ca/ca.crt')
  t.is(hostPath('/srv/berth/datadir', image), './datadir')
  t.is(hostPath('/etc/ssl/ca.pem', image), '/etc/ssl/ca.pem')
  t.is(hostPath('/srv/berth/certs/local-ca/ca.crt', {}), '/srv/berth/certs/local-ca/ca.crt')
  t.is(addUserCommand('/srv/berth/datadir/htpasswd', image), 'docker compose run --rm registry htpasswd add <user>')
  t.is(addUserCommand('/srv/berth/other/htpasswd', image), 'docker compose run --rm registry htpasswd add <user> --file /srv/berth/other/htpasswd')
  t.is(addUserCommand('/home/me/datadir/htpasswd', {}), 'berth htpasswd add <user> --file /home/me/datadir/htpasswd')
  t.regex(ownershipFix('/srv/berth/datadir', image), /^on the host, run: sudo chown -R \d+:\d+ datadir certs/)
  t.regex(ownershipFix('/home/me/datadir', {}), /^fix the owner, e\.g\. sudo chown -R \d+:\d+ \/home\/me\/datadir$/)
})

test('the self-signed note points at the host copy of the CA inside the image', t => {
  const saved = process.env.BERTH_IN_CONTAINER
  process.env.BERTH_IN_CONTAINER = '1'
  t.teardown(() => {
    if (saved === undefined) delete process.env.BERTH_IN_CONTAINER
    else process.env.BERTH_IN_CONTAINER = saved
  })
  const provider = new SelfSignedCertificateProvider({ certsDir: '/srv/berth/certs', names: [] })
  t.is(
    provider.dockerHint('docker.example.com'),
    'self-signed TLS: docker clients must trust the local CA: copy ./certs/local-ca/ca.crt to /etc/docker/certs.d/docker.example.com/ca.crt on each client machine',
  )
})

/**
 * Connections without a login (issue 20, finding 4), against the real program. Under a small
 * open-file limit, hundreds of silent connections from one address neither make a logged-in client
 * from another address fail (manifest, blob and upload all served) nor surface as 500 EMFILE; once
 * the total is reached new clients are told 503 with Retry-After; and silent TLS connections are
 * closed after the handshake timeout (10 s) instead of Node's 120 s.
 */
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import path from 'node:path'
import test from 'ava'
import { DEFAULTS } from '../../src/config/settings.js'
import { connectionLimitFor } from '../../src/edge/connection-limits.js'
import { startBerth } from '../helpers/berth.js'
import { run } from '../helpers/procs.js'
import { createTestPki } from '../helpers/tls.js'
import { basic, fdCounts, pushBlob, pushImage, requestFrom, settle, sha256, size, startAuthBerth, tempDir } from './common.js'

const FILE_LIMIT = size(256, 1024)
const SILENT = size(300, 3000)
const MAX_CONNECTIONS = connectionLimitFor(FILE_LIMIT)
/** What `berth serve` derives per address from that total. */
const PER_ADDRESS = Math.min(DEFAULTS.maxConnectionsPerAddress, Math.floor(MAX_CONNECTIONS / 4))
const alice = { authorization: basic('alice', 'secret') }

/** Opens `count` TCP connections from `localAddress` that send nothing; resolves once each is connected or refused. */
async function silentConnections(port: number, localAddress: string, count: number, sockets: net.Socket[]): Promise<void> {
  for (let i = 0; i < count; i += 100) {
    await Promise.all(
      Array.from(
        { length: Math.min(100, count - i) },
        () =>
          new Promise<void>(resolve => {
            const socket = net.connect({ host: '127.0.0.1', port, localAddress }, () => resolve())
            socket.on('error', () => resolve())
            socket.on('close', () => resolve())
            sockets.push(socket)
          }),
      ),
    )
  }
}

const openSockets = (sockets: net.Socket[]) => sockets.filter(socket => !socket.destroyed && socket.readyState === 'open').length

test(`${SILENT} silent connections from one address under a ${FILE_LIMIT}-file limit: another client is served, the total answers 503, never EMFILE`, async t => {
  t.timeout(size(120_000, 300_000))
  const { berth } = await startAuthBerth(t, ['--max-connections', String(MAX_CONNECTIONS)])
  const pid = berth.pid!
  await run('prlimit', ['--pid', String(pid), `--nofile=${FILE_LIMIT}:${FILE_LIMIT}`])
  const image = await pushImage(berth.url, 'conn/app', 'v1', [randomBytes(256 * 1024)], alice)
  const sockets: net.Socket[] = []
  t.teardown(() => sockets.forEach(socket => socket.destroy()))

  await silentConnections(berth.port, '127.0.0.3', SILENT, sockets)
  await settle(async () => openSockets(sockets) <= PER_ADDRESS, 5000)
  t.log(`${openSockets(sockets)} of ${SILENT} silent connections from 127.0.0.3 held (limit ${PER_ADDRESS} per address, ${MAX_CONNECTIONS} in total)`)
  t.true(openSockets(sockets) <= PER_ADDRESS)

  const from = { headers: alice, localAddress: '127.0.0.250' }
  const manifest = await requestFrom(berth.url, '/v2/conn/app/manifests/v1', from)
  t.is(manifest.status, 200)
  t.is(sha256(manifest.body), image.digest)
  const blob = await requestFrom(berth.url, `/v2/conn/app/blobs/${image.layers[0]}`, from)
  t.is(blob.status, 200)
  t.is(sha256(blob.body), image.layers[0]!)
  await t.notThrowsAsync(pushBlob(berth.url, 'conn/app', randomBytes(64 * 1024), alice))

  // Fill the total from other addresses (each within its per-address limit).
  const fillers = MAX_CONNECTIONS - openSockets(sockets)
  for (let i = 0; i < Math.ceil(fillers / PER_ADDRESS); i++) {
    await silentConnections(berth.port, `127.0.1.${10 + i}`, Math.min(PER_ADDRESS, fillers - i * PER_ADDRESS), sockets)
  }
  await settle(async () => (await fdCounts(pid)).sockets >= MAX_CONNECTIONS, 5000)
  const refused = await requestFrom(berth.url, '/v2/conn/app/manifests/v1', { ...from, localAddress: '127.0.0.251' })
  t.is(refused.status, 503)
  t.is(refused.headers['retry-after'], '5')
  t.regex(refused.body.toString(), /"code":"UNAVAILABLE"/)
  const fds = await fdCounts(pid)
  t.log(`at the total: ${fds.total} descriptors open (${fds.sockets} sockets) under a limit of ${FILE_LIMIT}; a new client got ${refused.status}`)
  t.true(fds.total < FILE_LIMIT)

  sockets.splice(0).forEach(socket => socket.destroy())
  t.true(
    await settle(async () => (await requestFrom(berth.url, '/v2/conn/app/manifests/v1', from)).status === 200, 10_000),
    'served again once the silent connections are gone',
  )
  t.notRegex(berth.output(), /EMFILE|ENFILE|too many open files/i)
})

test('silent TCP connections to the HTTPS door are closed after the TLS handshake timeout', async t => {
  t.timeout(60_000)
  const dir = await tempDir(t)
  const pki = await createTestPki(path.join(dir, 'pki'))
  const berth = await startBerth({
    datadir: path.join(dir, 'datadir'),
    https: { domain: 'localhost', certFile: pki.certPath, keyFile: pki.keyPath, allowAnonymous: true },
  })
  t.teardown(() => berth.stop())
  const count = size(20, 60)
  const sockets: net.Socket[] = []
  t.teardown(() => sockets.forEach(socket => socket.destroy()))
  const started = Date.now()
  const closedAt: number[] = []
  await silentConnections(berth.port, '127.0.0.4', count, sockets)
  for (const socket of sockets) socket.once('close', () => closedAt.push(Date.now() - started))
  t.true(await settle(async () => closedAt.length === count, DEFAULTS.handshakeTimeout + 10_000), `${closedAt.length} of ${count} closed`)
  const last = Math.max(...closedAt)
  t.log(`${count} silent TLS connections closed after ${(Math.min(...closedAt) / 1000).toFixed(1)}–${(last / 1000).toFixed(1)} s`)
  t.true(Math.min(...closedAt) >= DEFAULTS.handshakeTimeout - 1000)
})

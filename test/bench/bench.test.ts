/**
 * The benchmark's own parts that can be checked without running it: the parsers of wrk and ab
 * output, the verdicts in the table, and the generated layers (real gzip of a real tar, exact
 * digests). `npm run bench -- --quick` is the end-to-end check (CI runs it).
 */
import test from 'ava'
import crypto from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import zlib from 'node:zlib'
import { parseAb, parseWrk } from './clients.js'
import { writeImageLayout, writeRandomBlob } from './content.js'
import { evaluate, markdownTable, table } from './report.js'
import { CommandError, redactArgs } from './util.js'

const wrkOutput = `Running 5s test @ https://127.0.0.1:40000/v2/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    1.20ms  20.00ms   80.00%
    Req/Sec     2.60k   200.00     3.00k    70.00%
  25934 requests in 5.00s, 6.11MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   5186.80
Transfer/sec:      1.22MB
`

const abOutput = `Server Software:
Server Hostname:        127.0.0.1
Document Path:          /v2/bench/tiny/manifests/latest
Concurrency Level:      16
Time taken for tests:   2.001 seconds
Complete requests:      4321
Failed requests:        0
Keep-Alive requests:    4321
Requests per second:    2159.42 [#/sec] (mean)
`

test('parseWrk reads the rate and counts non-2xx answers and socket errors as errors', t => {
  t.deepEqual(parseWrk(wrkOutput), { rps: 5186.8, requests: 25934, errors: 3 })
  const socket = wrkOutput.replace('  Non-2xx or 3xx responses: 3\n', '  Socket errors: connect 1, read 2, write 0, timeout 4\n')
  t.is(parseWrk(socket).errors, 7)
  t.throws(() => parseWrk('wrk: connection refused'), { message: /cannot read wrk output/ })
})

test('parseAb reads the rate and counts failed and non-2xx requests', t => {
  t.deepEqual(parseAb(abOutput), { rps: 2159.42, requests: 4321, errors: 0 })
  t.is(parseAb(abOutput.replace('Failed requests:        0', 'Failed requests:        0\nNon-2xx responses:      12')).errors, 12)
  t.throws(() => parseAb('SSL read failed'), { message: /cannot read ab output/ })
})

test('evaluate orients the ratio so > 1 means Berth is better, and checks every bound', t => {
  const faster = evaluate({ id: 'x', label: 'x', unit: 's', better: 'lower', minAdvantage: 1.3 }, { seed: [4, 3, 5], berth: [2, 2.5, 1] })
  t.is(faster.advantage, 2)
  t.true(faster.met)
  const rate = evaluate(
    { id: 'y', label: 'y', unit: 'MB/s', better: 'higher', minAdvantage: 1.5, ceiling: { key: 'diskFsyncWrite', share: 0.8 } },
    { seed: [100], berth: [200] },
    { sha256: 1, aes128gcm: 1, aes256gcm: 1, diskFsyncWrite: 300, loopbackTls: 1 },
  )
  t.is(rate.advantage, 2)
  t.false(rate.met, '200 MB/s is below 80% of a 300 MB/s disk')
  t.regex(rate.notes[0]!, /below 80% of diskFsyncWrite/)
  const memory = evaluate({ id: 'z', label: 'z', unit: 'MiB', better: 'lower', berthBound: 150 }, { berth: [160] })
  t.is(memory.advantage, undefined)
  t.false(memory.met)
  const errors = evaluate({ id: 'e', label: 'e', unit: 'count', better: 'lower', berthBound: 0 }, { berth: [0, 1, 1] })
  t.false(errors.met, 'a failed client in most runs is a miss')
  const md = markdownTable(table([faster, rate, memory, errors], undefined))
  t.regex(md, /\| x \| 4 s \[3–5\] \| 2 s \[1–2\.5\] \| 2× better \| ≥ 1\.3× \| yes \|/)
  t.regex(md, /\| e \| — \| 1 count \[0–1\] \| — \| = 0 count \| NO \|/)
})

test('generated layers are valid tar+gzip and their digests and diff_ids are exact', async t => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-content-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const image = await writeImageLayout(path.join(dir, 'image'), [3 * 65535 + 17, 0])
  const sha = (bytes: Buffer) => 'sha256:' + crypto.createHash('sha256').update(bytes).digest('hex')
  const blob = (digest: string) => readFile(path.join(image.dir, 'blobs', 'sha256', digest.slice(7)))
  const config = JSON.parse((await blob(image.config.digest)).toString()) as { rootfs: { diff_ids: string[] } }
  for (const [index, layer] of image.layers.entries()) {
    const compressed = await blob(layer.digest)
    t.is(sha(compressed), layer.digest)
    t.is(compressed.length, layer.size)
    const tar = zlib.gunzipSync(compressed)
    t.is(sha(tar), config.rootfs.diff_ids[index]!)
    t.is(tar.length % 512, 0)
    t.is(tar.subarray(257, 262).toString(), 'ustar')
    t.is(parseInt(tar.subarray(124, 135).toString(), 8), index === 0 ? 3 * 65535 + 17 : 0)
  }
  const index = JSON.parse(await readFile(path.join(image.dir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }
  t.is(index.manifests[0]!.digest, image.manifest.digest)
  const raw = await writeRandomBlob(path.join(dir, 'raw'), 1000)
  t.is(sha(await readFile(path.join(dir, 'raw'))), raw.digest)
})

test('a failed client command is reported without its credentials', t => {
  const args = ['copy', '--src-creds', 'bench:s3cret-pw', 'docker://x', '-u', 'bench:s3cret-pw', '--user', 'a:b2']
  const error = new CommandError('skopeo', args, { code: 1, signal: null, stdout: '', stderr: 'boom', seconds: 0 })
  t.false(error.message.includes('s3cret-pw'))
  t.false(error.message.includes('a:b2'))
  t.true(error.message.includes('--src-creds *** docker://x -u *** --user ***'))
  t.deepEqual(redactArgs(['-o', 'out', 'url']), ['-o', 'out', 'url'])
  t.deepEqual(redactArgs(['-H', 'Authorization: Basic YmVuY2g6cw==', '-A', 'bench:pw']), ['-H', 'Authorization: ***', '-A', '***'])
})

/**
 * `node --import tsx test/bench/metadata-index.ts [repositories] [tags] [--memory]`: the
 * metadata index's repository list over 1,000 repositories × 100 tags (issue 15 asks < 100 ms).
 * Writes the records through the driver (a temporary folder; small runs may use --memory),
 * loads them with a fresh MetadataIndex as `berth serve` does at start, then times each query
 * shape (median of 20, after one warm-up). A script, not a timed test.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import type { StorageDriver } from '../../src/storage/driver/storage-driver.js'
import { MetadataIndex } from '../../src/storage/metadata/metadata-index.js'
import { encodeRecord, RECORD_VERSION } from '../../src/storage/metadata/records.js'
import type { RepositoryQuery } from '../../src/storage/metadata/view.js'
import { indexManifestPath, indexTagPath } from '../../src/storage/paths.js'

const args = process.argv.slice(2).filter(a => !a.startsWith('--'))
const repositories = Number(args[0] ?? 1000)
const tagsPerRepository = Number(args[1] ?? 100)
// The in-memory driver scans every key per call (made for small tests): the folder is the default.
const onDisk = !process.argv.includes('--memory')

async function fill(driver: StorageDriver): Promise<void> {
  const start = Date.parse('2024-01-01T00:00:00Z')
  const writes: Promise<void>[] = []
  for (let r = 0; r < repositories; r++) {
    const name = `team-${r % 50}/app-${r}`
    for (let t = 0; t < tagsPerRepository; t++) {
      const digest = `sha256:${randomBytes(32).toString('hex')}`
      const pushedAt = new Date(start + (r * tagsPerRepository + t) * 60_000).toISOString()
      writes.push(
        driver.putContent(
          indexManifestPath(name, digest),
          encodeRecord({
            v: RECORD_VERSION,
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            size: 1_000_000 + ((r * 7919 + t * 104729) % 50_000_000),
            created: pushedAt,
            labels: { 'org.opencontainers.image.source': `https://example.test/${name}` },
            pushedAt,
          }),
        ),
        driver.putContent(indexTagPath(name, `v${t}`), encodeRecord({ v: RECORD_VERSION, digest, pushedAt })),
      )
      if (writes.length >= 256) await Promise.all(writes.splice(0))
    }
  }
  await Promise.all(writes)
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

async function main(): Promise<void> {
  const folder = onDisk ? await mkdtemp(join(tmpdir(), 'berth-index-bench-')) : undefined
  const driver = folder === undefined ? new InMemoryDriver() : new FilesystemDriver(join(folder, 'data'))
  try {
    let began = performance.now()
    await fill(driver)
    console.log(
      `wrote ${repositories * tagsPerRepository * 2} records (${repositories} repositories × ${tagsPerRepository} tags) in ${(performance.now() - began).toFixed(0)} ms (${driver.name})`,
    )
    const index = new MetadataIndex(driver)
    began = performance.now()
    await index.ready()
    console.log(`loaded the view in ${(performance.now() - began).toFixed(0)} ms; heap used ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB`)
    const queries: [string, RepositoryQuery][] = [
      ['by name, first page of 50', { sort: 'name', limit: 50 }],
      ['by last pushed, first page of 50', { sort: 'pushed', limit: 50 }],
      ['by size, first page of 50', { sort: 'size', limit: 50 }],
      ['search "app-9", by pushed', { search: 'app-9', sort: 'pushed', limit: 50 }],
      ['prefix "team-7/", by name', { prefix: 'team-7/', limit: 50 }],
    ]
    for (const [label, query] of queries) {
      await index.listRepositories(query)
      const times: number[] = []
      let total = 0
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now()
        total = (await index.listRepositories(query)).total
        times.push(performance.now() - t0)
      }
      console.log(`${label.padEnd(36)} median ${median(times).toFixed(2)} ms, max ${Math.max(...times).toFixed(2)} ms (${total} matching)`)
    }
    // After a push, one repository's summary is computed again; the others stay cached.
    const times: number[] = []
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now()
      await index.listTags(`team-${i % 50}/app-${i}`, { sort: 'pushed' })
      times.push(performance.now() - t0)
    }
    console.log(`${'tags of one repository, by pushed'.padEnd(36)} median ${median(times).toFixed(2)} ms`)
  } finally {
    if (folder !== undefined) await rm(folder, { recursive: true, force: true })
  }
}

await main()

/**
 * The S3 store's own ceiling for `curl-get` (issue 21): the same blob `curl-get` fetched through
 * Berth, fetched by curl straight from the store (SigV4-signed GET of its `data` object, plain HTTP
 * as both registries reach it), in the same round. A registry on S3 serves a blob at most as fast
 * as the store hands it out and TLS carries it, so `curl-get` is read against both.
 */
import { blobDataPath } from '../../src/storage/paths.js'
import type { BlobRef } from './content.js'
import type { CaseDef, CaseResult } from './report.js'
import type { S3Target } from './stacks.js'
import { fmt, run } from './util.js'

export const STORE_CEILING_CASE = 'curl-get-store'

export function storeCeilingCaseDef(big: string): CaseDef {
  return {
    id: STORE_CEILING_CASE,
    label: `curl GET of the same ${big} blob straight from the S3 store (the ceiling on S3; Berth column)`,
    unit: 'MB/s',
    better: 'higher',
  }
}

/** The object key distribution's layout gives a blob under `prefix`. */
function blobDataKey(prefix: string, digest: string): string {
  return `${prefix.replace(/^\/+|\/+$/g, '')}${blobDataPath(digest)}`
}

/** GETs the blob's object from the store with curl and returns the seconds it took (curl's own clock). */
export async function curlGetFromStore(s3: S3Target, blob: BlobRef): Promise<number> {
  const url = `${s3.endpoint.replace(/\/+$/, '')}/${s3.bucket}/${blobDataKey(s3.prefix, blob.digest)}`
  const result = await run('curl', [
    '-sS',
    '-o',
    '/dev/null',
    '--aws-sigv4',
    `aws:amz:${s3.region}:s3`,
    '--user',
    `${s3.accessKeyId}:${s3.secretAccessKey}`,
    // curl 7.88 signs without this header, which S3 requires on every request (RGW: 403).
    '-H',
    'x-amz-content-sha256: UNSIGNED-PAYLOAD',
    '-w',
    '%{http_code} %{size_download} %{time_total}',
    url,
  ])
  const [status, size, seconds] = result.stdout.trim().split(' ').map(Number) as [number, number, number]
  if (status !== 200) throw new Error(`GET from the store: expected HTTP 200, got ${status}`)
  if (size !== blob.size) throw new Error(`GET from the store returned ${size} bytes, expected ${blob.size}`)
  return seconds
}

/** Notes each stack's `curl-get` as a share of the store's own GET (not a target: a reading aid). */
export function noteStoreCeiling(results: CaseResult[]): void {
  const get = results.find(result => result.id === 'curl-get')
  const ceiling = results.find(result => result.id === STORE_CEILING_CASE)?.stacks.berth?.median
  if (get === undefined || ceiling === undefined || ceiling <= 0) return
  const berth = get.stacks.berth?.median
  const seed = get.stacks.seed?.median
  const shares = [...(berth !== undefined ? [`Berth at ${fmt(berth / ceiling)}×`] : []), ...(seed !== undefined ? [`the seed at ${fmt(seed / ceiling)}×`] : [])]
  if (shares.length > 0) get.notes.push(`${shares.join(', ')} the store's own GET of the same blob (${fmt(ceiling)} MB/s, plain HTTP)`)
}

/** `GET|HEAD|DELETE /v2/<name>/blobs/<digest>` (end-2, end-10). */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { FetchedBlob } from '../../mirror/mirror.js'
import type { BlobReader } from '../../storage/driver/storage-driver.js'
import { finished } from 'node:stream/promises'
import { responseTurn } from '../../http/response-turn.js'
import { parseRangeHeader } from '../headers.js'
import type { Meter } from '../../http/exchange.js'
import { actorOf, type Handler } from '../routes.js'
import { pathDigest, repositoryName } from './params.js'

export const getBlob: Handler = async ({ exchange, request, response, params, query, store, mirror }) => {
  let name = repositoryName(params)
  const digest = pathDigest(params)
  const headers: Record<string, string | number> = {
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': digest.value,
    ETag: `"${digest.value}"`,
    'Cache-Control': 'max-age=31536000',
    'Accept-Ranges': 'bytes',
  }
  const mirrored = await mirror?.route(name, query)
  if (mirrored !== undefined) {
    name = mirrored.name
    const fetched = await mirror?.fetchBlob(mirrored, digest, {
      head: request.method === 'HEAD',
      range: request.headers.range !== undefined,
      id: exchange.id,
    })
    if (fetched !== undefined) return sendFetched(request, response, exchange.meter, headers, fetched)
  }
  const blob = await store.blobs.stat(name, digest)
  // RFC 9110 §13.1.5: a Range is honoured only when If-Range (if any) still matches.
  const ifRange = request.headers['if-range']
  const rangeHeader = ifRange === undefined || ifRange === `"${digest.value}"` ? request.headers.range : undefined
  const range = parseRangeHeader(rangeHeader, blob.size)
  if (range === 'unsatisfiable') {
    response.writeHead(416, { ...headers, 'Content-Range': `bytes */${blob.size}`, 'Content-Length': 0 })
    response.end()
    return
  }
  const start = range?.start ?? 0
  const length = range === undefined ? blob.size : range.end - range.start + 1
  if (range !== undefined) headers['Content-Range'] = `bytes ${range.start}-${range.end}/${blob.size}`
  headers['Content-Length'] = length
  if (request.method === 'HEAD') {
    response.writeHead(range === undefined ? 200 : 206, headers)
    response.end()
    return
  }
  // As distribution on S3: send the client to the store for the bytes (it repeats its Range there).
  const redirect = await store.blobs.redirectUrl(digest)
  if (redirect !== undefined) {
    response.writeHead(307, { Location: redirect, 'Docker-Content-Digest': digest.value, 'Content-Length': 0 })
    response.end()
    return
  }
  // A pipelined request's response waits in Node's queue until the ones before it are sent; opening
  // the blob only when it gets the socket keeps a client that pipelines many GETs and reads slowly
  // from holding a read-ahead buffer per queued request (test/hardening/slow-clients, slow read).
  if (!(await responseTurn(request, response))) return // the client left first
  const source = await store.blobs.open(name, digest, start, length)
  response.writeHead(range === undefined ? 200 : 206, headers)
  await send(source, response, exchange.meter)
}

/**
 * A blob the mirror is downloading (or, for HEAD, only knows the size of): 200 with the upstream's
 * length, and the bytes as they arrive. No Range here: the mirror answers ranges from storage.
 */
async function sendFetched(
  request: IncomingMessage,
  response: ServerResponse,
  meter: Meter,
  headers: Record<string, string | number>,
  fetched: FetchedBlob,
): Promise<void> {
  if (fetched.size !== undefined) headers['Content-Length'] = fetched.size
  if (request.method === 'HEAD' || fetched.body === undefined) {
    fetched.body?.destroy()
    response.writeHead(200, headers)
    response.end()
    return
  }
  if (!(await responseTurn(request, response))) return void fetched.body.destroy()
  response.writeHead(200, headers)
  await send(fetched.body, response, meter)
}

/**
 * Streams `source` to the client with backpressure (as stream.pipeline did), and hands each chunk
 * back to its reader once the socket has taken its bytes, when the reader can (BlobReader.recycle):
 * a download then cycles through a few read buffers instead of leaving one dead buffer per chunk
 * for the garbage collector.
 *
 * A reader with `chunkBytes` starts at its smallest chunk, and each next read may be a
 * quarter of what the client has taken so far (256 KiB once it has 1 MiB): a client that stops
 * reading holds two chunks of about a quarter of what it took, not two of 256 KiB. The kernel's
 * send buffer fills first, so a slow reader on the internet stops at 16 KiB chunks.
 */
async function send(source: BlobReader, response: ServerResponse, meter: Meter): Promise<void> {
  const adaptive = source.chunkBytes !== undefined
  if (adaptive) source.chunkBytes = 0
  let taken = 0
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      // One chunk at a time in the socket's queue (the stream's 64 KiB high-water mark would let
      // four 16 KiB chunks wait there): the next is written once this one is in the kernel.
      await written(response, chunk)
      taken += chunk.byteLength
      meter.sent += chunk.byteLength
      if (adaptive) source.chunkBytes = taken / 4
      source.recycle?.(chunk) // the socket no longer needs its bytes
    }
    response.end()
    await finished(response)
  } finally {
    source.destroy()
  }
}

/**
 * Writes `chunk` and resolves when the socket has handed all of it to the kernel; rejects when the
 * write fails or the connection closes first (the chunk is then left to the garbage collector).
 */
function written(response: ServerResponse, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const premature = (): void => {
      response.off('close', premature)
      reject(Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }))
    }
    if (response.destroyed) return premature()
    response.on('close', premature)
    response.write(chunk, error => {
      response.off('close', premature)
      if (error) reject(error)
      else resolve()
    })
  })
}

export const deleteBlob: Handler = async ({ exchange, response, params, store, events }) => {
  const name = repositoryName(params)
  const digest = pathDigest(params)
  await store.blobs.unlink(name, digest)
  events.emit({ action: 'delete', repository: name, target: 'blob', reference: digest.value }, actorOf(exchange))
  response.writeHead(202, { 'Content-Length': 0, 'Docker-Content-Digest': digest.value })
  response.end()
}

/**
 * A Berth edge with the web UI, in this process: the engine with the metadata index on the
 * in-memory driver, htpasswd users (password `<user>-password`), optional access rules, and a
 * second plain server on the engine alone for pushing without logging in.
 */
import type { ExecutionContext } from 'ava'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { TokenKeys } from '../../src/access/token-keys.js'
import { TokenService } from '../../src/access/token-service.js'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { startEdge, type Edge } from '../../src/edge/edge.js'
import type { RulePolicy } from '../../src/edge/steps/access-control.js'
import { FileCertStore } from '../../src/edge/tls/cert-store.js'
import type { RegistryEvent } from '../../src/events/events.js'
import { createRegistryApp, type RegistryApp } from '../../src/registry/app.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import { MetadataIndex } from '../../src/storage/metadata/metadata-index.js'
import { StorageSurvey } from '../../src/storage/storage-survey.js'
import { Sessions } from '../../src/web/sessions.js'
import { LOCAL_TEST_EDGE } from '../helpers/edge.js'
import { request, type HttpResponse, type RequestOptions } from '../helpers/http.js'

export interface UiEdge {
  readonly url: string
  /** The engine without the edge: push here. */
  readonly engineUrl: string
  readonly app: RegistryApp
  readonly index: MetadataIndex
  /** The storage page's survey (grace period 0, so fresh garbage counts); refreshed only when a test asks. */
  readonly survey: StorageSurvey
  readonly driver: InMemoryDriver
  readonly events: RegistryEvent[]
  /** Sets the session clock (ms since the epoch). */
  clock: number
  readOnly: boolean
}

export async function startUiEdge(t: ExecutionContext, options: { users?: readonly string[]; policy?: RulePolicy; host?: string } = {}): Promise<UiEdge> {
  const root = await mkdtemp(path.join(tmpdir(), 'berth-ui-'))
  const cleanups: (() => Promise<void> | void)[] = [() => rm(root, { recursive: true, force: true })]
  t.teardown(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup()
  })
  const htpasswd = path.join(root, 'htpasswd')
  if (options.users !== undefined) await writeFile(htpasswd, options.users.map(user => `${user}:${hashPassword(`${user}-password`, 4)}`).join('\n') + '\n')
  const driver = new InMemoryDriver()
  const index = new MetadataIndex(driver)
  const survey = new StorageSurvey(driver, { gracePeriodMs: 0 })
  const events: RegistryEvent[] = []
  const sink = { emit: (event: RegistryEvent) => void events.push(event) }
  const app = createRegistryApp({ driver, observer: index, events: sink })
  const engine = http.createServer(app.handle)
  await new Promise<void>(resolve => engine.listen(0, '127.0.0.1', resolve))
  cleanups.push(() => new Promise<void>(resolve => engine.close(() => resolve())))
  const state = { clock: Date.now(), readOnly: false }
  let access
  if (options.policy !== undefined) {
    const keys = await TokenKeys.open(new FileCertStore(path.join(root, 'certs')), { maintainEveryMs: 0 })
    cleanups.push(() => keys.close())
    const policy = options.policy
    access = { policy: () => policy, tokens: new TokenService({ keys, issuer: 'berth', service: 'berth-test' }) }
  }
  const edge: Edge = await startEdge({
    ...LOCAL_TEST_EDGE,
    htpasswdPath: htpasswd,
    engine: app.serve,
    events: sink,
    readOnly: () => state.readOnly,
    ...(access !== undefined ? { access } : {}),
    ui: {
      sessions: new Sessions({ key: Buffer.alloc(32, 7), now: () => state.clock }),
      metadata: index,
      survey,
      store: app.store,
      mirrorPrefixes: [],
    },
  })
  cleanups.push(() => edge.close())
  return Object.assign(state, {
    url: edge.urls.local!,
    engineUrl: `http://127.0.0.1:${(engine.address() as { port: number }).port}`,
    app,
    index,
    survey,
    driver,
    events,
  })
}

/** A browser-like client: keeps the session cookie and the CSRF token, sends Origin on changes. */
export class UiClient {
  cookie: string | undefined
  csrf = ''

  constructor(readonly edge: UiEdge) {}

  async call(method: string, pathAndQuery: string, options: RequestOptions & { csrf?: string | false; origin?: string | false } = {}): Promise<HttpResponse> {
    const headers: Record<string, string | number> = { ...options.headers }
    if (this.cookie !== undefined) headers['cookie'] = this.cookie
    const origin = options.origin ?? new URL(this.edge.url).origin
    if (method !== 'GET' && origin !== false) headers['origin'] = origin
    const csrf = options.csrf ?? this.csrf
    if (method !== 'GET' && csrf !== false) headers['x-berth-csrf'] = csrf
    const response = await request(this.edge.url, pathAndQuery, { ...options, method, headers })
    const set = response.headers['set-cookie']?.[0]
    if (set !== undefined) this.cookie = set.split(';')[0]
    if (typeof response.json?.csrf === 'string') this.csrf = response.json.csrf
    return response
  }

  async start(): Promise<HttpResponse> {
    return this.call('GET', '/api/ui/session')
  }

  async login(user: string, password = `${user}-password`): Promise<HttpResponse> {
    if (this.cookie === undefined) await this.start()
    return this.call('POST', '/api/ui/login', { body: JSON.stringify({ user, password }), headers: { 'content-type': 'application/json' } })
  }
}

export interface PushOptions {
  labels?: Record<string, string>
  annotations?: Record<string, string>
  /** Layer bytes (random of this size), one layer per entry. */
  layers?: readonly number[]
  subject?: { digest: string; size: number; mediaType: string }
  artifactType?: string
}

/** Pushes an image (config with labels and history, random layers) and tags it; resolves with its digest and size. */
export async function pushImage(
  engineUrl: string,
  name: string,
  tag: string | undefined,
  options: PushOptions = {},
): Promise<{ digest: string; size: number }> {
  const { pushBlob, putManifest, sha256, OCI_MANIFEST } = await import('../registry/fixtures.js')
  const { randomBytes } = await import('node:crypto')
  const layerSizes = options.layers ?? [1000]
  const layers = []
  for (const size of layerSizes) {
    const bytes = randomBytes(size)
    layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: await pushBlob(engineUrl, name, bytes), size })
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: '2026-01-02T03:04:05Z',
      config: { Labels: options.labels ?? {} },
      rootfs: { type: 'layers', diff_ids: [] },
      history: [...layers.map((_, i) => ({ created_by: `RUN step ${i}` })), { created_by: 'LABEL x=y', empty_layer: true }],
    }),
  )
  const configDescriptor = options.artifactType
    ? { mediaType: 'application/vnd.oci.empty.v1+json', digest: await pushBlob(engineUrl, name, '{}'), size: 2 }
    : { mediaType: 'application/vnd.oci.image.config.v1+json', digest: await pushBlob(engineUrl, name, config), size: config.length }
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      ...(options.artifactType ? { artifactType: options.artifactType } : {}),
      config: configDescriptor,
      layers,
      ...(options.subject ? { subject: options.subject } : {}),
      ...(options.annotations ? { annotations: options.annotations } : {}),
    }),
  )
  const digest = sha256(manifest)
  const response = await putManifest(engineUrl, name, tag ?? digest, manifest, OCI_MANIFEST)
  if (response.status !== 201) throw new Error(`push ${name}:${tag}: ${response.status} ${response.body.toString()}`)
  return { digest, size: manifest.length }
}

/** Pushes an index of two platforms plus a buildx attestation manifest, tagged `tag`. */
export async function pushIndex(engineUrl: string, name: string, tag: string): Promise<{ digest: string; children: string[] }> {
  const { putManifest, sha256, OCI_MANIFEST, OCI_INDEX } = await import('../registry/fixtures.js')
  const amd = await pushImage(engineUrl, name, undefined)
  const arm = await pushImage(engineUrl, name, undefined)
  const attestation = await pushImage(engineUrl, name, undefined, { artifactType: 'application/vnd.in-toto+json' })
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: OCI_MANIFEST, digest: amd.digest, size: amd.size, platform: { os: 'linux', architecture: 'amd64' } },
        { mediaType: OCI_MANIFEST, digest: arm.digest, size: arm.size, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        {
          mediaType: OCI_MANIFEST,
          digest: attestation.digest,
          size: attestation.size,
          platform: { os: 'unknown', architecture: 'unknown' },
          annotations: { 'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': amd.digest },
        },
      ],
    }),
  )
  const response = await putManifest(engineUrl, name, tag, index, OCI_INDEX)
  if (response.status !== 201) throw new Error(`push index: ${response.status} ${response.body.toString()}`)
  return { digest: sha256(index), children: [amd.digest, arm.digest] }
}

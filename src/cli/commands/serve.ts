/**
 * `berth serve`: start the registry. Flags come from the settings table (config/settings.ts), so
 * every flag has its `BERTH_*` variable and config-file key. Prints where it listens, where it
 * stores, which certificate it serves and how to log in; stops gracefully on SIGINT/SIGTERM.
 */
import { readFile } from 'node:fs/promises'
import { Command, Option } from 'commander'
import type { Config } from '../../config/config.js'
import { CONFIG_ENV, loadConfig } from '../../config/load.js'
import { SETTINGS, type Setting, type SettingKey } from '../../config/settings.js'
import { isLoopbackHost } from '../../config/values.js'
import { addUserCommand, isInContainer } from '../../container.js'
import { inspectClientCa, warnIfDomainsUncovered } from '../../edge/tls/certificate-checks.js'
import { createLogger, type Logger } from '../../log.js'
import { formatBytes } from '../../storage/usage.js'
import type { RunningServer } from '../../server.js'
import { CliError } from '../errors.js'
import type { CliIo } from '../io.js'

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value]
}

export function optionFor(setting: Setting): Option {
  const flags = `--${setting.flag}${setting.argument ? ` ${setting.argument}` : ''}`
  const extra = [setting.defaultText ? `default: ${setting.defaultText}` : undefined, `env: ${setting.env}`].filter(Boolean).join('; ')
  const option = new Option(flags, `${setting.description} (${extra})`)
  if (setting.isList) option.argParser(collect)
  return option
}

export function serveCommand(io: CliIo): Command {
  const command = new Command('serve')
    .summary('run the registry (HTTPS edge + engine, or --local HTTP on :5000)')
    .description(
      'Run the registry. Every flag can also be set as a BERTH_* environment variable or in a YAML/JSON ' +
        'config file (--config); flags win over the environment, which wins over the file.',
    )
    .option('-c, --config <file>', `YAML or JSON file of settings, keys as the flags (e.g. https-port: 8443) (env: ${CONFIG_ENV})`)
  for (const setting of SETTINGS as readonly Setting[]) command.addOption(optionFor(setting))
  command.addHelpText(
    'after',
    '\nExamples:\n' +
      '  berth serve --local                                        http://127.0.0.1:5000 (this machine only), data in ./datadir/data\n' +
      '  berth serve --local --host 0.0.0.0                         the same, open to other machines (add a user first)\n' +
      '  berth htpasswd add alice                                   HTTPS mode needs a user first (or --allow-anonymous)\n' +
      '  berth serve --domain registry.example.com --tls-cert /etc/letsencrypt/live/registry.example.com/fullchain.pem \\\n' +
      '              --tls-key /etc/letsencrypt/live/registry.example.com/privkey.pem\n' +
      '  berth serve --domain registry.example.com --acme --acme-email me@example.com --acme-agree-tos\n' +
      '  BERTH_DOMAIN=registry.example.com BERTH_SELF_SIGNED=1 berth serve',
  )
  command.action(async (options: Record<string, unknown>) => {
    const flags: Partial<Record<SettingKey, unknown>> = {}
    for (const setting of SETTINGS) if (options[setting.key] !== undefined) flags[setting.key] = options[setting.key]
    const configFile = typeof options.config === 'string' ? options.config : undefined
    const sources = { flags, env: io.env, cwd: io.cwd, ...(configFile !== undefined ? { configFile } : {}) }
    const config = await loadConfig(sources)
    const logger = createLogger({ level: config.logLevel, format: config.logFormat, write: line => io.stderr.write(line + '\n') })
    for (const warning of config.warnings) logger.warn(warning)
    const clientCas = config.clientCa !== undefined ? await checkClientCa(config.clientCa, logger) : undefined
    // Loaded here, not at the top: `berth htpasswd`/`doctor`/`--help` need none of the server's code.
    const { ListenError, startServer } = await import('../../server.js')
    let server: RunningServer
    try {
      server = await startServer(config, logger)
    } catch (error) {
      if (error instanceof ListenError) throw new CliError(error.message, 1, { cause: error })
      throw error
    }
    warnIfDomainsUncovered(server.certificate, config.domains, logger)
    io.stdout.write(summary(config, server, { env: io.env, ...(clientCas !== undefined ? { clientCas } : {}) }))
    // SIGHUP: read the settings again (read-only mode) and the access file, without a restart.
    const reload = () => {
      logger.info('SIGHUP: reading the settings and the access file again')
      loadConfig(sources).then(
        next => server.reload(next),
        (error: unknown) => logger.error('settings not reloaded; keeping the ones in force', { error: (error as Error).message }),
      )
    }
    process.on('SIGHUP', reload)
    try {
      await waitForSignal(server, logger)
    } finally {
      process.off('SIGHUP', reload)
    }
  })
  return command
}

/**
 * Refuses a `--client-ca` file TLS could not use (exit 2: every client would get 400) and logs
 * what only may hurt (an expiring CA). Resolves with the subjects of the CAs clients must use.
 */
export async function checkClientCa(file: string, logger: Pick<Logger, 'warn'>, now = Date.now()): Promise<string[]> {
  let pem: string
  try {
    pem = await readFile(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (error as Error).message
    throw new CliError(`--client-ca ${file}: ${reason}`, 2, { cause: error })
  }
  const { subjects, problems } = inspectClientCa(pem, now)
  const failure = problems.find(problem => problem.severity === 'fail')
  if (failure !== undefined) throw new CliError(`--client-ca ${file}: ${failure.message}; give the PEM file of the CA that signs your clients' certificates`, 2)
  for (const problem of problems) logger.warn(`--client-ca ${file}: ${problem.message}`)
  return subjects
}

export interface SummaryContext {
  /** The environment berth runs in (hints differ inside its container image). */
  readonly env?: NodeJS.ProcessEnv
  /** Subjects of the `--client-ca` CAs, when client certificates are required. */
  readonly clientCas?: readonly string[]
}

/** What a person needs after start: where to reach it, where data lives, how to log in and push. */
export function summary(config: Config, server: RunningServer, context: SummaryContext = {}): string {
  const env = context.env ?? process.env
  const lines: string[] = []
  const add = (label: string, text: string) => lines.push(`  ${label.padEnd(12)}${text}`)
  lines.push('Berth registry is running')
  if (config.mode === 'local') {
    add('listening', `${server.urls.local ?? ''} (plain HTTP${scopeOf(config.host)})`)
  } else {
    add('listening', `${server.urls.https ?? ''} (HTTPS)${server.urls.http ? `, ${server.urls.http} (redirects to HTTPS, ACME challenges)` : ''}`)
  }
  if (server.metricsUrl !== undefined) add('metrics', `${server.metricsUrl}/metrics (Prometheus, no login)`)
  add('storing', server.storage ?? `nothing here: fronting ${server.upstream}`)
  if (server.certificate) {
    add(
      'certificate',
      `${server.certificateSource ?? ''}: ${server.certificate.names.join(', ')}, valid until ${server.certificate.notAfter.toISOString().slice(0, 10)}`,
    )
  } else if (server.certificateSource) {
    add('certificate', `${server.certificateSource}: not obtained yet (see the log)`)
  }
  if (server.access !== undefined) {
    add(
      'access',
      `${server.access.file} (${server.access.rules} rule${server.access.rules === 1 ? '' : 's'}; check one: berth access check <user> <repository> <action>)`,
    )
  }
  if (config.readOnly) add('read-only', 'pushes and deletes are refused until it is switched off (edit the config file, then SIGHUP)')
  if (server.auth) {
    add('users', `${server.auth.file} (${server.auth.users} user${server.auth.users === 1 ? '' : 's'})`)
  } else if (server.access !== undefined) {
    add('users', `none: callers get what the access rules give anonymous (to add one: ${addUserCommand(config.htpasswd, env)})`)
  } else if (config.mode === 'local') {
    add('users', `none: no login needed (to require one: ${addUserCommand(config.htpasswd, env)})`)
  } else {
    add('users', `NONE: anyone who reaches this port can push and pull. Add a user: ${addUserCommand(config.htpasswd, env)}`)
  }
  const host = registryHost(config, server)
  if (config.clientCa !== undefined) {
    const signers = context.clientCas !== undefined && context.clientCas.length > 0 ? ` signed by ${context.clientCas.join(', ')}` : ''
    add('clients', `must present a certificate${signers} (--client-ca ${config.clientCa}); docker: /etc/docker/certs.d/${host}/client.cert and client.key`)
  }
  if (server.auth) add('log in', `docker login ${host}`)
  add('push', `docker tag <image> ${host}/<name> && docker push ${host}/<name>`)
  add('pull', `docker pull ${host}/<name>`)
  for (const mirror of config.mirrors) {
    const isDefault = mirror.prefix === config.mirrorDefault ? ', and names that are no repository here' : ''
    add('mirror', `${host}/${mirror.prefix}/<name> and ?ns=${mirror.prefix}${isDefault} from ${mirror.url} (read-only)`)
  }
  if (config.mirrorMaxSizeBytes !== undefined)
    add('mirror cap', `${formatBytes(config.mirrorMaxSizeBytes)} of cached content (least recently pulled images evicted first; pushed images never)`)
  for (const hint of server.hints) add('note', hint)
  const exposure = exposureOf(config, server, env)
  if (exposure !== undefined) add(exposure.label, exposure.text)
  return lines.join('\n') + '\n'
}

function isWildcard(host: string | undefined): boolean {
  return host === undefined || host === '0.0.0.0' || host === '::'
}

/** `, this machine only` / `, every interface` after the listening URL (a wildcard bind shows as localhost there). */
function scopeOf(host: string | undefined): string {
  if (host !== undefined && isLoopbackHost(host)) return ', this machine only'
  return isWildcard(host) ? ', every interface' : ''
}

/**
 * The banner line about who can reach a registry that asks for no login: a warning when it listens
 * beyond loopback (local mode with --host, HTTPS with --allow-anonymous). In the container image the
 * published port decides instead, so the line says what the compose files publish.
 */
function exposureOf(config: Config, server: RunningServer, env: NodeJS.ProcessEnv): { label: string; text: string } | undefined {
  const isLoopback = config.host !== undefined && isLoopbackHost(config.host)
  if (isLoopback && isInContainer(env)) {
    return {
      label: 'note',
      text: `listening on ${config.host ?? ''} inside the container: a published port cannot reach it (unless the container uses the host's network); set BERTH_HOST=0.0.0.0, as docker-compose.local.yml does`,
    }
  }
  if (isLoopback || (server.auth !== undefined && server.auth.users > 0)) return undefined
  if (config.mode === 'local' && isInContainer(env)) {
    return {
      label: 'note',
      text: 'no login: anyone who reaches the published port can push, pull and delete (docker-compose.local.yml publishes it on 127.0.0.1 only)',
    }
  }
  const where = isWildcard(config.host) ? 'every interface' : (config.host ?? '')
  const why = config.mode === 'local' ? `--host ${config.host ?? ''}` : '--allow-anonymous'
  const fix =
    config.mode === 'local'
      ? `add a user (${addUserCommand(config.htpasswd, env)}) or leave out --host to listen on 127.0.0.1 only`
      : `add a user (${addUserCommand(config.htpasswd, env)})`
  return {
    label: 'WARNING',
    text: `reachable from other machines without a login (${why}, listening on ${where}): anyone on the network can push, pull and delete; ${fix}`,
  }
}

/** The name clients put in front of image names: `localhost:5000`, `registry.example.com`, ... */
function registryHost(config: Config, server: RunningServer): string {
  if (config.mode === 'local') {
    const url = new URL(server.urls.local ?? `http://localhost:${config.port}`)
    return isWildcard(config.host) || isLoopbackHost(url.hostname) ? `localhost:${url.port}` : url.host
  }
  const name = config.domains[0] ?? server.certificate?.names[0] ?? 'localhost'
  const port = server.urls.https ? new URL(server.urls.https).port : String(config.httpsPort)
  return port === '' || port === '443' ? name : `${name}:${port}`
}

/** Resolves after the server has closed on SIGINT/SIGTERM; a second signal exits at once. */
function waitForSignal(server: RunningServer, logger: Logger): Promise<void> {
  return new Promise(resolve => {
    let stopping = false
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn('second signal: exiting now', { signal })
        process.exit(130)
      }
      stopping = true
      logger.info('shutting down: letting requests in flight finish (up to 10 s; send the signal again to stop now)', { signal })
      server.close(10_000).then(
        () => {
          logger.info('stopped')
          process.off('SIGINT', stop)
          process.off('SIGTERM', stop)
          resolve()
        },
        (error: unknown) => {
          logger.error('error while shutting down', { error: (error as Error).message })
          resolve()
        },
      )
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
  })
}

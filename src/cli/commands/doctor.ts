/**
 * `berth doctor`: checks what breaks deployments — ports, DNS, certificates, file permissions,
 * free disk — with the same flags, environment and config file as `serve`, and prints what to fix.
 * Exit code 0 when nothing failed (warnings allowed), 1 otherwise.
 */
import { sep } from 'node:path'
import { Command } from 'commander'
import { CONFIG_ENV, loadConfig } from '../../config/load.js'
import { SETTINGS, type Setting, type SettingKey } from '../../config/settings.js'
import {
  checkAccessFile,
  checkCertificateFiles,
  checkClientCaFile,
  checkDatadir,
  checkDomain,
  checkHtpasswdFile,
  checkPort,
  checkPrivateFile,
  findKeyFiles,
  findStoredCertificates,
  portsOf,
  type CheckResult,
} from '../doctor-checks.js'
import { CliError } from '../errors.js'
import type { CliIo } from '../io.js'
import { optionFor } from './serve.js'

const MARK = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL' } as const

export function doctorCommand(io: CliIo): Command {
  const command = new Command('doctor')
    .summary('check ports, DNS, certificates, permissions and disk, and say what to fix')
    .description('Check a deployment before (or while) running it. Takes the same settings as serve.')
    .option('-c, --config <file>', `YAML or JSON file of settings (env: ${CONFIG_ENV})`)
  for (const setting of SETTINGS as readonly Setting[]) command.addOption(optionFor(setting))
  command.action(async (options: Record<string, unknown>) => {
    const flags: Partial<Record<SettingKey, unknown>> = {}
    for (const setting of SETTINGS) if (options[setting.key] !== undefined) flags[setting.key] = options[setting.key]
    const configFile = typeof options.config === 'string' ? options.config : undefined
    const config = await loadConfig({ flags, env: io.env, cwd: io.cwd, allowNoCertificate: true, ...(configFile ? { configFile } : {}) })

    const results: CheckResult[] = []
    for (const { port, label } of portsOf(config)) results.push(await checkPort(port, label, config.host))
    for (const domain of config.domains) results.push(await checkDomain(domain))
    if (config.mode === 'https' && config.certificate.kind === 'none') {
      results.push({
        status: 'fail',
        subject: 'certificate',
        message: 'no certificate source',
        fix: 'add --tls-cert/--tls-key, --acme or --self-signed (or --local for plain HTTP)',
      })
    }
    if (config.certificate.kind === 'files') {
      results.push(...(await checkCertificateFiles(config.certificate.cert, config.certificate.key, config.domains)))
      const key = await checkPrivateFile(config.certificate.key, 'key')
      if (key) results.push(key)
    }
    if (config.certificate.kind === 'acme' || config.certificate.kind === 'self-signed') {
      for (const file of await findStoredCertificates(config.certs)) {
        const keyFile = file.replace(/\.crt$/, '.key')
        // The self-signed provider keeps its certificate under local-ca/; anything else here is ACME's.
        const managedBy = file.split(sep).includes('local-ca') ? 'self-signed' : 'acme'
        results.push(...(await checkCertificateFiles(file, keyFile, managedBy === 'acme' ? config.domains : [], managedBy)))
      }
      for (const file of await findKeyFiles(config.certs)) {
        const result = await checkPrivateFile(file, 'key')
        if (result) results.push(result)
      }
    }
    if (config.clientCa !== undefined) results.push(...(await checkClientCaFile(config.clientCa)))
    results.push(...(await checkHtpasswdFile(config)))
    results.push(...(await checkAccessFile(config)))
    if (config.upstream === undefined) results.push(...(await checkDatadir(config.datadir, config.maxBody)))
    else results.push({ status: 'ok', subject: 'storage', message: `none here: fronting ${config.upstream}` })

    for (const result of results) {
      io.stdout.write(`${MARK[result.status]}  ${result.subject}: ${result.message}\n`)
      if (result.fix && result.status !== 'ok') io.stdout.write(`      fix: ${result.fix}\n`)
    }
    const failed = results.filter(result => result.status === 'fail').length
    const warned = results.filter(result => result.status === 'warn').length
    io.stdout.write(`\n${results.length - failed - warned} ok, ${warned} warning${warned === 1 ? '' : 's'}, ${failed} problem${failed === 1 ? '' : 's'}\n`)
    if (failed > 0) throw new CliError(`${failed} problem${failed === 1 ? '' : 's'} found (see above)`, 1)
  })
  return command
}

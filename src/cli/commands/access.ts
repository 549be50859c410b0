/**
 * `berth access check <user> <repository> <action>`: which rule of the access file decides, and
 * whether it allows the action (access/rules.ts has the rules' meaning). Prints one line; exit 0 when
 * allowed, 1 when denied, 2 when the file or an argument is wrong.
 */
import { join } from 'node:path'
import { Argument, Command, InvalidArgumentError } from 'commander'
import { loadAccessFile } from '../../access/access-file.js'
import { AccessFileError, ACTIONS, type Action } from '../../access/rules.js'
import { CONFIG_ENV, loadConfig } from '../../config/load.js'
import type { SettingKey } from '../../config/settings.js'
import { isRepositoryName } from '../../storage/reference.js'
import { CliError, CommandExit } from '../errors.js'
import type { CliIo } from '../io.js'
import { datadirOption } from './gc.js'

/** The `<user>` that stands for a caller without credentials. */
const ANONYMOUS = 'anonymous'

interface CheckOptions {
  access?: string
  datadir?: string
  config?: string
}

export function accessCommand(io: CliIo): Command {
  const command = new Command('access').summary('check the access rules (--access, default <datadir>/access.yml)')
  command.addCommand(checkCommand(io))
  return command
}

function checkCommand(io: CliIo): Command {
  return new Command('check')
    .summary('say which access rule decides whether a user may pull, push, overwrite or delete a repository')
    .description(
      'Apply the access file to one request and print the rule that decides it: the first rule whose repository ' +
        'glob matches and whose who names the user. Exit code 0 when allowed, 1 when denied, 2 when the file or an argument is wrong.',
    )
    .argument('<user>', `a user name, or ${ANONYMOUS} for a client without credentials`)
    .argument('<repository>', 'a repository name, e.g. alice/app', parseRepository)
    .addArgument(new Argument('<action>', 'what the user wants to do').choices(ACTIONS))
    .option('--access <file>', 'the access file (default: <datadir>/access.yml; env: BERTH_ACCESS)')
    .addOption(datadirOption())
    .option('-c, --config <file>', `the YAML or JSON settings file berth serve uses; only its access and datadir settings are read here (env: ${CONFIG_ENV})`)
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  berth access check alice alice/app push        may alice push to alice/app?\n' +
        '  berth access check anonymous public/app pull   may anyone pull public/app without a login?',
    )
    .action(async (user: string, repository: string, action: Action, options: CheckOptions) => {
      const file = await accessFileOf(io, options)
      let policy
      try {
        policy = await loadAccessFile(file)
      } catch (error) {
        if (!(error instanceof AccessFileError)) throw error
        const more = error.all.length > 1 ? ` (and ${error.all.length - 1} more: berth doctor lists them all)` : ''
        throw new CliError(`${error.message}${more}`, 2, { cause: error })
      }
      const decision = policy.decide(user === ANONYMOUS ? undefined : user, repository, action)
      io.stdout.write(`${decision.allowed ? 'allowed' : 'denied'}: ${decision.reason}\n`)
      if (!decision.allowed) throw new CommandExit(1)
    })
}

function parseRepository(value: string): string {
  if (!isRepositoryName(value)) {
    throw new InvalidArgumentError(`"${value}" is not a repository name: lowercase segments of a-z 0-9 . _ - joined by /, e.g. alice/app`)
  }
  return value
}

/** The file `berth serve` would read with the same flags, environment and config file. */
async function accessFileOf(io: CliIo, options: CheckOptions): Promise<string> {
  const flags: Partial<Record<SettingKey, unknown>> = {}
  if (options.access !== undefined) flags.access = options.access
  if (options.datadir !== undefined) flags.datadir = options.datadir
  const config = await loadConfig({
    flags,
    env: io.env,
    cwd: io.cwd,
    allowNoCertificate: true,
    ...(options.config !== undefined ? { configFile: options.config } : {}),
  })
  if (config.accessFile === undefined) {
    throw new CliError(
      `no access file: ${join(config.datadir, 'access.yml')} does not exist, so every user who logs in may do everything; give a file with --access <file>`,
      2,
    )
  }
  return config.accessFile
}

/**
 * `berth htpasswd`: manage the users of basic auth.
 *
 *   berth htpasswd add <user> [--password-stdin]   add or change a user (prompts without echo)
 *   berth htpasswd remove <user>                   remove a user
 *   berth htpasswd list                            list users and their hash kind
 *   berth htpasswd -Bbn <user> <password>          print one line, like Apache's `htpasswd -Bbn`
 *
 * The last form is a drop-in for the seed's `docker run --entrypoint htpasswd httpd:2 -Bbn user pw
 * > datadir/htpasswd`. The file defaults to `<datadir>/htpasswd`, the same place `berth serve` reads.
 */
import { resolve } from 'node:path'
import { Command, Option } from 'commander'
import { formatHtpasswdLine, DEFAULT_BCRYPT_COST } from '../../edge/auth/htpasswd.js'
import { DEFAULTS } from '../../config/config.js'
import { isInContainer, ownershipFix } from '../../container.js'
import { CliError } from '../errors.js'
import type { CliIo } from '../io.js'
import { entriesOf, hashKind, readHtpasswdLines, removeUser, upsertLine, writeHtpasswdAtomically } from '../htpasswd-file.js'
import { promptNewPassword, readPasswordFromStdin } from '../prompt.js'

interface FileOptions {
  file?: string
  datadir?: string
}

function fileOption(): Option {
  return new Option('-f, --file <path>', 'htpasswd file (default: <datadir>/htpasswd)')
}

function datadirOption(): Option {
  return new Option('--datadir <dir>', 'data folder whose htpasswd to edit (env: BERTH_DATADIR; default: ./datadir)')
}

function costOption(): Option {
  return new Option('-C, --cost <n>', `bcrypt cost ${MIN_COST}-${MAX_COST} (default: ${DEFAULT_BCRYPT_COST}; Apache's default is 5)`)
}

/** The file the command edits: --file, else BERTH_HTPASSWD, else <datadir>/htpasswd as serve computes it. */
function resolveFile(options: FileOptions, io: CliIo): string {
  if (options.file !== undefined) return resolve(io.cwd, options.file)
  if (io.env.BERTH_HTPASSWD) return resolve(io.cwd, io.env.BERTH_HTPASSWD)
  const datadir = options.datadir ?? (io.env.BERTH_DATADIR || DEFAULTS.datadir)
  return resolve(io.cwd, datadir, 'htpasswd')
}

/** Apache htpasswd's range for -C: cost 17 already takes about 10 s per login with bcryptjs. */
const MIN_COST = 4
const MAX_COST = 17

function parseCost(text: string | undefined): number {
  if (text === undefined) return DEFAULT_BCRYPT_COST
  const cost = Number(text)
  if (!/^\d+$/.test(text) || cost < MIN_COST || cost > MAX_COST) {
    throw new CliError(`invalid --cost ${JSON.stringify(text)}: expected an integer from ${MIN_COST} to ${MAX_COST}, as Apache htpasswd accepts`, 2)
  }
  return cost
}

function makeLine(user: string, password: string, cost: number): string {
  try {
    return formatHtpasswdLine(user, password, cost)
  } catch (error) {
    if (error instanceof RangeError) throw new CliError(error.message, 2, { cause: error })
    throw error
  }
}

function describeWriteError(error: unknown, file: string): CliError {
  const code = (error as NodeJS.ErrnoException).code
  if (code === 'EACCES' || code === 'EPERM') {
    const fix = isInContainer() ? ownershipFix(file) : 'run as the user that owns it, or with sudo'
    return new CliError(`cannot write ${file}: permission denied (${fix})`, 1, { cause: error })
  }
  return new CliError(`cannot write ${file}: ${(error as Error).message}`, 1, { cause: error })
}

export function htpasswdCommand(io: CliIo): Command {
  const command = new Command('htpasswd')
    // -C is defined here (Apache form) and on `add`: without positional options commander hands
    // `add alice -C 13` to this command, and `add` never saw the cost.
    .enablePositionalOptions()
    .summary('manage basic-auth users (bcrypt htpasswd file)')
    .description(
      'Manage the users that may log in (docker login). The file is <datadir>/htpasswd unless --file is given.\n' +
        'Apache-compatible form: berth htpasswd -Bbn <user> <password> prints one line, as `htpasswd -Bbn` does.',
    )
    .argument('[user]', 'user name (Apache-compatible form)')
    .argument('[password]', 'password (with -b)')
    .option('-B, --bcrypt', 'bcrypt hash (always; accepted for compatibility)')
    .option('-b, --batch', 'take the password from the command line')
    .option('-n, --stdout', 'print the line instead of writing a file')
    .addOption(costOption())
    .action((user: string | undefined, password: string | undefined, options: { batch?: boolean; stdout?: boolean; cost?: string }) => {
      if (user === undefined) {
        command.help({ error: true })
      }
      if (!options.stdout || !options.batch || password === undefined) {
        throw new CliError('the Apache-compatible form is: berth htpasswd -Bbn <user> <password> (or use: berth htpasswd add <user>)', 2)
      }
      io.stdout.write(makeLine(user ?? '', password, parseCost(options.cost)) + '\n')
    })

  command
    .command('add')
    .description('add a user, or change the password of an existing one')
    .argument('<user>', 'user name (no ":" or spaces)')
    .option('--password-stdin', 'read the password from stdin instead of prompting')
    .addOption(costOption())
    .addOption(fileOption())
    .addOption(datadirOption())
    .action(async (user: string, options: FileOptions & { passwordStdin?: boolean; cost?: string }) => {
      // `berth htpasswd -C 13 add alice` puts it before the subcommand, on this command.
      const cost = parseCost(options.cost ?? (command.opts() as { cost?: string }).cost)
      const file = resolveFile(options, io)
      const password = options.passwordStdin ? await readPasswordFromStdin(io) : await promptNewPassword(io, user)
      const line = makeLine(user, password, cost)
      const { lines, isNew } = upsertLine(await readHtpasswdLines(file), user, line)
      await writeHtpasswdAtomically(file, lines).catch((error: unknown) => {
        throw describeWriteError(error, file)
      })
      io.stdout.write(`${isNew ? 'added' : 'updated'} user ${user} in ${file}\n`)
    })

  command
    .command('remove')
    .alias('rm')
    .description('remove a user')
    .argument('<user>', 'user name')
    .addOption(fileOption())
    .addOption(datadirOption())
    .action(async (user: string, options: FileOptions) => {
      const file = resolveFile(options, io)
      const { lines, removed } = removeUser(await readHtpasswdLines(file), user)
      if (!removed) throw new CliError(`user ${user} is not in ${file}`, 1)
      await writeHtpasswdAtomically(file, lines).catch((error: unknown) => {
        throw describeWriteError(error, file)
      })
      io.stdout.write(`removed user ${user} from ${file}\n`)
    })

  command
    .command('list')
    .alias('ls')
    .description('list users and how their passwords are hashed')
    .addOption(fileOption())
    .addOption(datadirOption())
    .action(async (options: FileOptions) => {
      const file = resolveFile(options, io)
      const entries = entriesOf(await readHtpasswdLines(file))
      if (entries.length === 0) {
        io.stderr.write(`no users in ${file} (add one: berth htpasswd add <user>)\n`)
        return
      }
      for (const entry of entries) io.stdout.write(`${entry.user}\t${hashKind(entry.hash).kind}\n`)
    })

  return command
}

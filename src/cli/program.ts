/**
 * The `berth` command line: one factory per command, wired here. `runCli` turns every failure
 * into one line on stderr and an exit code (0 ok, 1 failed, 2 wrong usage or configuration);
 * stack traces are shown only with BERTH_DEBUG=1.
 */
import { Command, CommanderError } from 'commander'
import { AccessFileError } from '../access/rules.js'
import { ConfigError } from '../config/errors.js'
import { accessCommand } from './commands/access.js'
import { doctorCommand } from './commands/doctor.js'
import { duCommand } from './commands/du.js'
import { eventsCommand } from './commands/events.js'
import { gcCommand } from './commands/gc.js'
import { htpasswdCommand } from './commands/htpasswd.js'
import { lsCommand } from './commands/ls.js'
import { reindexCommand } from './commands/reindex.js'
import { retentionCommand } from './commands/retention.js'
import { rmCommand } from './commands/rm.js'
import { serveCommand } from './commands/serve.js'
import { tagsCommand } from './commands/tags.js'
import { CliError, CommandExit } from './errors.js'
import { type CliIo, processIo } from './io.js'
import { VERSION } from './version.js'

export function createProgram(io: CliIo): Command {
  const program = new Command('berth')
    .description('Berth: a self-hosted Docker/OCI container registry with its own HTTPS front door')
    .version(VERSION, '-V, --version')
    .showHelpAfterError('(add --help for usage)')
    .configureOutput({
      writeOut: text => io.stdout.write(text),
      writeErr: text => io.stderr.write(text),
      outputError: (text, write) => write(text.replace(/^error: /, 'berth: ')),
    })
    .addHelpText(
      'after',
      '\nQuick start:\n' +
        '  berth serve --local                               registry on http://127.0.0.1:5000 (this machine only)\n' +
        '  berth htpasswd add alice                          add a user (prompts for the password)\n' +
        '  berth serve --domain registry.example.com --acme --acme-email me@example.com --acme-agree-tos\n' +
        '  berth doctor --domain registry.example.com        check ports, DNS, certificates, permissions',
    )
  program.addCommand(serveCommand(io))
  program.addCommand(htpasswdCommand(io))
  program.addCommand(doctorCommand(io))
  program.addCommand(gcCommand(io))
  program.addCommand(duCommand(io))
  program.addCommand(accessCommand(io))
  program.addCommand(eventsCommand(io))
  program.addCommand(lsCommand(io))
  program.addCommand(tagsCommand(io))
  program.addCommand(rmCommand(io))
  program.addCommand(reindexCommand(io))
  program.addCommand(retentionCommand(io))
  // Every command reports usage errors through runCli instead of calling process.exit itself.
  const applyExitOverride = (command: Command) => {
    command.exitOverride()
    command.showHelpAfterError('(add --help for usage)')
    command.configureOutput({
      writeOut: text => io.stdout.write(text),
      writeErr: text => io.stderr.write(text),
      outputError: (text, write) => write(text.replace(/^error: /, 'berth: ')),
    })
    command.commands.forEach(applyExitOverride)
  }
  applyExitOverride(program)
  return program
}

/** Runs the CLI with `argv` as process.argv (node, script, ...args). Resolves with the exit code. */
export async function runCli(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  const program = createProgram(io)
  try {
    await program.parseAsync([...argv])
    return 0
  } catch (error) {
    return report(error, io)
  }
}

function report(error: unknown, io: CliIo): number {
  if (error instanceof CommanderError) {
    // Commander already printed its message; help and --version are exits with code 0.
    if (error.exitCode === 0) return 0
    return 2
  }
  if (error instanceof CommandExit) return error.exitCode
  if (io.env.BERTH_DEBUG) io.stderr.write(`${(error as Error)?.stack ?? String(error)}\n`)
  // A broken access file is a configuration mistake: berth serve refuses to start with it.
  if (error instanceof ConfigError || error instanceof AccessFileError) {
    io.stderr.write(`berth: ${error.message}\n`)
    return 2
  }
  if (error instanceof CliError) {
    io.stderr.write(`berth: ${error.message}\n`)
    return error.exitCode
  }
  const message = error instanceof Error ? error.message : String(error)
  io.stderr.write(`berth: ${message.split('\n')[0]} (set BERTH_DEBUG=1 for details)\n`)
  return 1
}

/**
 * An error the CLI prints as one line (`berth: <message>`) and exits with, never a stack trace.
 * Exit codes: 2 = the command line or configuration is wrong (fix the input and retry),
 * 1 = it was right but failed (a port in use, a file not writable, a check that failed).
 */
export class CliError extends Error {
  override readonly name = 'CliError'
  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 1,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}

/**
 * Ends a command that has printed its own answer with an exit code and nothing more on stderr
 * (`berth access check`: 1 = denied, as `grep` says "no match").
 */
export class CommandExit extends Error {
  override readonly name = 'CommandExit'
  constructor(readonly exitCode: 1 | 2) {
    super(`exit code ${exitCode}`)
  }
}

/**
 * Reading a password: from a terminal without echo, or the whole of stdin (`--password-stdin`,
 * as `docker login --password-stdin` does, so it never shows up in `ps` or shell history).
 */
import type { CliIo } from './io.js'
import { CliError } from './errors.js'

/** All of stdin, minus one trailing newline (`echo secret | berth htpasswd add alice --password-stdin`). */
export async function readPasswordFromStdin(io: CliIo): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of io.stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer))
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '')
}

/** Prompts on the terminal with echo off. Ctrl-C aborts, backspace edits. */
export async function promptHidden(io: CliIo, question: string): Promise<string> {
  const stdin = io.stdin
  if (!stdin.isTTY || stdin.setRawMode === undefined) {
    throw new CliError('no terminal to ask for the password; pipe it in with --password-stdin', 2)
  }
  // Echo off before the question shows: whatever is typed once it is visible is never echoed.
  stdin.setRawMode(true)
  io.stderr.write(question)
  stdin.resume()
  try {
    return await new Promise<string>((resolve, reject) => {
      let typed = ''
      const onData = (data: Buffer | string) => {
        for (const char of data.toString('utf8')) {
          if (char === '\r' || char === '\n') {
            stdin.off('data', onData)
            io.stderr.write('\n')
            resolve(typed)
            return
          }
          if (char === '\u0003' || char === '\u0004') {
            stdin.off('data', onData)
            io.stderr.write('\n')
            reject(new CliError('cancelled', 1))
            return
          }
          if (char === '\u007f' || char === '\b') typed = typed.slice(0, -1)
          else typed += char
        }
      }
      stdin.on('data', onData)
    })
  } finally {
    stdin.setRawMode(false)
    stdin.pause()
  }
}

/** Asks twice on a terminal, like Apache's htpasswd. */
export async function promptNewPassword(io: CliIo, user: string): Promise<string> {
  const first = await promptHidden(io, `New password for ${user}: `)
  const second = await promptHidden(io, 'Re-type new password: ')
  if (first !== second) throw new CliError('the passwords do not match', 1)
  return first
}

/** curl as the HTTP client of edge tests: what a user types, with the status, headers and body parsed. */
import { execFile } from 'node:child_process'

export interface CurlResult {
  status: number
  headers: Record<string, string>
  body: string
  exitCode: number
  stderr: string
}

/** Runs `curl -sS -i <args>`; never throws (exitCode tells transport errors). */
export function curl(args: readonly string[], input?: Buffer | string): Promise<CurlResult> {
  return new Promise(resolve => {
    const child = execFile('curl', ['-sS', '-i', '--http1.1', ...args], { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const text = stdout.toString('latin1')
      // With 100-continue or redirects there are several header blocks; the last one is the answer.
      let rest = text
      let head = ''
      while (/^HTTP\/\d(\.\d)? \d{3}/.test(rest)) {
        const end = rest.indexOf('\r\n\r\n')
        if (end < 0) {
          head = rest
          rest = ''
          break
        }
        head = rest.slice(0, end)
        rest = rest.slice(end + 4)
      }
      const [statusLine = '', ...lines] = head.split('\r\n')
      const headers: Record<string, string> = {}
      for (const line of lines) {
        const colon = line.indexOf(':')
        if (colon > 0) headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
      }
      resolve({
        status: Number(statusLine.split(' ')[1] ?? 0),
        headers,
        body: rest,
        exitCode: error ? ((error as { code?: number }).code ?? -1) : 0,
        stderr: stderr.toString(),
      })
    })
    if (input !== undefined) child.stdin?.end(input)
  })
}

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

/** Starts an upload in `repository` with basic auth; resolves with its absolute location. */
export async function startUpload(base: string, creds: string, repository: string): Promise<string> {
  const started = await curl(['-u', creds, '-X', 'POST', `${base}/v2/${repository}/blobs/uploads/`])
  if (started.status !== 202) throw new Error(`upload start: ${started.status} ${started.body}`)
  const location = started.headers.location!
  return location.startsWith('/') ? `${base}${location}` : location
}

/** The upload's size as its status (GET on the location) reports it; -1 if it does not answer 204. */
export async function uploadedBytes(creds: string, location: string): Promise<number> {
  const status = await curl(['-u', creds, location])
  if (status.status !== 204) return -1
  const range = /^0-(\d+)$/.exec(status.headers.range ?? '')
  // `0-0` is distribution's (and Berth's) way to say "empty"; these tests never hold a 1-byte upload.
  return range && range[1] !== '0' ? Number(range[1]) + 1 : 0
}

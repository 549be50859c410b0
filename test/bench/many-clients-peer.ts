/**
 * The helper processes of the many-clients case (many-clients.ts), each its own process so that
 * neither shares an event loop with the harness:
 *
 * - `balance <port>,<port>…`: a TCP round-robin balancer on a free loopback port (prints it), one
 *   upstream per accepted connection, bytes piped both ways untouched (TLS passes through to the
 *   instances), ends passed on as ends; an error on either side is printed and closes both. Runs
 *   until killed.
 * - `probe <host:port> <ca file> <path> <accept> <per second>`: sends `GET https://host/path` with
 *   the Authorization header in BENCH_PROBE_AUTH at a fixed rate, each on schedule whether or not
 *   the previous one has answered. Prints `ready` once a warm-up request succeeded; `go` on stdin
 *   starts the recorded requests, `stop` ends them: it waits for those in flight and prints one JSON
 *   line `{ "latenciesMs": [...], "errors": [...] }`, then exits.
 */
import { readFileSync } from 'node:fs'
import https from 'node:https'
import net from 'node:net'
import { createInterface } from 'node:readline'

const [role, ...args] = process.argv.slice(2)

if (role === 'balance') {
  const targets = args[0]!.split(',').map(Number)
  let next = 0
  // Half-open on both sides: an end from either peer is passed on as an end once every byte before
  // it was written (pipe does that), and a socket is only destroyed on an error. Destroying one side
  // when the other closed would drop what is still queued for it: a truncated response.
  const server = net.createServer({ allowHalfOpen: true }, client => {
    const target = targets[next++ % targets.length]!
    const upstream = net.connect({ host: '127.0.0.1', port: target, allowHalfOpen: true })
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    client.pipe(upstream).pipe(client)
    const fail = (side: string) => (error: Error) => {
      process.stderr.write(`balancer: ${side} of a connection to :${target} failed (${error.message}); closing both sides\n`)
      client.destroy()
      upstream.destroy()
    }
    client.on('error', fail('the client side'))
    upstream.on('error', fail('the instance side'))
  })
  server.listen(0, '127.0.0.1', () => {
    const address = server.address()
    process.stdout.write(`${typeof address === 'object' && address ? address.port : 0}\n`)
  })
} else if (role === 'probe') {
  const [hostPort, caFile, urlPath, accept, perSecond] = args
  const [hostname, port] = hostPort!.split(':')
  const agent = new https.Agent({ keepAlive: true, maxSockets: 32, ca: readFileSync(caFile!), servername: 'localhost' })
  const headers = { Authorization: process.env.BENCH_PROBE_AUTH ?? '', Accept: accept! }
  const latenciesMs: number[] = []
  const errors: string[] = []

  const once = (): Promise<number> =>
    new Promise((resolve, reject) => {
      const started = process.hrtime.bigint()
      const request = https.get({ hostname, port, path: urlPath, agent, headers }, response => {
        response.resume()
        response.on('end', () => {
          if (response.statusCode === 200) resolve(Number(process.hrtime.bigint() - started) / 1e6)
          else reject(new Error(`HTTP ${response.statusCode}`))
        })
        response.on('error', reject)
      })
      request.on('error', reject)
      request.setTimeout(30_000, () => request.destroy(new Error('no answer in 30 s')))
    })

  let timer: NodeJS.Timeout | undefined
  const inFlight = new Set<Promise<void>>()
  const fire = () => {
    const done = once()
      .then(
        ms => void latenciesMs.push(ms),
        (error: unknown) => void errors.push(error instanceof Error ? error.message : String(error)),
      )
      .finally(() => inFlight.delete(done))
    inFlight.add(done)
  }

  await once()
  await once()
  process.stdout.write('ready\n')
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() === 'go' && timer === undefined) {
      // Scheduled from the start time, not chained to answers: a slow answer does not delay the next request.
      const interval = 1000 / Number(perSecond)
      const start = performance.now()
      let sent = 0
      const tick = () => {
        fire()
        sent++
        timer = setTimeout(tick, Math.max(0, start + sent * interval - performance.now()))
      }
      tick()
    } else if (line.trim() === 'stop') {
      clearTimeout(timer)
      await Promise.all(inFlight)
      process.stdout.write(JSON.stringify({ latenciesMs, errors }) + '\n')
      agent.destroy()
      process.exit(0)
    }
  }
} else {
  process.stderr.write('usage: many-clients-peer.ts balance PORTS | probe HOST:PORT CA PATH ACCEPT PER_SECOND\n')
  process.exit(2)
}

/**
 * One side of the loopback TLS ceiling: `server <chain> <key> <bytes>` prints its port, reads
 * `bytes` and answers one byte; `client <ca> <port> <bytes>` sends them and prints MB/s, timed
 * from the first byte sent to the server's answer. Default TLS settings on both sides, as Berth
 * would have them.
 */
import { readFileSync } from 'node:fs'
import tls from 'node:tls'

const [role, a, b, c] = process.argv.slice(2)
const total = Number(c)

if (role === 'server') {
  const server = tls.createServer({ cert: readFileSync(a!), key: readFileSync(b!) }, socket => {
    let received = 0
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length
      if (received >= total) socket.end('k')
    })
    socket.on('close', () => server.close()) // one measurement per process: exit when done
    socket.on('error', () => server.close())
  })
  server.listen(0, '127.0.0.1', () => {
    const address = server.address()
    process.stdout.write(`${typeof address === 'object' && address ? address.port : 0}\n`)
  })
} else if (role === 'client') {
  const chunk = Buffer.alloc(256 * 1024, 7)
  const socket = tls.connect({ host: '127.0.0.1', port: Number(b), ca: readFileSync(a!), servername: 'localhost' }, () => {
    const started = process.hrtime.bigint()
    let sent = 0
    const pump = () => {
      while (sent < total) {
        sent += chunk.length
        if (!socket.write(chunk)) return void socket.once('drain', pump)
      }
    }
    socket.once('data', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      process.stdout.write(`${total / seconds / 1e6}\n`)
      socket.destroy()
    })
    pump()
  })
} else {
  process.stderr.write('usage: tls-ceiling-peer.ts server <chain> <key> <bytes> | client <ca> <port> <bytes>\n')
  process.exit(2)
}

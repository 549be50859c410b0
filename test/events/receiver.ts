/** A webhook receiver on 127.0.0.1 for the tests: records every POST and answers as `answer` says. */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { ExecutionContext } from 'ava'

export interface Received {
  readonly headers: IncomingHttpHeaders
  readonly body: Buffer
  readonly json: any
  /** When it arrived (Date.now()). */
  readonly at: number
}

/** A status to answer with, or 'hang' to never answer. */
export type Answer = number | 'hang'

export interface Receiver {
  readonly url: string
  readonly received: Received[]
  /** Decides the answer of the n-th request (0-based). */
  answer: (index: number) => Answer
  /** Resolves once `count` requests have arrived. */
  waitFor(count: number, timeoutMs?: number): Promise<void>
}

export async function startReceiver(t: ExecutionContext, answer: (index: number) => Answer = () => 200): Promise<Receiver> {
  const received: Received[] = []
  const hanging: ServerResponse[] = []
  let waiters: (() => void)[] = []
  const receiver: Receiver = {
    url: '',
    received,
    answer,
    async waitFor(count, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs
      while (received.length < count) {
        if (Date.now() > deadline) throw new Error(`waited for ${count} webhook requests, got ${received.length}`)
        await new Promise<void>(resolve => {
          waiters.push(resolve)
          setTimeout(resolve, 50)
        })
      }
    },
  }
  const server = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      const body = Buffer.concat(chunks)
      let json: unknown
      try {
        json = JSON.parse(body.toString('utf8'))
      } catch {
        json = undefined
      }
      const index = received.length
      received.push({ headers: request.headers, body, json, at: Date.now() })
      const woken = waiters
      waiters = []
      for (const wake of woken) wake()
      const status = receiver.answer(index)
      if (status === 'hang') {
        hanging.push(response)
        return
      }
      response.writeHead(status).end()
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const response of hanging) response.destroy()
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
  })
  return Object.assign(receiver, { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook` })
}

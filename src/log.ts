/**
 * One-line structured logging. Every line is `<time> <level> <message> key=value ...`.
 * Never pass secrets (passwords, Authorization headers, private keys) as fields.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
export type LogFields = Record<string, string | number | boolean | undefined | null>

export interface Logger {
  readonly debug: (message: string, fields?: LogFields) => void
  readonly info: (message: string, fields?: LogFields) => void
  readonly warn: (message: string, fields?: LogFields) => void
  readonly error: (message: string, fields?: LogFields) => void
}

const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 }

function formatValue(value: string | number | boolean): string {
  const text = String(value)
  return /^[^\s"=]+$/.test(text) ? text : JSON.stringify(text)
}

export function formatLine(level: LogLevel, message: string, fields: LogFields = {}, now = new Date()): string {
  let line = `${now.toISOString()} ${level.toUpperCase().padEnd(5)} ${message}`
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined || value === null) continue
    line += ` ${key}=${formatValue(value)}`
  }
  return line
}

export function createLogger(options: { level?: LogLevel; write?: (line: string) => void } = {}): Logger {
  const threshold = order[options.level ?? 'info']
  const write = options.write ?? ((line: string) => process.stderr.write(line + '\n'))
  const log = (level: LogLevel) => (message: string, fields?: LogFields) => {
    if (order[level] >= threshold) write(formatLine(level, message, fields))
  }
  return { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') }
}

/** A logger that drops everything; for tests and library callers that do not care. */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} }

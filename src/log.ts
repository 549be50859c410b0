/**
 * One-line structured logging, one event per line, in one of two formats:
 * - text: `<time> <LEVEL> <message> key=value ...` (values with spaces, quotes or `=` JSON-quoted);
 * - json: one object per line, `{"time":…,"level":…,"msg":…, …fields}` (a field named time, level
 *   or msg is dropped rather than overwriting those).
 * Fields that are undefined or null are left out in both. Lines of one request carry its `id`.
 * Never pass secrets (passwords, Authorization headers, private keys) as fields.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
export type LogFormat = 'text' | 'json'
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

export function formatJsonLine(level: LogLevel, message: string, fields: LogFields = {}, now = new Date()): string {
  const entry: Record<string, string | number | boolean> = { time: now.toISOString(), level, msg: message }
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined || value === null || Object.hasOwn(entry, key)) continue
    entry[key] = value
  }
  return JSON.stringify(entry)
}

export function createLogger(options: { level?: LogLevel; format?: LogFormat; write?: (line: string) => void } = {}): Logger {
  const threshold = order[options.level ?? 'info']
  const write = options.write ?? ((line: string) => process.stderr.write(line + '\n'))
  const format = options.format === 'json' ? formatJsonLine : formatLine
  const log = (level: LogLevel) => (message: string, fields?: LogFields) => {
    if (order[level] >= threshold) write(format(level, message, fields))
  }
  return { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') }
}

/** A logger that drops everything; for tests and library callers that do not care. */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} }

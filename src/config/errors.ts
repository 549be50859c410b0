/**
 * A setting that cannot be used. The message is one line a user can act on: it names the setting
 * as they wrote it (`--port`, `BERTH_PORT` or `port in berth.yaml`) and says what is accepted.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError'
  readonly code = 'CONFIG_INVALID'
  constructor(message: string, options?: ErrorOptions) {
    super(message, options)
  }
}

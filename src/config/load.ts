/**
 * Loads the configuration of `berth serve` from its three sources and the defaults.
 * Precedence: flag > environment (`BERTH_*`) > config file (`--config`/`BERTH_CONFIG`, YAML or
 * JSON) > default. A setting is taken whole from the strongest source that has it (a `--domain`
 * flag replaces `BERTH_DOMAIN`, it does not add to it).
 */
import { readFile } from 'node:fs/promises'
import { basename, dirname, resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { buildConfig, type Config, type ResolvedValues } from './config.js'
import { ConfigError } from './errors.js'
import { findSetting, SETTINGS, type Setting, type SettingKey } from './settings.js'
import { InvalidValue } from './values.js'

export interface ConfigSources {
  /** Values from the command line keyed by setting key; strings, `true` for switches, arrays for lists. */
  readonly flags?: Partial<Record<SettingKey, unknown>>
  readonly env?: NodeJS.ProcessEnv
  /** Folder relative paths from flags and environment are resolved against. */
  readonly cwd?: string
  /** `--config`; falls back to `BERTH_CONFIG`. */
  readonly configFile?: string
  /** For `berth doctor`: accept HTTPS mode without a certificate source. */
  readonly allowNoCertificate?: boolean
}

export const CONFIG_ENV = 'BERTH_CONFIG'

/** Resolves all settings. Rejects with ConfigError (one line naming the setting and what is accepted). */
export async function loadConfig(sources: ConfigSources = {}): Promise<Config> {
  const cwd = sources.cwd ?? process.cwd()
  const env = sources.env ?? {}
  const configPath = sources.configFile ?? nonEmpty(env[CONFIG_ENV])
  const configFile = configPath === undefined ? undefined : resolve(cwd, configPath)
  const fileValues = configFile === undefined ? {} : await readConfigFile(configFile)

  const values: ResolvedValues = {}
  for (const setting of SETTINGS as readonly Setting[]) {
    const flag = sources.flags?.[setting.key]
    const fromEnv = nonEmpty(env[setting.env])
    if (flag !== undefined) {
      assign(values, setting, parseFrom(setting, flag, `--${setting.flag}`), cwd)
    } else if (fromEnv !== undefined) {
      assign(values, setting, parseFrom(setting, fromEnv, setting.env), cwd)
    } else if (Object.hasOwn(fileValues, setting.key) && configFile !== undefined) {
      const raw = fileValues[setting.key]
      assign(values, setting, parseFrom(setting, raw, `${setting.key} in ${basename(configFile)}`), dirname(configFile))
    }
  }
  return buildConfig(values, cwd, configFile, { allowNoCertificate: sources.allowNoCertificate ?? false })
}

/**
 * Reads a YAML or JSON file (YAML is a superset of JSON, so one parser reads both) into setting
 * keys. Keys may be camelCase (`httpsPort`) or kebab-case (`https-port`); unknown keys are refused
 * so a typo does not silently fall back to a default.
 */
export async function readConfigFile(file: string): Promise<Partial<Record<SettingKey, unknown>>> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : String(code ?? error)
    throw new ConfigError(`cannot read config file ${file}: ${reason}`, { cause: error })
  }
  let document: unknown
  try {
    document = parseYaml(text, { prettyErrors: false })
  } catch (error) {
    const detail = error instanceof Error ? error.message.split('\n')[0] : String(error)
    throw new ConfigError(`config file ${file} is not valid YAML or JSON: ${detail}`, { cause: error })
  }
  if (document === null || document === undefined) return {}
  if (typeof document !== 'object' || Array.isArray(document)) {
    throw new ConfigError(`config file ${file} must be a mapping of settings (e.g. "domain: registry.example.com")`)
  }
  const values: Partial<Record<SettingKey, unknown>> = {}
  for (const [name, value] of Object.entries(document)) {
    const setting = findSetting(name)
    if (setting === undefined) {
      throw new ConfigError(`unknown setting "${name}" in ${basename(file)}; known settings: ${SETTINGS.map(item => item.flag).join(', ')}`)
    }
    if (value !== null && value !== undefined) values[setting.key] = value
  }
  return values
}

function parseFrom(setting: Setting, raw: unknown, source: string): unknown {
  try {
    if (setting.isList && Array.isArray(raw) && raw.length === 0) throw new InvalidValue('at least one value')
    return setting.parse(raw)
  } catch (error) {
    if (!(error instanceof InvalidValue)) throw error
    const shown = setting.isSecret ? '' : ` ${JSON.stringify(Array.isArray(raw) ? raw.join(',') : raw)}`
    throw new ConfigError(`invalid ${source}${shown}: expected ${error.accepted}`, { cause: error })
  }
}

function assign(values: ResolvedValues, setting: Setting, value: unknown, base: string): void {
  const typed = setting.isPath && typeof value === 'string' ? resolve(base, value) : value
  ;(values as Record<string, unknown>)[setting.key] = typed
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value
}

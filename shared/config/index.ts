/**
 * The service's configuration: read once at start (defaults < YAML file < environment),
 * validated, frozen, and described for the start-up log without its secrets.
 */
export { loadConfig, type LoadConfigOptions } from "./load-config.ts";
export { describeConfig } from "./describe-config.ts";
export { ConfigError, type ConfigProblem } from "./config-error.ts";
export { CONFIG_ENV_VARS, CONFIG_FILE, type ConfigVar } from "./fields.ts";
export { LogLevel, MultiTenancy, SpecsMode, type Config, type ConfigField } from "./schema.ts";

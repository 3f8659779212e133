import { CONFIG_ENV_VARS, CONFIG_FIELDS, SECRET_FIELDS } from "./fields.ts";
import { REDACTED, redactUrlCredentials } from "./nats-url.ts";
import type { Config } from "./schema.ts";

/**
 * The configuration as it goes into the start-up log line: keyed by the YAML names an operator
 * writes (`http_port`, like the log's own fields), every setting present (`null` when unset, so
 * `nats_url: null` says "embedded server"), secrets shown as `<redacted>`, and credentials
 * inside NATS URLs redacted.
 */
export function describeConfig(config: Config): Record<string, unknown> {
  const described: Record<string, unknown> = {};
  for (const field of CONFIG_FIELDS) {
    const value = config[field];
    const key = CONFIG_ENV_VARS[field].yaml;
    if (value === undefined) described[key] = null;
    else if (SECRET_FIELDS.has(field)) described[key] = REDACTED;
    else described[key] = value;
  }
  described[CONFIG_ENV_VARS.natsUrls.yaml] = config.natsUrls?.map(redactUrlCredentials) ?? null;
  return described;
}

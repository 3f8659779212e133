export { ALL_TENANTS, createMetrics } from "./metrics.ts";
export type { GaugeSources, Metrics, MetricsOptions } from "./metrics.ts";
export { createLogSocketStream } from "./log-socket.ts";
export type { LogSocketStream } from "./log-socket.ts";
export { createLogger } from "./logger.ts";
export type { LoggerOptions } from "./logger.ts";

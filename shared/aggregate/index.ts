export { createCommandHandler, crossesMultiple } from "./command-handler.ts";
export type { AggregateTypeRuntime, CommandHandler, CommandHandlerOptions } from "./command-handler.ts";
export { RecentCommands } from "./idempotency.ts";
export { KeyedQueue } from "./keyed-queue.ts";
export { LruCache } from "./lru-cache.ts";
export { conflictBackoffMs } from "./backoff.ts";
export type * from "./ports.ts";

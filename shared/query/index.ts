/** Queries over aggregate state: the filter language, the read model stores, the projector, the endpoint. */
export { FilterLimits, parseFilter, type FieldPath, type Filter, type Literal } from "./filter.ts";
export { compilePredicate, type Predicate } from "./predicate.ts";
export {
  buildSelect,
  compileSql,
  fieldExpression,
  Params,
  type Dialect,
  type FieldType,
  type QueryFields,
  type QueryPlan,
  type SortKey,
} from "./sql.ts";
export type { PageRow, ReadModelRow, ReadModelStore } from "./store.ts";
export { openSqliteStore, type SqliteStoreOptions } from "./sqlite-store.ts";
export { jsonbSafe, openPgStore, type PgStoreOptions } from "./pg-store.ts";
export {
  ProjectionBreak,
  startProjector,
  type ProjectedChange,
  type ProjectionListener,
  type Projector,
  type ProjectorOptions,
  type ProjectorStatus,
} from "./projector.ts";
export {
  ChangeKind,
  createWatchHub,
  EndReason,
  type Watch,
  type WatchHub,
  type WatchHubOptions,
  type WatchNotification,
} from "./watch-hub.ts";
export {
  MAX_PAGE,
  QueryRequest,
  startQueryService,
  WatchRequest,
  type WatchReply,
  type QueryItem,
  type QueryReply,
  type QueryService,
  type QueryServiceOptions,
  type QueryTypeDefinition,
} from "./query-service.ts";
export { registerQueryMetrics } from "./metrics.ts";

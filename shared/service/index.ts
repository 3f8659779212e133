export { replyError, startAggregateServices } from "./aggregate-services.ts";
export type {
  AggregateServices,
  AggregateServicesOptions,
  AggregateTypeInfo,
  EndpointCounters,
  PoolRouting,
  RequestOutcome,
} from "./aggregate-services.ts";
export {
  canonicalJson,
  parseGet,
  parseJsonBody,
  parseSubmit,
  payloadHash,
  resolveTenant,
} from "./request.ts";
export type { RequestHeaders, RequestPolicy } from "./request.ts";

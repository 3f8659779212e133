export * from "./ids.ts";
export * from "./errors.ts";
export * from "./json.ts";
export * from "./messages.ts";

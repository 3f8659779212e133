/**
 * Decider specifications as data (`functions/<type>/specs/*.yaml`): loading, running them in the
 * sandbox, and reporting. Used by `npm run spec`, by start-up (`AGGREGATE_SPECS`) and by the
 * test suite. The rest of the folder is private.
 */
export {
  DeciderSpec,
  SpecErrorCode,
  SpecFileError,
  loadSpecFile,
  loadSpecs,
  type LoadedSpec,
} from "./spec-file.ts";
export {
  runAllSpecs,
  runSpecs,
  type SpecResult,
  type SpecTarget,
  type TypeSpecResults,
} from "./run-specs.ts";
export { formatFailure, formatSpecReport, specCounts } from "./report.ts";
export { diffLines, formatValue } from "./diff.ts";

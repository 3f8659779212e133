/**
 * `npm run spec [-- TYPE...]`: runs the decider specs of every aggregate type (or the named
 * ones) in the sandbox the service would use (same configuration: AGGREGATE_FUNCTIONS_DIR,
 * AGGREGATE_SANDBOX_THREADS, program limits), prints a line per spec and a diff per failure,
 * and exits 1 when any spec fails (2 when the programs or specs cannot be loaded at all).
 */
import { loadConfig } from "../config/index.ts";
import { functionDefaults, loadFunctions } from "../functions/index.ts";
import { compileProgramFile, createSandbox } from "../sandbox/index.ts";
import { formatSpecReport, runAllSpecs, specCounts } from "./index.ts";

async function main(argv: readonly string[]): Promise<number> {
  const config = loadConfig();
  const wanted = new Set(argv.filter((arg) => !arg.startsWith("-")));
  const functions = (
    await loadFunctions(config.functionsDir, functionDefaults(config), compileProgramFile)
  ).filter((fn) => wanted.size === 0 || wanted.has(fn.type));
  const unknown = [...wanted].filter((type) => !functions.some((fn) => fn.type === type));
  if (unknown.length > 0) {
    process.stderr.write(`no aggregate type named ${unknown.join(", ")} in ${config.functionsDir}\n`);
    return 2;
  }
  const sandbox = createSandbox({
    threads: config.sandboxThreads,
    graceMs: config.sandboxGraceMs,
    // Specs are about outcomes: a spec that expects a time-out must see every one.
    poisonAfter: 0,
    poisonCoolDownMs: 0,
  });
  try {
    const targets = [];
    for (const fn of functions) {
      targets.push({
        type: fn.type,
        dir: fn.dir,
        initialState: fn.initialState,
        program: await sandbox.load(fn.source),
      });
    }
    const results = await runAllSpecs(targets);
    process.stdout.write(`${formatSpecReport(results)}\n`);
    return specCounts(results).failed > 0 ? 1 : 0;
  } finally {
    await sandbox.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 2;
  },
);

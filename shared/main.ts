/**
 * The entry point (`npm start`): configuration, then the app, then signals. SIGTERM/SIGINT stop
 * taking commands, finish those in flight, drain NATS and exit 0; a second signal exits at once.
 */
import { readFileSync } from "node:fs";
import { setFlagsFromString } from "node:v8";
import { startApp } from "./app/index.ts";
import { ConfigError, loadConfig } from "./config/index.ts";
import { createLogger } from "./observability/index.ts";

function packageVersion(): string {
  for (const candidate of ["../package.json", "../../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(candidate, import.meta.url), "utf8")) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === "aggregate" && pkg.version) return pkg.version;
    } catch {
      // try the next location (source tree or dist/)
    }
  }
  return "0.0.0";
}

/**
 * V8 lets its old generation grow to about four times the live data when collection is cheap,
 * and does not give the pages back: a worker holding 100k cached aggregates (~70 MB live) sat at
 * 380 MB RSS. Growing by 30 % per collection keeps it near the live size (measured: 235 MB, for
 * about 1 % more CPU in major collections). An explicit `--heap-growing-percent` in NODE_OPTIONS
 * or on the command line wins.
 */
function boundHeapGrowth(): void {
  const given = [...process.execArgv, process.env["NODE_OPTIONS"] ?? ""].join(" ");
  if (!given.includes("heap-growing-percent")) setFlagsFromString("--heap-growing-percent=30");
}

async function main(): Promise<void> {
  boundHeapGrowth();
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`aggregate: invalid configuration:\n${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const { log } = createLogger({ level: config.logLevel, socketPath: config.loggerSocket });

  // Signals are handled from the start: a SIGTERM that arrives while starting stops the service
  // as soon as it is up instead of killing it half-way.
  let app: Awaited<ReturnType<typeof startApp>> | undefined;
  let signals = 0;
  let stopRequested = false;
  const stop = () => {
    if (!app) return;
    app.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      log.warn({ signal }, "second signal: exiting now");
      process.exit(130);
    }
    log.info({ signal }, "shutting down");
    stopRequested = true;
    stop();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  try {
    app = await startApp({ config, log, version: packageVersion() });
  } catch (err) {
    log.fatal({ err }, `start-up failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(stopRequested ? 0 : 1);
  }
  if (stopRequested) stop();
}

await main();

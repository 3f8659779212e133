/**
 * The container recipe, checked without a Docker engine: what the image must do (multi-stage,
 * release build, non-root, tini as PID 1, node as the command, a healthcheck without curl), and
 * the entrypoint script run for real with sh.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "../../..");
const dockerfile = await readFile(path.join(ROOT, "infra/Dockerfile"), "utf8");
const dockerignore = (await readFile(path.join(ROOT, ".dockerignore"), "utf8"))
  .split("\n")
  .map((l) => l.trim());
/** Instructions with continuation lines joined; heredoc bodies are left out. */
const instructions: string[] = [];
{
  const lines = dockerfile.split("\n");
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!;
    if (line.startsWith("#") || line.trim() === "") continue;
    while (line.endsWith("\\")) line = line.slice(0, -1) + " " + lines[++i]!.trim();
    instructions.push(line);
    const heredoc = /<<'?(\w+)'?/.exec(line);
    if (heredoc)
      while (lines[++i] !== heredoc[1]) if (i >= lines.length) throw new Error("unterminated heredoc");
  }
}
const all = (keyword: string) => instructions.filter((l) => l.startsWith(`${keyword} `));
const last = (keyword: string) => all(keyword).at(-1) ?? "";
const jsonArgs = (line: string) => JSON.parse(line.slice(line.indexOf("["))) as string[];

describe("infra/Dockerfile", () => {
  it("builds in one stage and runs from a slim one with only runtime dependencies", () => {
    expect(all("FROM").length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/RUN npm ci\b/);
    expect(dockerfile).toMatch(/npm run build && npm prune --omit=dev/);
    expect(
      all("COPY")
        .filter((l) => l.includes("--from=build"))
        .map((l) => l.split(/\s+/)[2]),
    ).toEqual(expect.arrayContaining(["/app/node_modules", "/app/dist", "/app/package.json"]));
    expect(last("ENV")).toContain("NODE_ENV=production");
  });

  it("runs as a non-root user, under tini, with node (not npm) as the command", () => {
    expect(last("USER")).not.toMatch(/USER\s+(root|0)\b/);
    expect(jsonArgs(last("ENTRYPOINT")).slice(0, 2)).toEqual(["/usr/bin/tini", "--"]);
    const cmd = jsonArgs(last("CMD"));
    expect(cmd[0]).toBe("node");
    // the compiled entry point that `npm run build` emits (tsconfig.build.json: outDir dist, rootDir .)
    expect(cmd.at(-1)).toBe("dist/shared/main.js");
    expect(dockerfile).not.toMatch(/CMD \["npm"/);
  });

  it("checks /health without curl or wget", () => {
    const health = last("HEALTHCHECK");
    expect(health).toContain("/health");
    expect(health).not.toMatch(/curl|wget/);
    expect(jsonArgs(health.slice(health.indexOf("CMD")))[0]).toBe("node");
  });

  it("keeps the build context small and free of local state", () => {
    for (const entry of ["**/node_modules", "**/.data", "dist", ".git", ".env"])
      expect(dockerignore).toContain(entry);
    // and does not exclude what the Dockerfile copies
    for (const needed of ["shared", "functions", "package.json", "package-lock.json", "tsconfig.json"]) {
      expect(dockerignore).not.toContain(needed);
    }
  });

  it("its entrypoint reads <VAR>_FILE secrets into the environment and execs the command", async () => {
    const script = /<<'EOF' \/usr\/local\/bin\/aggregate-entrypoint\n([\s\S]*?)\nEOF\n/.exec(dockerfile)?.[1];
    expect(script).toBeDefined();
    const dir = await mkdtemp(path.join(tmpdir(), "aggregate-entrypoint-"));
    try {
      await writeFile(path.join(dir, "entrypoint.sh"), script!);
      await writeFile(path.join(dir, "password"), "s3cret $value 'quoted'\n");
      const { stdout } = await promisify(execFile)(
        "sh",
        [path.join(dir, "entrypoint.sh"), "node", "-e", "process.stdout.write(JSON.stringify(process.env))"],
        {
          env: {
            PATH: process.env["PATH"],
            AGGREGATE_NATS_PASSWORD_FILE: path.join(dir, "password"),
            AGGREGATE_LOG_LEVEL: "warn",
          },
        },
      );
      const env = JSON.parse(stdout) as Record<string, string>;
      expect(env["AGGREGATE_NATS_PASSWORD"]).toBe("s3cret $value 'quoted'");
      expect(env["AGGREGATE_NATS_PASSWORD_FILE"]).toBeUndefined();
      expect(env["AGGREGATE_ADMIN_TOKEN"]).toBeUndefined();
      expect(env["AGGREGATE_LOG_LEVEL"]).toBe("warn");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

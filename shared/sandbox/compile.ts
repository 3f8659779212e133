/**
 * Turns one program source file (an ES module, .js or .ts, which may import other files of its
 * folder) into the CommonJS text the sandbox evaluates. Bundling happens here, once, on the host:
 * the sandbox has no module loader, no file system and no packages.
 */
import { createHash } from "node:crypto";
import { dirname, relative, resolve, isAbsolute } from "node:path";
import { build, type Message, type Plugin } from "esbuild";
import type { CompiledModule } from "./types.ts";

/**
 * Bundles `path` and everything it imports from its own folder into one CommonJS script.
 * Rejects with an Error naming the file (and the line, when there is one) on a syntax error, an
 * import of a package or a `node:` module, or an import from outside the folder.
 */
export async function compileProgramFile(path: string): Promise<CompiledModule> {
  const entry = resolve(path);
  const folder = dirname(entry);
  let code: string;
  try {
    const result = await build({
      entryPoints: [entry],
      bundle: true,
      write: false,
      format: "cjs",
      platform: "neutral",
      target: "es2020",
      logLevel: "silent",
      // esbuild names each bundled file in a comment relative to the working directory; relative
      // to the folder, the text (and so the hash) does not depend on where the service runs.
      absWorkingDir: folder,
      plugins: [confineToFolder(folder)],
    });
    const output = result.outputFiles[0];
    if (output === undefined) throw new Error("esbuild produced no output");
    code = output.text;
  } catch (err) {
    throw new Error(`cannot compile ${path}: ${describeBuildFailure(err)}`, { cause: err });
  }
  return { file: path, code, hash: createHash("sha256").update(code).digest("hex") };
}

/**
 * A program is its folder: what it imports is bundled into it, so a package or a host module
 * would smuggle code (or host access) in that nobody reviewed with the program.
 */
function confineToFolder(root: string): Plugin {
  return {
    name: "confine-to-folder",
    setup(b) {
      b.onResolve({ filter: /.*/ }, (args) => {
        if (args.kind === "entry-point") return undefined;
        const spec = args.path;
        if (!spec.startsWith("./") && !spec.startsWith("../") && !isAbsolute(spec)) {
          return {
            errors: [
              {
                text: `imports "${spec}": programs may only import files of their own folder (no packages, no node: modules)`,
              },
            ],
          };
        }
        const target = resolve(args.resolveDir, spec);
        const rel = relative(root, target);
        if (rel.startsWith("..") || isAbsolute(rel)) {
          return { errors: [{ text: `imports "${spec}", which is outside the program's folder ${root}` }] };
        }
        return undefined;
      });
    },
  };
}

function describeBuildFailure(err: unknown): string {
  const errors = (err as { errors?: Message[] } | null)?.errors;
  if (!Array.isArray(errors) || errors.length === 0) return err instanceof Error ? err.message : String(err);
  const [first] = errors;
  const where = first?.location
    ? `${first.location.file}:${first.location.line}:${first.location.column + 1}: `
    : "";
  const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : "";
  return `${where}${first?.text ?? "unknown error"}${more}`;
}

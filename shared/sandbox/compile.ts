/**
 * Turns one program source file (an ES module, .js or .ts, which may import other files of its
 * folder) into the CommonJS text the sandbox evaluates. Bundling happens here, once, on the host:
 * the sandbox has no module loader, no file system and no packages.
 *
 * The sandbox instantiates a program afresh for every call, so what the module body costs is
 * paid per call. esbuild's CommonJS form of an ES module goes through export helpers
 * (`__export`, `__toCommonJS`: getters defined and copied) that cost about a third of a decide
 * call in QuickJS. So the program is also bundled as an ES module, and when that output is the
 * module body plus one trailing `export { … }` clause (always, for an ES module program), the
 * clause becomes a plain `module.exports = { … }` read once at the end of the body. The
 * CommonJS build stays the validator (it refuses top-level await, with the file and line) and
 * the fallback (a program written as CommonJS).
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
  let code: string;
  try {
    code = await bundle(entry, "cjs");
    code = exportsAsObject(await bundle(entry, "esm")) ?? code;
  } catch (err) {
    throw new Error(`cannot compile ${path}: ${describeBuildFailure(err)}`, { cause: err });
  }
  return { file: path, code, hash: createHash("sha256").update(code).digest("hex") };
}

async function bundle(entry: string, format: "cjs" | "esm"): Promise<string> {
  const folder = dirname(entry);
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    write: false,
    format,
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
  return output.text;
}

const EXPORT_CLAUSE = /\nexport\s*\{([^}]*)\};?\s*$/;
const EXPORT_ENTRY = /^([A-Za-z_$][\w$]*)(?:\s+as\s+([A-Za-z_$][\w$]*|"[^"\\]*"))?$/;

/**
 * esbuild's ES module bundle with its trailing export clause turned into `module.exports`, or
 * undefined when the text has any other shape (then the CommonJS build is used).
 */
function exportsAsObject(esm: string): string | undefined {
  const clause = EXPORT_CLAUSE.exec(esm);
  if (clause === null) return undefined;
  const body = esm.slice(0, clause.index);
  // Anything else that only a module may contain (an import, another export, import.meta,
  // top-level await) would not survive as a function body: leave such a program to CommonJS.
  if (/^\s*(?:import|export)\b|\bimport\.meta\b|^\s*await\b/m.test(body)) return undefined;
  const pairs: string[] = [];
  for (const raw of clause[1]!.split(",")) {
    const item = raw.trim();
    if (item === "") continue;
    const parts = EXPORT_ENTRY.exec(item);
    if (parts === null) return undefined;
    const local = parts[1]!;
    const exported =
      parts[2] === undefined ? local : parts[2].startsWith('"') ? (JSON.parse(parts[2]) as string) : parts[2];
    pairs.push(`${JSON.stringify(exported)}: ${local}`);
  }
  return `${body}\nmodule.exports = { ${pairs.join(", ")} };\n`;
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

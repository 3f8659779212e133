import { createHash } from "node:crypto";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { compileProgramFile } from "../../../shared/sandbox/index.ts";
import { programFolder } from "./program-fixture.ts";

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

describe("compileProgramFile", () => {
  it("bundles a module and the files of its folder it imports into one CommonJS script", async () => {
    await using folder = await programFolder({
      "decide.js": `import { double } from "./lib/math.js";\nexport function decide(s, c) { return { type: "x", n: double(c.n) }; }`,
      "lib/math.js": `export const double = (n) => n * 2;`,
    });
    const compiled = await compileProgramFile(folder.path("decide.js"));

    expect(compiled.file).toBe(folder.path("decide.js"));
    expect(compiled.hash).toBe(sha256(compiled.code));
    expect(compiled.code).not.toMatch(/\bimport\b/);
    type Exports = { decide?: (s: unknown, c: { n: number }) => unknown };
    const module = { exports: {} as Exports };
    const factory = runInNewContext(`(function (module, exports) {${compiled.code}\n})`) as (
      m: typeof module,
      e: Exports,
    ) => void;
    factory(module, module.exports);
    expect(module.exports.decide?.({}, { n: 21 })).toEqual({ type: "x", n: 42 });
  });

  it("exports an ES module through a plain module.exports, without esbuild's per-call export helpers", async () => {
    await using folder = await programFolder({
      "p.js": `const secret = 1;\nexport function decide() { return [{ type: "d" }]; }\nconst apply = (s) => s;\nexport { apply, secret as renamed };\nexport default 7;`,
      "c.js": `module.exports = { decide: () => [], apply: (s) => s };`,
    });
    const esm = await compileProgramFile(folder.path("p.js"));
    expect(esm.code).not.toMatch(/__export|__toCommonJS|__defProp/);
    const module = { exports: {} as Record<string, unknown> };
    (
      runInNewContext(`(function (module, exports) {${esm.code}\n})`) as (
        m: typeof module,
        e: unknown,
      ) => void
    )(module, module.exports);
    expect(Object.keys(module.exports).sort()).toEqual(["apply", "decide", "default", "renamed"]);
    expect(module.exports["renamed"]).toBe(1);
    expect(module.exports["default"]).toBe(7);
    // A program written as CommonJS keeps esbuild's CommonJS form.
    expect((await compileProgramFile(folder.path("c.js"))).code).toContain("module.exports = { decide:");
  });

  it("compiles TypeScript", async () => {
    await using folder = await programFolder({
      "decide.ts": `interface S { n: number }\nexport function decide(s: S): { type: string }[] { return [{ type: "t" + s.n }]; }`,
    });
    const compiled = await compileProgramFile(folder.path("decide.ts"));
    expect(compiled.code).not.toContain("interface");
    expect(compiled.code).toContain("function decide(s)");
  });

  it("gives the same hash for the same program wherever its folder is", async () => {
    const files = {
      "p.js": `import { k } from "./k.js";\nexport const decide = () => ({ type: k });`,
      "k.js": `export const k = "k";`,
    };
    await using a = await programFolder(files);
    await using b = await programFolder(files);
    const [first, second] = [
      await compileProgramFile(a.path("p.js")),
      await compileProgramFile(b.path("p.js")),
    ];
    expect(a.dir).not.toBe(b.dir);
    expect(second.hash).toBe(first.hash);
  });

  it("rejects an import of a node: module, naming the file and the line", async () => {
    await using folder = await programFolder({
      "decide.js": `// reads the disk\nimport fs from "node:fs";\nexport function decide() { return fs.readFileSync("/etc/passwd"); }`,
    });
    await expect(compileProgramFile(folder.path("decide.js"))).rejects.toThrow(
      /cannot compile .*decide\.js: decide\.js:2:\d+: imports "node:fs": programs may only import files of their own folder/,
    );
  });

  it("rejects an import of a package even when node_modules could resolve it", async () => {
    await using folder = await programFolder({
      "decide.js": `import * as v from "valibot";\nexport function decide() { return v; }`,
    });
    await expect(compileProgramFile(folder.path("decide.js"))).rejects.toThrow(
      /decide\.js:1:\d+: imports "valibot"/,
    );
  });

  it("rejects an import from outside the program's folder", async () => {
    await using folder = await programFolder({
      "sub/decide.js": `import { x } from "../x.js";\nexport function decide() { return x; }`,
      "x.js": `export const x = 1;`,
    });
    await expect(compileProgramFile(folder.path("sub/decide.js"))).rejects.toThrow(
      /imports "\.\.\/x\.js", which is outside the program's folder/,
    );
  });

  it("reports a syntax error with the file and the line", async () => {
    await using folder = await programFolder({
      "decide.js": `export function decide() {\n  return [\n    { type: "a" ,, }\n  ];\n}\n`,
    });
    await expect(compileProgramFile(folder.path("decide.js"))).rejects.toThrow(
      /cannot compile .*decide\.js: decide\.js:3:\d+: /,
    );
  });

  it("reports a syntax error in an imported file with that file's name", async () => {
    await using folder = await programFolder({
      "decide.js": `import { f } from "./helper.js";\nexport const decide = f;`,
      "helper.js": `export function f() {\n  return {;\n}`,
    });
    await expect(compileProgramFile(folder.path("decide.js"))).rejects.toThrow(/helper\.js:2:\d+: /);
  });
});

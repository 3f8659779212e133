/**
 * The one WebAssembly type the sandbox needs. TypeScript keeps the WebAssembly types in
 * lib.dom, which this project does not load (esbuild declares `Module` the same way); an
 * interface merges with any other declaration of it.
 */
declare global {
  namespace WebAssembly {
    interface Memory {
      readonly buffer: ArrayBuffer;
      grow(delta: number): number;
    }
  }
}

export {};

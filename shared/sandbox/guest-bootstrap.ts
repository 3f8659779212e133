/**
 * The JavaScript that runs inside each QuickJS context before any program code: it removes the
 * clock and randomness, freezes the intrinsics and returns the `install` function that turns the
 * two program factories into the `run` function the host calls. Kept as text because it is
 * evaluated by QuickJS, never by Node; the unit tests exercise every branch through the sandbox.
 *
 * What must stay true:
 * - Nothing the program can reach leads back to `violation`, `install` or `run`: they live in
 *   this closure only, so a program cannot clear the flag or call the runner itself.
 * - Every intrinsic the runner uses is captured before the program runs; they are frozen too, so
 *   capture is about speed and clarity, not about trust.
 * - The script uses no template literals: its text sits inside one, and `${` would be host
 *   interpolation.
 *
 * The protocol with the host (`run(op, a, b, c)`, all strings in, one string out):
 * - op 0, decide: a = state JSON, b = command JSON, c = context JSON.
 *   Reply `O\n<events JSON>\n<state JSON>`.
 * - op 1, applyAll: a = state JSON, b = events JSON. Reply `S\n<state JSON>`.
 * - Either may reply `E\n{"kind":"decide"|"apply"|"program","message":…,"stack":…,"reason":…}`;
 *   `reason` (program-failure.ts) says why a "program" failure happened.
 * JSON text never holds a raw newline, so the host splits on the first ones.
 */
export const GUEST_BOOTSTRAP = String.raw`(function () {
  "use strict";
  var G = globalThis;
  var freeze = Object.freeze;
  var getPrototypeOf = Object.getPrototypeOf;
  var getOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
  var defineProperty = Object.defineProperty;
  var objectKeys = Object.keys;
  var ownKeys = Reflect.ownKeys;
  var isArray = Array.isArray;
  var ObjectPrototype = Object.prototype;
  var ArrayPrototype = Array.prototype;
  var jsonParse = JSON.parse;
  var jsonStringify = JSON.stringify;
  var isFinite = Number.isFinite;
  var StringCtor = String;
  var PromiseCtor = Promise;
  var SetCtor = Set;
  var ErrorCtor = Error;
  var TypeErrorCtor = TypeError;
  var EvalErrorCtor = EvalError;
  var identifier = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
  var MAX_DEPTH = 256;
  var MAX_TEXT = 2000;
  var BUG_TYPES = [TypeError, ReferenceError, RangeError, SyntaxError, EvalError, URIError, InternalError];

  // The first forbidden capability touched during the current call; reset by run().
  var violation = null;
  // Whether the current call tried to generate code from strings (eval, Function): the call
  // fails with the EvalError the program got, and its reason says "forbidden".
  var codeFromStrings = false;

  function forbidden(what) {
    return function () {
      if (violation === null) violation = what;
      throw new TypeErrorCtor(what + " is not available to aggregate programs: they run without a clock or randomness");
    };
  }

  // --- Determinism: no clock, no randomness, no GC observation. ---------------------------
  var DateStub = forbidden("Date");
  DateStub.now = forbidden("Date.now");
  DateStub.parse = forbidden("Date.parse");
  DateStub.UTC = forbidden("Date.UTC");
  defineProperty(G, "Date", { value: DateStub, writable: true, enumerable: false, configurable: true });
  defineProperty(Math, "random", { value: forbidden("Math.random"), writable: true, enumerable: false, configurable: true });
  defineProperty(G, "WeakRef", { value: forbidden("WeakRef"), writable: true, enumerable: false, configurable: true });
  defineProperty(G, "FinalizationRegistry", {
    value: forbidden("FinalizationRegistry"),
    writable: true,
    enumerable: false,
    configurable: true,
  });

  // --- No code from strings: the parser recurses deeply on the host's stack (see the note in
  // quickjs-sandbox.ts), and a program has no business generating code. ------------------
  function noCodeFromStrings() {
    codeFromStrings = true;
    throw new EvalErrorCtor("code generation from strings is not available to aggregate programs");
  }
  defineProperty(G, "eval", { value: noCodeFromStrings, writable: true, enumerable: false, configurable: true });
  var functionPrototypes = [
    Function.prototype,
    getPrototypeOf(function* () {}),
    getPrototypeOf(async function () {}),
    getPrototypeOf(async function* () {}),
  ];
  for (var fp = 0; fp < functionPrototypes.length; fp++) {
    var noFunctionCtor = function () {
      noCodeFromStrings();
    };
    // instanceof Function must keep working, so the stand-in keeps the real prototype.
    defineProperty(noFunctionCtor, "prototype", { value: functionPrototypes[fp] });
    defineProperty(functionPrototypes[fp], "constructor", {
      value: noFunctionCtor,
      writable: true,
      enumerable: false,
      configurable: true,
    });
    if (fp === 0) defineProperty(G, "Function", { value: noFunctionCtor, writable: true, enumerable: false, configurable: true });
  }

  // --- Override taming. Freezing makes inherited data properties read-only, and in strict
  // code 'this.name = "X"' in an Error subclass would then throw. These become accessors whose
  // setter defines an own property on the instance, so the shared prototype stays untouched.
  function tame(obj, name) {
    var desc = getOwnPropertyDescriptor(obj, name);
    if (desc === undefined || !("value" in desc)) return;
    var value = desc.value;
    defineProperty(obj, name, {
      get: function () {
        return value;
      },
      set: function (next) {
        if (this === obj) throw new TypeErrorCtor("Cannot assign to read only property '" + StringCtor(name) + "' of a shared intrinsic");
        defineProperty(this, name, { value: next, writable: true, enumerable: true, configurable: true });
      },
      enumerable: desc.enumerable,
      configurable: false,
    });
  }
  var objectProtoKeys = ownKeys(ObjectPrototype);
  for (var ok = 0; ok < objectProtoKeys.length; ok++) tame(ObjectPrototype, objectProtoKeys[ok]);
  var errorCtors = [Error, AggregateError].concat(BUG_TYPES);
  for (var ec = 0; ec < errorCtors.length; ec++) {
    tame(errorCtors[ec].prototype, "constructor");
    tame(errorCtors[ec].prototype, "name");
    tame(errorCtors[ec].prototype, "message");
    tame(errorCtors[ec].prototype, "toString");
  }
  var globalNames = ownKeys(G);
  for (var gn = 0; gn < globalNames.length; gn++) {
    var gd = getOwnPropertyDescriptor(G, globalNames[gn]);
    var proto = gd !== undefined && typeof gd.value === "function" ? gd.value.prototype : undefined;
    if (proto !== null && typeof proto === "object" && proto !== ObjectPrototype) {
      tame(proto, "constructor");
      tame(proto, "toString");
      tame(proto, "valueOf");
      tame(proto, "toJSON");
    }
  }

  // --- Freeze every intrinsic reachable from the global object or from syntax, so that no
  // program can leave state behind for the next call. ------------------------------------
  var roots = [G];
  var hiddenIntrinsics = [
    function () { return getPrototypeOf([][Symbol.iterator]()); },
    function () { return getPrototypeOf(new Map()[Symbol.iterator]()); },
    function () { return getPrototypeOf(new Set()[Symbol.iterator]()); },
    function () { return getPrototypeOf(""[Symbol.iterator]()); },
    function () { return getPrototypeOf(/a/[Symbol.matchAll]("")); },
    function () { return getPrototypeOf([].values().map(function (x) { return x; })); },
    function () { return getPrototypeOf(Iterator.from({ next: function () { return { done: true }; } })); },
    function () { return getOwnPropertyDescriptor((function () { "use strict"; return arguments; })(), "callee").get; },
  ];
  for (var hi = 0; hi < hiddenIntrinsics.length; hi++) {
    try {
      roots.push(hiddenIntrinsics[hi]());
    } catch (e) {
      // Not in this engine version: nothing to freeze.
    }
  }
  roots = roots.concat(functionPrototypes);
  var seen = new SetCtor();
  while (roots.length > 0) {
    var o = roots.pop();
    if ((typeof o !== "object" && typeof o !== "function") || o === null || seen.has(o)) continue;
    seen.add(o);
    freeze(o);
    roots.push(getPrototypeOf(o));
    var keys = ownKeys(o);
    for (var k = 0; k < keys.length; k++) {
      var d = getOwnPropertyDescriptor(o, keys[k]);
      if ("value" in d) roots.push(d.value);
      else roots.push(d.get, d.set);
    }
  }
  seen = null;

  // --- The runner. ------------------------------------------------------------------------
  function clip(text) {
    text = StringCtor(text);
    return text.length > MAX_TEXT ? text.slice(0, MAX_TEXT) + "..." : text;
  }

  function describeValue(value) {
    switch (typeof value) {
      case "string":
        return clip(jsonStringify(value));
      case "undefined":
      case "number":
      case "boolean":
      case "bigint":
        return StringCtor(value) + (typeof value === "bigint" ? "n" : "");
      case "symbol":
        return value.toString();
      case "function":
        return "a function";
    }
    if (value === null) return "null";
    try {
      var text = jsonStringify(value);
      if (typeof text === "string") return clip(text);
    } catch (e) {
      // Fall through to the class name.
    }
    return ObjectPrototype.toString.call(value);
  }

  function isBugType(e) {
    for (var i = 0; i < BUG_TYPES.length; i++) if (e instanceof BUG_TYPES[i]) return true;
    return false;
  }

  // QuickJS reports its own stack limit as an error whose message is "stack overflow": an
  // InternalError, or a SyntaxError from the JSON parser.
  function isStackOverflow(e) {
    try {
      return e instanceof ErrorCtor && StringCtor(e.message) === "stack overflow";
    } catch (inner) {
      return false;
    }
  }

  // The runner's own answers travel as Reply objects, thrown or returned: a success text, or a
  // failure that run() serialises. A program cannot make one (it cannot reach Reply), so
  // nothing it throws can pass for the runner's answer.
  function Reply(text, failure) {
    this.text = text;
    this.failure = failure;
  }
  var ReplyPrototype = Reply.prototype;
  function isReply(value) {
    return value !== null && typeof value === "object" && getPrototypeOf(value) === ReplyPrototype;
  }

  function reply(kind, message, stack, reason) {
    return new Reply(null, {
      kind: kind,
      message: clip(message),
      stack: stack === undefined ? undefined : clip(stack),
      reason: reason,
    });
  }

  function failureText(failure) {
    return "E\n" + jsonStringify(failure);
  }

  // What a throw out of decide or apply means: an Error the program chose to throw rejects the
  // command; anything else is a bug in the program.
  function thrown(what, e) {
    try {
      if (e instanceof ErrorCtor) {
        var name = StringCtor(e.name);
        var message = StringCtor(e.message);
        var stack = typeof e.stack === "string" ? e.stack : undefined;
        if (isBugType(e)) {
          return reply("program", what + " threw " + name + ": " + message, stack, isStackOverflow(e) ? "stack" : "bug-error");
        }
        return reply(what, message, stack);
      }
      return reply("program", what + " threw a non-Error value: " + describeValue(e), undefined, "bad-throw");
    } catch (inner) {
      return reply("program", what + " threw a value that cannot be inspected", undefined, isStackOverflow(inner) ? "stack" : "bad-throw");
    }
  }

  function formatPath(root, path) {
    var out = root;
    for (var i = 0; i < path.length; i++) {
      // A path hundreds of levels deep says no more than its two ends.
      if (i === 8 && path.length > 16) {
        out += "[...]";
        i = path.length - 6;
        continue;
      }
      var key = path[i];
      if (typeof key === "number") out += "[" + key + "]";
      else if (identifier.test(key)) out += "." + key;
      else out += "[" + jsonStringify(key) + "]";
    }
    return out;
  }

  function className(value) {
    try {
      var ctor = getPrototypeOf(value).constructor;
      var name = typeof ctor === "function" ? ctor.name : "";
      if (typeof name === "string" && name !== "") return "a " + name;
    } catch (e) {
      // A proxy or a getter can throw; the generic answer is enough.
    }
    return "an object that is not a plain object";
  }

  // Why value is not plain JSON, or null. On failure path holds the keys leading to it.
  function notJson(value, path, depth, ancestors) {
    switch (typeof value) {
      case "string":
      case "boolean":
        return null;
      case "number":
        return isFinite(value) ? null : StringCtor(value) + " is not a JSON number";
      case "undefined":
        return "undefined is not JSON";
      case "bigint":
        return "a BigInt is not JSON";
      case "function":
        return "a function is not JSON";
      case "symbol":
        return "a Symbol is not JSON";
    }
    if (value === null) return null;
    if (depth >= MAX_DEPTH) return "nested deeper than " + MAX_DEPTH + " levels";
    if (ancestors.has(value)) return "a cycle is not JSON";
    var reason;
    if (isArray(value)) {
      if (getPrototypeOf(value) !== ArrayPrototype) return className(value) + " (not a plain array)";
      ancestors.add(value);
      for (var i = 0; i < value.length; i++) {
        path.push(i);
        reason = notJson(value[i], path, depth + 1, ancestors);
        if (reason !== null) return reason;
        path.pop();
      }
      ancestors.delete(value);
      return null;
    }
    var proto = getPrototypeOf(value);
    if (proto !== ObjectPrototype && proto !== null) return className(value) + " is not a plain object";
    ancestors.add(value);
    var keys = objectKeys(value);
    for (var k = 0; k < keys.length; k++) {
      path.push(keys[k]);
      reason = notJson(value[keys[k]], path, depth + 1, ancestors);
      if (reason !== null) return reason;
      path.pop();
    }
    ancestors.delete(value);
    return null;
  }

  // Checks value and returns its JSON text; throws a reply string when it is not plain JSON.
  function toJson(what, root, value) {
    var path = [];
    var reason;
    var text;
    try {
      reason = notJson(value, path, 0, new SetCtor());
      // A proxy or getter could answer differently the second time; stringify's output is JSON
      // text whatever they do, which is all the host relies on.
      if (reason === null) text = jsonStringify(value);
    } catch (e) {
      throw reply("program", what + " returned a value that threw while being read at " + formatPath(root, path) + ": " + describeThrown(e), undefined, isStackOverflow(e) ? "stack" : "non-json");
    }
    if (reason !== null) throw reply("program", what + " returned something that is not plain JSON at " + formatPath(root, path) + ": " + reason, undefined, "non-json");
    if (typeof text !== "string") throw reply("program", what + " returned something that is not plain JSON at " + root, undefined, "non-json");
    return text;
  }

  function describeThrown(e) {
    try {
      if (e instanceof ErrorCtor) return StringCtor(e.name) + ": " + StringCtor(e.message);
      return describeValue(e);
    } catch (inner) {
      return "a value that cannot be inspected";
    }
  }

  function instantiate(factory, file) {
    var module = { exports: {} };
    try {
      factory(module, module.exports, noRequire);
    } catch (e) {
      throw reply("program", "loading " + file + " threw " + describeThrown(e), undefined, isStackOverflow(e) ? "stack" : "load");
    }
    return module.exports;
  }

  function noRequire(name) {
    throw new TypeErrorCtor("require(" + describeValue(name) + ") is not available: programs are bundled when loaded");
  }

  function exported(exports, name, file) {
    var fn = exports !== null && (typeof exports === "object" || typeof exports === "function") ? exports[name] : undefined;
    if (typeof fn !== "function") throw reply("program", file + " does not export a function named " + name, undefined, "load");
    return fn;
  }

  function isPromise(value) {
    return value instanceof PromiseCtor;
  }

  function applyEvents(apply, state, events) {
    for (var i = 0; i < events.length; i++) {
      try {
        state = apply(state, events[i]);
      } catch (e) {
        throw thrown("apply", e);
      }
      if (isPromise(state)) throw reply("program", "apply returned a Promise: programs must be synchronous", undefined, "async");
      if (state === undefined) {
        throw reply("program", "apply returned undefined for events[" + i + "] (type " + describeValue(events[i] !== null && typeof events[i] === "object" ? events[i].type : undefined) + "): it must return the next state", undefined, "bad-return");
      }
    }
    return state;
  }

  function install(decideFactory, decideFile, applyFactory, applyFile) {
    // A fresh instance of the program for every call: module-level variables start over, so
    // nothing carries from one aggregate or call to the next.
    function programs(needDecide) {
      if (applyFactory === null) {
        var both = instantiate(decideFactory, decideFile);
        return {
          decide: needDecide ? exported(both, "decide", decideFile) : undefined,
          apply: exported(both, "apply", applyFile),
        };
      }
      return {
        decide: needDecide ? exported(instantiate(decideFactory, decideFile), "decide", decideFile) : undefined,
        apply: exported(instantiate(applyFactory, applyFile), "apply", applyFile),
      };
    }

    function decideOp(stateText, commandText, contextText, pendingText) {
      var caughtUp = null;
      if (pendingText !== undefined) {
        // As applyAll would: its own instance of apply, and decide sees the state through JSON.
        caughtUp = toJson("apply", "state", applyEvents(programs(false).apply, jsonParse(stateText), jsonParse(pendingText)));
        stateText = caughtUp;
        // A string-to-code attempt the fold caught is not decide's: the reason of a failure
        // below stays what it would be in a call of its own (a forbidden use still fails the call).
        codeFromStrings = false;
      }
      var p = programs(true);
      var decide = p.decide;
      var result;
      try {
        result = decide(jsonParse(stateText), jsonParse(commandText), jsonParse(contextText));
      } catch (e) {
        return thrown("decide", e);
      }
      if (isPromise(result)) return reply("program", "decide returned a Promise: programs must be synchronous", undefined, "async");
      var events;
      if (isArray(result)) events = result;
      else if (result !== null && typeof result === "object") events = [result];
      else return reply("program", "decide must return an event object or an array of events, got " + describeValue(result), undefined, "bad-return");
      var eventsText = toJson("decide", "events", events);
      // apply folds from a fresh copy of the state and sees the events exactly as rehydration
      // will (parsed from their JSON), even if decide mutated or kept them: the state after a
      // command must equal a replay of its events.
      events = jsonParse(eventsText);
      for (var i = 0; i < events.length; i++) {
        var ev = events[i];
        if (ev === null || typeof ev !== "object" || isArray(ev)) {
          return reply("program", "decide returned events[" + i + "] that is not an object: " + describeValue(ev), undefined, "bad-return");
        }
        if (typeof ev.type !== "string") {
          return reply("program", "decide returned events[" + i + "] without a string type: " + describeValue(ev), undefined, "bad-return");
        }
      }
      var next = applyEvents(p.apply, jsonParse(stateText), events);
      var text = "O\n" + eventsText + "\n" + toJson("apply", "state", next);
      return new Reply(caughtUp === null ? text : text + "\n" + caughtUp, null);
    }

    function applyAllOp(stateText, eventsText) {
      var p = programs(false);
      var next = applyEvents(p.apply, jsonParse(stateText), jsonParse(eventsText));
      return new Reply("S\n" + toJson("apply", "state", next), null);
    }

    function run(op, a, b, c, d) {
      violation = null;
      codeFromStrings = false;
      var out;
      try {
        out = op === 0 ? decideOp(a, b, c, d) : applyAllOp(a, b);
      } catch (e) {
        // Not a Reply: a getter or proxy of the program threw where the runner reads its
        // exports, or the engine ran out of stack. Only an interrupt passes through (it cannot be
        // caught), and the host knows it set one.
        out = isReply(e) ? e : reply("program", "the program failed: " + describeThrown(e), undefined, isStackOverflow(e) ? "stack" : "bug-error");
      }
      if (violation !== null) {
        out = reply("program", "the program used " + violation + ", which is not available to aggregate programs (no clock, no randomness)", undefined, "forbidden");
      }
      if (out.failure === null || out.failure === undefined) return out.text;
      if (codeFromStrings && out.failure.kind === "program") out.failure.reason = "forbidden";
      return failureText(out.failure);
    }

    // Load-time check: both modules evaluate and export what they must.
    violation = null;
    var check;
    try {
      programs(true);
      check = "ok";
    } catch (e) {
      check = failureText((isReply(e) ? e : reply("program", "loading failed: " + describeThrown(e), undefined, "load")).failure);
    }
    if (violation !== null) {
      check = failureText(reply("program", "the program used " + violation + " while loading, which is not available to aggregate programs", undefined, "forbidden").failure);
    }
    return [check, run];
  }

  return install;
})()`;

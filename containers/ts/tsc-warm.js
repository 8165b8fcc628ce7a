// flora-eval's warm tsc: Debian's own tsc.js (the code `tsc` runs), loaded once and run once
// per request, with the parsed default lib files kept between programs.
//
// Protocol (harness/execute/worker.py, "Warm steps"): after one {"ready": true} line, each
// request line {"argv": ["tsc", ...], "cwd": dir} is answered by one line {"exit_code",
// "stdout", "stderr"} once the outputs are written into cwd. tsc's `executeCommandLine` runs
// exactly as the command would: its output is what it writes through `sys.write` (tsc's
// stdout; it writes nothing else), its exit code what it hands `sys.exit`. An internal error
// of tsc ends this process (the worker then runs the program's step cold).
"use strict";
const fs = require("fs");
const Module = require("module");
const path = require("path");
const readline = require("readline");

const TSC = "/usr/share/nodejs/typescript/lib/tsc.js";
const LIB_DIR = path.dirname(TSC) + path.sep;
const LAST_LINE = "ts.executeCommandLine(ts.sys, ts.noop, ts.sys.args);";

function loadTsc() {
  const text = fs.readFileSync(TSC, "utf8");
  if (!text.trimEnd().endsWith(LAST_LINE)) throw new Error(`${TSC} does not end with tsc's entry call`);
  const mod = new Module(TSC, null);
  mod.filename = TSC;
  mod.paths = Module._nodeModulePaths(path.dirname(TSC));
  mod._compile(text.trimEnd().slice(0, -LAST_LINE.length) + "\nmodule.exports = ts;\n", TSC);
  return mod.exports;
}

const ts = loadTsc();

// The lib files (lib.*.d.ts) never change: parse each once per parse setting and hand the same
// SourceFile to every program, as the language service's document registry does. Bound
// declarations stay on the SourceFile, so they are not bound again either.
const parseSourceFile = ts.createSourceFile;
const libFiles = new Map();
ts.createSourceFile = function (fileName, text, languageVersionOrOptions, setParentNodes, scriptKind) {
  if (!fileName.startsWith(LIB_DIR)) {
    return parseSourceFile(fileName, text, languageVersionOrOptions, setParentNodes, scriptKind);
  }
  const setting = typeof languageVersionOrOptions === "object"
    ? [languageVersionOrOptions.languageVersion, languageVersionOrOptions.impliedNodeFormat]
    : [languageVersionOrOptions];
  const key = JSON.stringify([fileName, setting, !!setParentNodes, scriptKind]);
  const known = libFiles.get(key);
  if (known && known.text === text) return known;
  const parsed = parseSourceFile(fileName, text, languageVersionOrOptions, setParentNodes, scriptKind);
  libFiles.set(key, parsed);
  return parsed;
};

class Exit {
  constructor(code) { this.code = code; }
}

function compile(request) {
  process.chdir(request.cwd);
  const written = [];
  const sys = Object.assign({}, ts.sys, {
    args: request.argv.slice(1),
    write: (s) => { written.push(s); },
    writeOutputIsTTY: () => false,
    exit: (code) => { throw new Exit(code === undefined ? 0 : code); },
  });
  let code = 0;
  try {
    ts.executeCommandLine(sys, ts.noop, sys.args);
  } catch (e) {
    if (!(e instanceof Exit)) throw e;
    code = e.code;
  }
  return { exit_code: code, stdout: written.join(""), stderr: "" };
}

function answer(obj) { fs.writeSync(1, JSON.stringify(obj) + "\n"); }
// Parse the default lib files before the first program (not on its time): a type-only check
// of a tiny file with the target languages/ts.toml gives tsc.
const warmup = fs.mkdtempSync(path.join(require("os").tmpdir(), "tsc-warm-"));
fs.writeFileSync(path.join(warmup, "warmup.ts"), "const x: number[] = [1].map((n) => n + 1);\n");
compile({ argv: ["tsc", "--target", "esnext", "--skipLibCheck", "--noEmit", "warmup.ts"], cwd: warmup });
fs.rmSync(warmup, { recursive: true, force: true });
process.chdir("/");
answer({ ready: true, tsc: ts.version });
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (!line.trim()) return;
  answer(compile(JSON.parse(line)));
}).on("close", () => process.exit(0));

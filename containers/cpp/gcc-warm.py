"""flora-eval's warm g++: MultiPL-E's C++ programs all start with the same two includes,
`#include<assert.h>` and `#include<bits/stdc++.h>`; parsing the second is most of a compile.
This server compiles such a program with that header precompiled (built into the image,
forced in first with -include: the program's own two includes then add nothing). The
header's lines are then no part of main.cpp's, so g++ says the same of main.cpp's own
lines either way; only a message that names the include chain (an error inside a standard
header, shown "from main.cpp:2" cold) would differ: such a compile, and any other program,
runs the step's own command, so what is observed is what the cold g++ gives (its
diagnostics, its exit code; tests/test_execute_warm.py compares them).

Protocol (harness/execute/worker.py, "Warm steps"): after {"ready": true}, each line
{"argv", "cwd", "env"} is answered by {"exit_code", "stdout", "stderr"}.
"""

import json
import os
import subprocess
import sys

PRELUDE = "#include<assert.h>\n#include<bits/stdc++.h>\n"
PCH = "/opt/flora-eval/pch/stdc++.h"  # beside it: stdc++.h.gch, built with -std=c++17
CHAIN = ("In file included from", "<command-line>", "stdc++.h")  # where the paths' words differ


def run(argv, cwd, env):
    done = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    return {"exit_code": done.returncode, "stdout": done.stdout.decode("utf-8", "surrogateescape"),
            "stderr": done.stderr.decode("utf-8", "surrogateescape")}


def compile_one(request):
    argv, cwd, env = request["argv"], request["cwd"], request["env"]
    source = next((a for a in argv[1:] if a.endswith(".cpp")), None)
    try:
        with open(os.path.join(cwd, source), encoding="utf-8", errors="replace") as f:
            head = f.read(len(PRELUDE))
    except (OSError, TypeError):
        head = ""
    if head == PRELUDE:
        fast = run([argv[0], "-include", PCH] + argv[1:], cwd, env)
        if not any(s in fast["stdout"] + fast["stderr"] for s in CHAIN):
            return fast
    return run(argv, cwd, env)


def main():
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        if line.strip():
            out.write(json.dumps(compile_one(json.loads(line))) + "\n")
            out.flush()


if __name__ == "__main__":
    main()

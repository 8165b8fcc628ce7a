"""Warm toolchains (worker.py's "Warm steps", languages' `warm`): a long-lived compiler per
lane answers the compile step on the program's behalf, and nothing a program does changes
what is observed of it or of its neighbours.

On the host (fast): the worker with a small warm "compiler" of ours, killed, hung, lying and
retired by quota. In Docker, for every language with a warm step or a fast start: warm and
cold statuses and outputs are identical on MultiPL-E's test inputs, the canaries, a wrong and
a broken completion of 20 HumanEval rows and the language's hostile suite; fast starts (a
step's `fast_argv`: clj, elixir, scala, swift) against the step's own command; with ts's real
warm tsc: the warm process killed mid-batch, a program that hangs it, a program that tries to
reach it from its own uid; scala's resident compiler forgetting each program's classes;
swiftc-fast writing swiftc's binary."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from test_execute_support import offered_language, with_timeout
from test_execute_worker import run_worker
from test_hostile_languages import problems

from harness.bench.programs import BROKEN, WRONG, mixed_programs
from harness.bench.programs import test_input_programs as input_programs  # (not a test)
from harness.execute.engine import Executor
from harness.execute.languages import load_language, result_of
from harness.execute.sandbox import Limits, worker_config
from harness.problems import load_problems

MULTIPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "multipl-e"
HOSTILE = Path(__file__).resolve().parent / "hostile"

# The "compiler": reads main.py's first line; HANG hangs, DIE dies, LIE answers nonsense;
# else writes out.txt and says which process compiled it. `--once`: the cold command.
COMPILER = textwrap.dedent('''
    import json, os, sys, time
    def compile(cwd):
        first = open(os.path.join(cwd, "main.py")).readline().strip()
        if first == "#HANG":
            time.sleep(60)
        if first == "#DIE":
            os._exit(3)
        if first == "#LIE" and not ONCE:
            return None
        if first == "#FAIL":
            return {"exit_code": 1, "stdout": "main.py:1: error\\n", "stderr": ""}
        open(os.path.join(cwd, "out.txt"), "w").write("compiled")
        return {"exit_code": 0, "stdout": "", "stderr": ""}
    ONCE = "--once" in sys.argv
    if ONCE:
        answer = compile(os.getcwd())
        sys.stdout.write(answer["stdout"])
        sys.exit(answer["exit_code"])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        answer = compile(json.loads(line)["cwd"])
        print("not json" if answer is None else json.dumps(dict(answer, stderr=str(os.getpid()))), flush=True)
''')


def compile_steps(tmp_path: Path, timeout_s: float = 2.0, quota: int = 100) -> list[dict]:
    compiler = tmp_path / "compiler.py"
    compiler.write_text(COMPILER)
    return [{"argv": [sys.executable, str(compiler), "--once"], "timeout_s": timeout_s, "ok_exit": [0],
             "warm": {"argv": [sys.executable, str(compiler)], "quota": quota, "start_s": 10}},
            {"argv": [sys.executable, "-c", "print(open('out.txt').read())"], "timeout_s": 2.0,
             "ok_exit": None}]


def test_warm_step_answers_like_the_cold_one_and_survives_its_failures(tmp_path):
    sources = ["#ok", "#FAIL", "#HANG", "#ok", "#DIE", "#ok", "#LIE", "#ok"]
    got = run_worker(tmp_path, compile_steps(tmp_path, timeout_s=1.0), sources, lanes=1)
    first = [got[str(i)][0] for i in range(len(sources))]
    ok = [got[str(i)] for i in (0, 3, 5, 7)]
    assert all(steps[0]["warm"] and steps[1]["stdout"] == "compiled\n" for steps in ok)
    assert first[1]["warm"] and first[1]["exit_code"] == 1 and first[1]["stdout"] == "main.py:1: error\n"
    assert len(got["1"]) == 1  # a failed compile step stops the program, as cold
    # a hung compiler: that program's Timeout (the step's own limit), a fresh process after it
    assert first[2]["timed_out"] and first[2]["stopped"] == "time" and 1.0 <= first[2]["seconds"] < 2.0
    assert first[3]["stderr"] != first[0]["stderr"]
    # a dying or lying one: restarted, and the program's step runs cold (the cold outcome)
    assert first[4]["warm_fallback"] == "it died" and first[4]["exit_code"] == 3 and "warm" not in first[4]
    assert first[6]["warm_fallback"] == "a bad answer" and first[6]["exit_code"] == 0
    assert got["6"][1]["stdout"] == "compiled\n"


def test_warm_process_is_restarted_after_its_quota(tmp_path):
    got = run_worker(tmp_path, compile_steps(tmp_path, quota=2), ["#a", "#b", "#c", "#d", "#e"], lanes=1)
    pids = [got[str(i)][0]["stderr"] for i in range(5)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


def test_warm_config_is_data_and_cold_leaves_it_out():
    clj = load_language("clj")
    fast, plain = (worker_config(clj, Limits.of(clj, cold=cold))["steps"][0] for cold in (False, True))
    assert fast["fast"] and fast["argv"] == list(clj.steps[0].fast_argv)
    assert not plain["fast"] and plain["argv"] == list(clj.steps[0].argv)
    cold_clj = dataclasses.replace(clj, toolchains="cold")
    assert worker_config(cold_clj, Limits.of(cold_clj))["steps"][0]["fast"] is False
    ts = load_language("ts")
    assert [bool(s.warm) for s in ts.steps] == [True, False]
    warm, cold = Limits.of(ts), Limits.of(ts, cold=True)
    assert worker_config(ts, warm)["steps"][0]["warm"]["argv"][0] == "node"
    assert worker_config(ts, cold)["steps"][0]["warm"] is None
    # the program keeps its own memory and pids; the warm process gets its own on top
    assert warm.container_memory > cold.container_memory and warm.container_pids > cold.container_pids
    assert warm.key() == cold.key()  # same observations: the path is not in the cache key
    assert worker_config(dataclasses.replace(ts, toolchains="cold"), warm)["steps"][0]["warm"] is None


# what is allowed to differ between the paths' compile steps: the time and the provenance
DIFFERS = {"seconds": 0, "warm": None}


def with_hostile(lang) -> tuple:
    """The language's hostile suite (source -> what it expects), if it has one, and the
    language under the suite's own (short) run-step limit."""
    hostile = HOSTILE / f"{lang.key}.toml"
    if not hostile.is_file():
        return lang, {}
    data = tomllib.loads(hostile.read_text(encoding="utf-8"))
    expected = {p["source"]: p["expect"] for p in data["programs"].values()}
    return with_timeout(lang, data["timeout_s"]), expected


def run_both(lang, programs: list[str], canary: bool = True, jobs: int = 2) -> dict[bool, list]:
    found = {}
    for cold in (False, True):
        with Executor(jobs=jobs, cache=None, use_cache=False, cold_toolchains=cold) as executor:
            got = dict(executor.pool(lang, canary=canary).run(programs))
        found[cold] = [result_of(lang, p, got[i]) for i, p in enumerate(programs)]
    return found


# Sources that name files the program's uid cannot read: the warm compiler cannot either.
REACHING_SOURCES = {
    "ts": ['/// <reference path="/etc/shadow" />\nconsole.log(1);\n',
           '/// <reference path="/work/lane1/main.ts" />\nconsole.log(1);\n'],
}


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("key", ["ts", "java", "cpp", "scala"])
def test_warm_and_cold_observe_the_same(key):
    lang = offered_language(key)
    # a wrong completion of 20 rows, a broken one of 5 (a compile error is one path: few suffice)
    programs = mixed_programs(lang, MULTIPLE / "humaneval", rows=20, broken_rows=5)
    programs += REACHING_SOURCES.get(key, [])
    assert len(programs) >= 29
    lang, expected = with_hostile(lang)
    programs += list(expected)
    found = run_both(lang, programs)
    for result in found[False] + found[True]:  # a hostile program: what its suite expects, both ways
        if result.program in expected:
            assert problems(lang, "hostile", expected[result.program], result) == []
    for warm, cold in zip(found[False], found[True], strict=True):
        assert warm.observation[0].get("warm") is True, warm.observation[0].get("warm_fallback")
        assert "warm" not in cold.observation[0]
        assert warm.observation[0] | DIFFERS == cold.observation[0] | DIFFERS, cold.program[-300:]
        # a memory hog (and java's fork bomb) ends by whichever limit it meets first, which
        # varies between two runs of the same path: both not OK is all the suite asks
        if expected.get(warm.program) == "not_ok":
            continue
        assert warm.status == cold.status, cold.program[-300:]
        if warm.status != "Timeout" and len(warm.observation) == 1:  # a run step's output may vary
            assert (warm.exit_code, warm.stdout, warm.stderr) == (cold.exit_code, cold.stdout, cold.stderr)
    statuses = {r.status for r in found[True] if r.program not in expected}
    assert statuses >= {"OK", "SyntaxError"} and len(statuses) >= 3  # passing, failing, not compiling


def ts_programs() -> list[tuple[str, str]]:
    lang = load_language("ts")
    return [(lang.canary.good, "OK"), (lang.canary.bad, "AssertionError"),
            ("let x: number = 'a';\n", "SyntaxError")]


def warm_pids(client, container: str) -> list[int]:
    script = ("import os\nfor p in os.listdir('/proc'):\n if p.isdigit() and int(p) != os.getpid():\n"
              "  try: c=open('/proc/'+p+'/cmdline').read()\n  except OSError: continue\n"
              "  if 'tsc-warm' in c: print(p)")
    run = client.api.exec_create(container, ["python3", "-c", script], user="0")
    return [int(x) for x in client.api.exec_start(run["Id"]).split()]


def kill_in(client, container: str, pid: int) -> None:
    run = client.api.exec_create(container, ["python3", "-c", f"import os; os.kill({pid}, 9)"], user="0")
    client.api.exec_start(run["Id"])


@pytest.mark.docker
@pytest.mark.slow
def test_killed_warm_process_mid_batch_changes_no_status():
    """SIGKILL the warm tsc from outside the worker twice while one batch of 18 programs runs
    (after the 3rd result, and at the first result from the 9th on that finds a new one): no
    status changes, and the batch ends with a warm process that was never killed."""
    lang = offered_language("ts")
    cases = ts_programs() * 6
    killed = []
    with Executor(jobs=1, cache=None, use_cache=False) as executor:
        pool = executor.pool(lang)  # the canaries started the warm tsc
        client, container = executor.client, next(iter(pool.conns)).id
        results = {}
        for index, steps in pool.run([source for source, _ in cases]):
            results[index] = result_of(lang, cases[index][0], steps)
            if len(results) == 3 or (len(results) >= 9 and len(set(killed)) < 2):
                for pid in warm_pids(client, container):
                    if pid not in killed:
                        kill_in(client, container, pid)  # SIGKILL, from outside the worker
                        killed.append(pid)
        after = warm_pids(client, container)
    assert len(set(killed)) >= 2, killed
    assert [results[i].status for i in range(len(cases))] == [status for _, status in cases]
    assert len(after) == 1 and after[0] not in killed


@pytest.mark.docker
@pytest.mark.slow
def test_a_program_that_hangs_the_compiler_is_its_own_timeout():
    lang = offered_language("ts")
    # tsc needs seconds for this one (4000 generic functions): past a 1.5 s compile limit
    slow = "\n".join(f"function f{i}<T extends {{a{i}: number}}>(x: T): T['a{i}'] "
                     f"{{ return x.a{i} + {i}; }}\nconst v{i}: number = f{i}({{a{i}: {i}, b: 's'}});"
                     for i in range(4000))
    lang = dataclasses.replace(lang, steps=(dataclasses.replace(lang.steps[0], timeout_s=1.5),
                                            lang.steps[1]))
    cases = ts_programs() + [(slow, "Timeout")] + ts_programs()
    with Executor(jobs=1, cache=None, use_cache=False, confirm_timeouts=False) as executor:
        got = dict(executor.pool(lang).run([s for s, _ in cases]))
    results = [result_of(lang, s, got[i]) for i, (s, _) in enumerate(cases)]
    assert [r.status for r in results] == [status for _, status in cases]
    hung = results[3].observation[0]
    assert hung["warm"] and hung["timed_out"] and 1.5 <= hung["seconds"] < 3
    assert all(r.observation[0].get("warm") for r in results)


REACH = r"""
declare var require: any;
declare var process: any;
const fs = require('fs');
const found: any = {uid: process.getuid()};
for (const p of fs.readdirSync('/proc')) {
  let cmd = '';
  try { cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8'); } catch (e) { continue; }
  if (!cmd.includes('tsc-warm')) continue;
  found.pid = p;
  const tries: any = {
    kill: () => process.kill(Number(p), 'SIGKILL'),
    list_fds: () => fs.readdirSync(`/proc/${p}/fd`),
    open_stdin: () => fs.openSync(`/proc/${p}/fd/0`, 'w'),
    open_stdout: () => fs.openSync(`/proc/${p}/fd/1`, 'r'),
    environ: () => fs.readFileSync(`/proc/${p}/environ`),
  };
  for (const name of Object.keys(tries)) {
    try { tries[name](); found[name] = 'reached'; } catch (e) { found[name] = e.code; }
  }
}
console.log(JSON.stringify(found));
"""


@pytest.mark.docker
def test_a_program_cannot_reach_the_warm_process():
    lang = offered_language("ts")
    with Executor(jobs=1, cache=None, use_cache=False) as executor:
        got = dict(executor.pool(lang).run([REACH, REACH]))
    first, second = (json.loads(got[i][1]["stdout"]) for i in (0, 1))
    assert first["uid"] != 0 and first["pid"] == second["pid"]  # the same warm tsc served both
    tries = ("kill", "list_fds", "open_stdin", "open_stdout", "environ")
    assert {first[k] for k in tries} <= {"EPERM", "EACCES"}
    assert got[1][0]["warm"] is True and "warm_fallback" not in got[1][0]


# Programs one after another in one lane (one warm scalac, one compiler instance): what one
# defines is not there for the next. A passes; B uses A's class, object and method without
# defining them; P puts an object in a package (the compiler instance is dropped after it);
# Q uses it.
SCALA_AFTER_ANOTHER = [
    ("class Helper { def x = 1 }\nobject Helper { def y = 2 }\nobject Problem {\n  def f = 3\n"
     "  def main(args: Array[String]) = { assert(new Helper().x + Helper.y == f) }\n}\n", "OK"),
    ("object Problem {\n  def main(args: Array[String]) = {\n"
     "    assert(new Helper().x + Helper.y == Problem.f)\n  }\n}\n", "SyntaxError"),
    ("package foo { object Bar { def z = 1 } }\nobject Problem {\n"
     "  def main(args: Array[String]) = { assert(foo.Bar.z == 1) }\n}\n", "OK"),
    ("object Problem {\n  def main(args: Array[String]) = { assert(foo.Bar.z == 1) }\n}\n", "SyntaxError"),
]


@pytest.mark.docker
@pytest.mark.slow
def test_a_warm_scalac_forgets_each_program():
    lang = offered_language("scala")
    sources = [source for source, _ in SCALA_AFTER_ANOTHER]
    found = run_both(lang, sources, jobs=1)  # one lane: one warm scalac sees them all
    assert [r.status for r in found[False]] == [status for _, status in SCALA_AFTER_ANOTHER]
    for warm, cold in zip(found[False], found[True], strict=True):
        assert warm.observation[0].get("warm") is True, warm.observation[0].get("warm_fallback")
        assert warm.observation[0] | DIFFERS == cold.observation[0] | DIFFERS
        assert warm.status == cold.status
    assert "not found: type Helper" in found[False][1].stderr + found[False][1].stdout



FAST = [key for key in ("clj", "elixir", "scala", "swift") if load_language(key).fast_steps]
# Fewer rows (wrong, broken) where the cold path is slow: scala's cold scalac is 3-7 s a
# program, and test_warm_and_cold_observe_the_same, whose warm path starts fast, compares its
# 20 rows' statuses already.
FAST_ROWS = {"scala": (6, 2)}
# Programs a language's fast start must also get right. elixir: what a program can see of how
# its VM was started, printed (the same either way); swift: a module read from the image's
# cache, one it has not (built into $HOME as cold), a warning, a link error.
FAST_SOURCES = {
    "elixir": ["IO.inspect({System.get_env() |> Enum.sort(), :init.get_arguments(),\n"
               "            :init.get_plain_arguments(), System.argv(), :code.get_path(),\n"
               "            System.schedulers_online(), File.cwd!()}, limit: :infinity)\n"],
    "swift": ['import Foundation\n\nfunc hypot2(a: Double, b: Double) -> Double {\n'
              '    return sqrt(a * a + b * b)\n}\n'
              'assert(hypot2(a: 3, b: 4) == 5)\nprint(String(format: "%.1f", hypot2(a: 3, b: 4)))\n',
              'import _Builtin_limits\n\nassert(Int32.max == 2147483647)\n',
              'func twice(x: Int) -> Int {\n    var y = x * 2\n    return y\n}\nassert(twice(x: 2) == 4)\n',
              '@_silgen_name("flora_undefined") func undefined() -> Int\nassert(undefined() == 1)\n'],
}


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("key", FAST)
def test_fast_starts_observe_what_the_plain_command_does(key):
    """A step's `fast_argv` (clj, scala: the run step's JVM with a class-data archive, C1 only
    and the serial collector; elixir: the VM the `elixir` script starts, without the scripts'
    forks, on one scheduler that does not spin; swift: the driver's jobs without the driver,
    modules from the image) against the step's own argv, MultiPL-E's command
    (`--cold-toolchains`): the same statuses, exit codes and outputs, and the same observation
    of every compile step, on the test inputs, the canaries, a wrong and a broken completion
    of 20 rows (scala: 6 and 2) and the hostile suite."""
    lang = offered_language(key)
    rows, broken_rows = FAST_ROWS.get(key, (20, 20))
    programs = mixed_programs(lang, MULTIPLE / "humaneval", rows=rows, broken_rows=broken_rows)
    programs += FAST_SOURCES.get(key, [])
    assert len(set(programs)) >= (40 if key not in FAST_ROWS else 10)
    lang, expected = with_hostile(lang)
    found = run_both(lang, programs + list(expected))
    for fast, plain in zip(found[False], found[True], strict=True):
        for index, step in enumerate(lang.steps):
            if step.fast_argv and index < len(fast.observation):
                assert fast.observation[index].get("fast") is True
                assert "fast" not in plain.observation[index]
        compiled = min(len(lang.steps) - 1, len(plain.observation))  # the compile steps that ran
        assert [comparable(o) for o in fast.observation[:compiled]] == \
               [comparable(o) for o in plain.observation[:compiled]], plain.program[-300:]
        if plain.program in expected:  # a hostile program: what its suite expects, both ways
            assert problems(lang, "hostile", expected[plain.program], fast) == []
            assert problems(lang, "hostile", expected[plain.program], plain) == []
            if expected[plain.program] != "not_ok":  # (which limit a hog meets first is a race)
                assert fast.status == plain.status, plain.program[-300:]
            continue
        assert (fast.status, fast.exit_code) == (plain.status, plain.exit_code), plain.program[-300:]
        assert without_run_to_run(fast.stdout) == without_run_to_run(plain.stdout), plain.program[-300:]
        assert without_run_noise(fast.stderr) == without_run_noise(plain.stderr)
    assert {r.status for r in found[True]} >= {"OK", "Exception"}
    if len(lang.steps) > 1:  # and some that did not compile
        assert any(len(r.observation) < len(lang.steps) for r in found[True])


def without_run_to_run(text: str) -> str:
    """Output less what differs between two runs of the same command: ExUnit's random seed and
    its timings ("Running ExUnit with seed: 123, max_cases: 2", "Finished in 0.03 seconds
    (0.02s on load, ...)"). No status rule reads either (languages/elixir.toml)."""
    text = re.sub(r"(?m)^(Running ExUnit with seed: )\d+", r"\1#", text)
    return re.sub(r"(?m)^Finished in [0-9.]+ seconds \([^)]*\)$", "Finished in #", text)


def comparable(step: dict) -> dict:
    """A compile step's observation less its time, its provenance (fast, warm) and `without_temp_dir`."""
    return {k: without_temp_dir(v) if isinstance(v, str) else v for k, v in step.items()
            if k not in ("seconds", "fast", "warm")}


def without_temp_dir(text: str) -> str:
    """Less the name of the swift driver's temp dir (a link error names it; random either way)."""
    return re.sub(r"TemporaryDirectory\.\w+", "TemporaryDirectory.#", text)


def without_run_noise(text: str) -> str:
    """What differs between two runs of one program on either path: a JVM error report's
    identity hash codes (#object[... 0x6253c26 "...@6253c26"], which the archive changes; and
    so where a long report is cut), Swift's crash backtrace (its addresses move with ASLR),
    and `without_temp_dir`."""
    text = text.split("\n... [")[0].split("\n*** Signal ")[0]
    return re.sub(r"(0x|@)[0-9a-f]{1,8}\b", r"\1#", without_temp_dir(text))[:1500]  # (the hashes' lengths)


# What a WRONG and a BROKEN completion give by the language's rules (a runtime error, a read
# error), for a language the comparisons above do not run: its bench mix means what it says.
NAMED = {"rkt": ("Exception", "SyntaxError")}


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(NAMED))
def test_wrong_and_broken_completions_fail_as_named(key):
    lang = offered_language(key)
    rows = load_problems(key, MULTIPLE / "humaneval", limit=4).problems
    expected = {lang.canary.good: "OK", lang.canary.bad: lang.canary.bad_status}
    for body, status in zip((WRONG[key], BROKEN[key]), NAMED[key], strict=True):
        expected |= {row.prompt + body + "\n" + row.tests: status for row in rows}
    with Executor(jobs=2, cache=None, use_cache=False) as executor:
        got = dict(executor.pool(lang).run(list(expected)))
    found = [result_of(lang, p, got[i]).status for i, p in enumerate(expected)]
    assert found == list(expected.values())


@pytest.mark.docker
@pytest.mark.slow
def test_swiftc_fast_writes_the_binary_swiftc_writes():
    """The run step runs the same program either way: swiftc-fast's binary is swiftc's, byte
    for byte, but for .swift_modhash (a hash that names the temp object's path, so it differs
    between two cold compiles too). The run step here prints the binary's hash instead."""
    lang = offered_language("swift")
    digest = ("sh", "-c", "objcopy -R .swift_modhash {stem} .tmp/b && sha256sum < .tmp/b")
    lang = dataclasses.replace(lang, steps=(lang.steps[0], dataclasses.replace(lang.steps[1], argv=digest)))
    programs = input_programs(lang, MULTIPLE / "test_inputs") + [lang.canary.good, lang.canary.bad]
    programs += FAST_SOURCES["swift"][:3]
    found = run_both(lang, programs, canary=False)  # its "run" passes the known-bad canary
    compiled = 0
    for fast, plain in zip(found[False], found[True], strict=True):
        assert fast.observation[0]["fast"] and len(fast.observation) == len(plain.observation)
        if len(plain.observation) == 2:  # (one of the test inputs does not compile)
            compiled += 1
            assert re.fullmatch(r"[0-9a-f]{64}  -\n", fast.stdout), fast.stderr
            assert fast.stdout == plain.stdout, plain.program
    assert compiled >= 5

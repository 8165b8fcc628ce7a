"""Observations are stored, judgments derived: the worker records what each step did (exit
code, stop reason, the head and tail of each stream, sizes, bytes cut, the rules' texts found
in the whole stream); the cache and results files keep that, and statuses are judged from it
with today's rules on every read. Timeouts are counted from the observation everywhere."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from test_execute_support import offered_language, own_containers, small_run, with_timeout

from harness.execute import execute_run
from harness.execute import languages as languages_module
from harness.execute.cache import ExecCache, cache_key
from harness.execute.engine import Executor
from harness.execute.languages import (
    Condition,
    Rule,
    all_languages,
    judge,
    load_language,
    result_of,
    status_of,
)
from harness.files import read_results, write_completions, write_results
from harness.records import Completions, ExecResult, ProblemResults
from harness.score import score_problem, score_run
from harness.score.judge import read_judged, rejudge

pytest_plugins = ("test_execute_support",)

ALL = [lang.key for lang in all_languages()]


def step(exit_code: int = 0, stdout: str = "", stderr: str = "", timed_out: bool = False,
         stopped: str | None = None, **extra) -> dict:
    """A step as the worker reports it (whole streams unless `extra` says otherwise)."""
    return {"exit_code": exit_code, "stdout": stdout, "stderr": stderr, "timed_out": timed_out,
            "stopped": stopped, "seconds": 0.1, "stdout_bytes": len(stdout.encode()),
            "stderr_bytes": len(stderr.encode()), "stdout_cut": 0, "stderr_cut": 0, **extra}


def cut_step(stream: str, found: tuple[str, ...], scanned: tuple[str, ...], exit_code: int = 0) -> dict:
    """A step whose `stream` was cut: its kept text names no needle; the scan found `found`."""
    return step(exit_code, **{stream: "x" * 10 + "\n... [9000 bytes cut] ...\n" + "y" * 10,
                              f"{stream}_bytes": 9020, f"{stream}_cut": 9000, f"{stream}_found": list(found),
                              "scanned": list(scanned)})


def final_steps(lang, last: dict) -> list[dict]:
    """Compile steps that passed, then `last` as the final step."""
    return [step() for _ in lang.compile_steps] + [last]


# -- no Docker needed -------------------------------------------------------------------
def whole_status(lang, stream: str, text: str, exit_code: int) -> str:
    """The final step's status when `stream` is `text`, whole, and the other stream empty."""
    out, err = (text, "") if stream == "stdout" else ("", text)
    return status_of(lang, len(lang.steps) - 1, exit_code, out, err, False)


@pytest.mark.parametrize("key", ALL)
def test_a_cut_stream_is_judged_on_the_whole_stream(key):
    """For every language and every text its rules look for: a cut stream whose scan found
    the text is judged as the whole stream would be, one whose scan did not find it as the
    whole stream without it; a stream cut and never scanned for it (the rule is newer than
    the observation) is never OK, unless the text cannot change the status."""
    lang = load_language(key)
    final = len(lang.steps) - 1
    for needle in lang.needles:
        unscanned = tuple(n for n in lang.needles if n != needle)
        for stream in ("stdout", "stderr"):
            for exit_code in (0, 1):
                with_it = whole_status(lang, stream, "x" * 9000 + needle, exit_code)
                without = whole_status(lang, stream, "x" * 9000, exit_code)
                found = cut_step(stream, (needle,), lang.needles, exit_code)
                assert judge(lang, final_steps(lang, found)) == (final, with_it), (needle, stream, exit_code)
                missing = cut_step(stream, (), lang.needles, exit_code)
                assert judge(lang, final_steps(lang, missing)) == (final, without), (needle, stream)
                unknown = judge(lang, final_steps(lang, cut_step(stream, (), unscanned, exit_code)))[1]
                assert unknown != "OK" or with_it == without == "OK", (needle, stream, exit_code)


CANARY_FILE = Path(__file__).parent / "data" / "canary_observations.json"
CANARIES = json.loads(CANARY_FILE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("key", ALL)
def test_judging_observations_is_pure_for_the_canary_outcomes(key):
    """Every language's canaries as the worker observed them in its image (recorded once,
    tests/data/canary_observations.json) are judged without Docker, the same every time: the
    good one passes, the bad one does not (with its expected status). A stopped run is never
    OK."""
    lang = load_language(key)
    if key not in CANARIES:
        pytest.skip(f"no recorded canary observation of {key}")
    good, bad = CANARIES[key]["good"], CANARIES[key]["bad"]
    assert judge(lang, good) == judge(lang, good)
    assert result_of(lang, lang.canary.good, good, timestamp=1).passed
    judged_bad = result_of(lang, lang.canary.bad, bad, timestamp=1)
    assert not judged_bad.passed
    assert judged_bad.status == (lang.canary.bad_status or judged_bad.status)
    last = good[-1]
    for stopped in ("memory", "file_size", "pids"):
        assert judge(lang, [*good[:-1], {**last, "stopped": stopped}])[1] != "OK"
    timed_out = result_of(lang, "p", [*good[:-1], {**last, "timed_out": True, "stopped": "time"}])
    assert timed_out.timed_out and timed_out.exit_code == -1 and not timed_out.passed


def test_the_cs_and_go_cases_of_the_issue_from_their_observations():
    """C#: a failing Debug.Assert after 3,000 characters on stderr (mono exits 0) and Go: a
    test that fails after printing 3,000 characters, as the worker now observes them: never
    OK (before, the 2,048 characters kept decided)."""
    cs, go = load_language("cs"), load_language("go")
    trace = "DefaultTraceListener.Fail\n  at Problem.Main ()\n"
    cs_step = step(0, stderr="e" * 3000 + trace)
    assert judge(cs, [step(), cs_step]) == (1, "Exception")
    failed = cut_step("stderr", ("DefaultTraceListener.Fail",), cs.needles)
    assert judge(cs, [step(), failed]) == (1, "Exception")
    assert judge(cs, [step(), cut_step("stderr", (), cs.needles)]) == (1, "OK"), "a clean long trace is OK"
    go_step = step(1, stdout="o" * 3000 + "\n--- FAIL: TestX\nFAIL\nFAIL\tcommand-line-arguments\n")
    assert judge(go, [go_step]) == (0, "Exception")


def test_the_cache_key_covers_the_observation_not_the_rules():
    """`limits_key` (the cache key's and results files' `limits`) changes with what decides
    an observation (a step's timeout, the memory, the output kept, the worker's hash), never
    with a status rule."""
    executor = Executor(cache=None)
    py = load_language("py")
    key = executor.limits_key(py)
    rules = (Rule(Condition(stdout_contains=("hello",)), "AssertionError"), *py.rules)
    assert executor.limits_key(dataclasses.replace(py, rules=rules)) == key
    texts = dataclasses.replace(py.run_step, ok_when=Condition(exit_code=(0,), stdout_contains=("x",)))
    assert executor.limits_key(dataclasses.replace(py, steps=(texts,))) == key, "an ok_when text is a rule"
    for changed in (with_timeout(py, 3.0), dataclasses.replace(py, memory="2g"),
                    dataclasses.replace(py, output_limit=100)):
        assert executor.limits_key(changed) != key
    assert dataclasses.replace(py, rules=rules).rules_fingerprint() != py.rules_fingerprint()


def results_of(lang_key: str, observations: list[list[dict]], statuses: list[str]) -> ProblemResults:
    completions = Completions(name="HumanEval_0_x", language=lang_key, temperature=0.1, top_p=0.95,
                              max_tokens=8, prompt="", tests="", stop_tokens=(),
                              completions=("a",) * len(observations))
    results = [ExecResult(program=f"p{i}", stdout=steps[-1]["stdout"], stderr=steps[-1]["stderr"],
                          exit_code=steps[-1]["exit_code"], status=status, timestamp=7,
                          observation=tuple(steps))
               for i, (steps, status) in enumerate(zip(observations, statuses, strict=True))]
    return ProblemResults.of(completions, results)


def test_a_results_file_is_judged_again_and_rewritten_only_when_a_status_changed(tmp_path):
    """Stored statuses that today's rules would not give are re-derived and the file is
    rewritten; a file that agrees is left alone; results of other tools (no observation)
    keep their status."""
    observed = [[step(0, stdout="hi\n")], [step(1, stderr="SyntaxError: x\n")]]
    stored = results_of("py", observed, ["Exception", "OK"])
    path = tmp_path / "HumanEval_0_x.results.json.gz"
    write_results(path, stored)
    judged = read_judged(path)
    assert [r.status for r in judged.results] == ["OK", "SyntaxError"]
    assert read_results(path) == judged, "rewritten"
    mtime = path.stat().st_mtime_ns
    assert read_judged(path) == judged and path.stat().st_mtime_ns == mtime, "current: not rewritten"
    foreign = dataclasses.replace(stored, results=tuple(dataclasses.replace(r, observation=())
                                                        for r in stored.results))
    assert rejudge(foreign) is foreign


def test_timeouts_are_counted_from_the_observation_in_every_language():
    """A Racket program the time limit stopped is an Exception (as upstream) yet counts as a
    timeout in its score record, like a Python Timeout; results without an observation fall
    back to MultiPL-E's exit code -1."""
    rkt = load_language("rkt")
    loop = result_of(rkt, "(let loop () (loop))", [step(-9, timed_out=True, stopped="time")])
    wrong = result_of(rkt, "#f", [step(0, stderr="FAILURE\n")])
    assert (loop.status, loop.exit_code) == ("Exception", -1)
    results = results_of("rkt", [list(loop.observation), list(wrong.observation)], ["Exception", "Exception"])
    score = score_problem(results)
    assert score.timeouts == 1 and score.statuses == {"Exception": 2}
    assert ExecResult("p", "", "", -1, "Timeout").timed_out
    assert not ExecResult("p", "", "", 1, "Exception").timed_out


# -- Docker -----------------------------------------------------------------------------
CS_HEAD = ("using System;\nusing System.Diagnostics;\nclass Problem {\n"
           "    public static void Main(string[] args) {\n")


@pytest.mark.docker
def test_cs_assert_after_long_stderr_is_not_ok(exec_cache):
    """The issue's C# case, through the real container: 3,000 characters on stderr, then a
    failing Debug.Assert (mono exits 0): Exception, not a pass. And with the failure first
    and 20,000 characters after it (the failure's text is in the part that is cut), still
    Exception; the same long stderr without a failure is OK."""
    cs = offered_language("cs")
    programs = [CS_HEAD + '        Console.Error.Write(new string(\'e\', 3000));\n'
                '        Debug.Assert(1 == 2);\n    }\n}\n',
                CS_HEAD + '        Debug.Assert(1 == 2);\n'
                '        Console.Error.Write(new string(\'e\', 20000));\n    }\n}\n',
                CS_HEAD + '        Console.Error.Write(new string(\'e\', 20000));\n    }\n}\n']
    with Executor(jobs=1, cache=None) as executor:
        got = dict(executor.run_programs(cs, programs))
    assert (got[0].status, got[0].exit_code, got[0].passed) == ("Exception", 0, False), got[0].stderr[-300:]
    assert (got[1].status, got[1].passed) == ("Exception", False)
    last = got[1].observation[-1]
    assert last["stderr_cut"] > 0 and last["stderr_found"] == ["DefaultTraceListener.Fail"]
    assert got[1].stderr.endswith("e" * 100)
    assert got[2].passed and got[2].observation[-1]["stderr_bytes"] == 20000


GO_FAILING = '''package fail_test

import (
    "fmt"
    "strings"
    "testing"
)

func TestLong(t *testing.T) {
    fmt.Print(strings.Repeat("o", 3000))
    t.Fatal("wrong")
}
'''


@pytest.mark.docker
def test_go_test_that_fails_after_long_output_is_an_exception(exec_cache):
    """The issue's Go case: a test that prints 3,000 characters and then fails is an
    Exception with exit 1 (it was recorded OK)."""
    go = offered_language("go")
    with Executor(jobs=1, cache=None) as executor:
        got = dict(executor.run_programs(go, [GO_FAILING]))
    assert (got[0].status, got[0].exit_code) == ("Exception", 1), got[0].stdout[-300:]


def patched_rules(monkeypatch, key: str, change) -> None:
    """The language `key` as `change(lang)` wherever a language is loaded by name (a TOML
    rule edited), the other languages as shipped."""
    shipped = languages_module._load_file

    def load(stem: str):
        lang = shipped(stem)
        return change(lang) if stem == key else lang

    monkeypatch.setattr(languages_module, "_load_file", load)


@pytest.mark.docker
def test_a_rule_change_applies_to_cached_results_without_running(tmp_path, humaneval_dir, py_image,
                                                                 exec_cache, monkeypatch, docker_client):
    """Done-when test of issue 21: results are cached, then a status rule changes; the cache
    and the results files give the new status and nothing runs again. A text the new rule
    looks for in output that was cut (and so never scanned for) is never judged OK."""
    run = small_run(tmp_path / "run", humaneval_dir, problems=2)
    assert execute_run(run, jobs=1).telemetry["executed"] == 4
    loud = "print('x' * 9000)\nprint('magic')\n"
    quiet = "print('magic')\n"
    legacy = "print('cached by an older version')\n"
    py = load_language("py")
    with Executor(jobs=1, cache=ExecCache(exec_cache)) as executor:
        old_row = {"stdout": "", "stderr": "", "exit_code": 0, "status": "OK", "timestamp": 1}
        executor.cache.put(cache_key(legacy, py_image, executor.limits_key(py)), old_row)
        before = dict(executor.run_programs(py, [loud, quiet, legacy]))
        assert executor.stats.executed == 3, "a row without an observation counts as missing"
    assert [r.status for r in before.values()] == ["OK", "OK", "OK"] and before[2].observation
    assert before[0].observation[0]["stdout_cut"] > 0 and "magic" not in before[0].observation[0]["scanned"]

    new_rules = (Rule(Condition(stdout_contains=("magic",)), "AssertionError"),
                 Rule(Condition(exit_code=(0,), stdout_empty=True), "Exception"))

    def change(lang):
        return dataclasses.replace(lang, rules=new_rules + lang.rules)

    patched_rules(monkeypatch, "py", change)
    changed = load_language("py")
    with Executor(jobs=1, cache=ExecCache(exec_cache)) as executor:
        after = dict(executor.run_programs(changed, [loud, quiet, legacy]))
        stats = executor.stats.as_dict()
    assert stats["executed"] == 0 and stats["cache_hits"] == 3, "nothing ran"
    assert after[1].status == "AssertionError", "the new rule, from the cached observation"
    assert after[0].status == "Exception", "the rule's text may be in the cut part: never OK"

    scores = score_run(run)  # reads the results files: judged again, rewritten
    assert [s.statuses for s in scores] == [{"Exception": 3}] * 2, "a canonical solution prints nothing"
    assert sum(s.c for s in scores) == 0
    for path in run.result_files():
        assert {r.status for r in read_results(path).results} <= {"Exception", "AssertionError"}
    assert execute_run(run, jobs=1).telemetry == {}, "the results are current: nothing to execute"
    assert own_containers(docker_client) == []


@pytest.mark.docker
def test_a_racket_loop_counts_in_the_timeout_share_of_the_report(tmp_path, humaneval_dir, exec_cache,
                                                                 monkeypatch):
    """Racket has no Timeout status (a timed-out program is an Exception, as upstream); its
    endless loop still counts in Racket's Timeout share in table.md and report.html."""
    from harness.problems import load_problems
    from harness.report import write_reports
    from harness.runs import RunDir

    offered_language("rkt")
    patched_rules(monkeypatch, "rkt", lambda lang: with_timeout(lang, 3.0))
    problem = load_problems("rkt", humaneval_dir, limit=1).problems[0]
    run = RunDir.open(tmp_path / "run")
    write_completions(run.completions_path("tiny", "base", "rkt", problem.name), Completions(
        name=problem.name, language="rkt", temperature=0.1, top_p=0.95, max_tokens=64, prompt=problem.prompt,
        tests=problem.tests, stop_tokens=problem.stop_tokens,
        completions=("  (let loop () (loop)))\n", "  #f)\n")))
    telemetry = execute_run(run, jobs=1).telemetry["languages"]["rkt"]
    assert (telemetry["timeouts"], telemetry["timeout_reruns"], telemetry["timeouts_confirmed"]) == (1, 1, 1)
    results = read_results(run.result_files()[0]).results
    assert [r.status for r in results] == ["Exception", "Exception"] and results[0].timed_out
    paths = write_reports(run)
    assert "HumanEval Racket 50.0 %" in paths["table"].read_text(encoding="utf-8")
    assert "HumanEval Racket <b>50.0 %</b> (1 of 2)" in paths["html"].read_text(encoding="utf-8")


HOG = "while True:\n    pass\n"


@pytest.mark.docker
def test_confirmations_run_one_at_a_time_after_the_others(py_image, exec_cache, monkeypatch, tmp_path):
    """Timed-out programs run again in a pool of one container with one lane; in the main
    command's execution process they wait until generation is done (`confirm_held`), and
    their results files with them."""
    from harness.execute.overlap import Consumer
    from harness.files import results_path_for

    patched_rules(monkeypatch, "py", lambda lang: with_timeout(lang, 1.0))
    paths = []
    files = (("HumanEval_0_hog", (HOG, HOG + "# two\n", "pass\n")), ("HumanEval_1_ok", ("pass\n",)))
    for name, completions in files:
        path = tmp_path / f"{name}.json.gz"
        write_completions(path, Completions(name=name, language="py", temperature=0.1, top_p=0.95,
                                            max_tokens=8, prompt="", tests="", stop_tokens=(),
                                            completions=completions))
        paths.append(path)
    with Executor(jobs=2, lanes=2, cache=ExecCache(exec_cache)) as executor:
        consumer = Consumer(executor)
        consumer.execute(paths)
        assert results_path_for(paths[1]).exists() and not results_path_for(paths[0]).exists(), "held"
        assert executor.stats.languages["py"].reruns == 0
        consumer.confirm_held()
        confirm = executor._pools["py#confirm"]
        assert (confirm.slots, confirm.limits.lanes, len(confirm.drivers)) == (1, 1, 1)
        counts = executor.stats.languages["py"]
    results = read_results(results_path_for(paths[0])).results
    assert [r.status for r in results] == ["Timeout", "Timeout", "OK"]
    assert (counts.reruns, counts.confirmed, counts.timeouts) == (2, 2, 2)


def test_results_files_keep_multipl_e_fields():
    """The observation travels beside MultiPL-E's fields; readers of those still work."""
    stored = results_of("py", [[step(0, stdout="hi\n")]], ["OK"])
    data = stored.to_json()["results"][0]
    assert {"program", "stdout", "stderr", "exit_code", "status", "timestamp"} <= set(data)
    assert data["observation"][0]["stdout_bytes"] == 3
    assert ProblemResults.from_json(stored.to_json()) == stored


def test_scores_judged_under_other_rules_are_made_again(tmp_path, monkeypatch):
    """scores.csv names the rules that judged it: after a rule change the report's scores
    (also the gate's and the API's: `run_scores`) are judged again from the observations,
    with nothing to execute, and the results file is rewritten."""
    from harness.report.load import run_scores
    from harness.runs import RunDir

    run = RunDir.open(tmp_path / "run")
    path = run.results_path("tiny", "base", "py", "HumanEval_0_x")
    write_results(path, results_of("py", [[step(0)], [step(0, stdout="magic\n")]], ["OK", "OK"]))
    first = run_scores(run)
    assert [(s.c, s.statuses, s.rules.startswith("py:")) for s in first] == [(2, {"OK": 2}, True)]
    assert run_scores(run) == first, "current"

    def change(lang):
        return dataclasses.replace(lang, rules=(Rule(Condition(stdout_contains=("magic",)), "Exception"),
                                                *lang.rules))

    patched_rules(monkeypatch, "py", change)
    again = run_scores(run)
    assert [(s.c, s.statuses) for s in again] == [(1, {"OK": 1, "Exception": 1})]
    assert [r.status for r in read_results(path).results] == ["OK", "Exception"], "rewritten"

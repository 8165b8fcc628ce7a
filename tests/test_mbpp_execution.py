"""MBPP through the real execution engine (issue #18): MBPP's reference solutions after the
`mbpp-py` prompts pass exactly where the shared README says (382 of 397), a deliberately
wrong completion fails ordinarily in every offered language, and the three known-defect
js rows fail whatever the completion, as `benchmarks/mbpp.toml` says.

Every program runs for real: one Executor for the module (two slots, as CI's two cores),
with its execution cache in a tmp path. A language whose image is not built fails (CI builds
every image), as in test_languages_inputs.py."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import MULTIPLE
from test_execute_support import offered_language

from harness.execute import program_of
from harness.execute.languages import (
    DEFAULT_STATUS,
    TIMEOUT_EXIT_CODE,
    Language,
    all_languages,
    load_language,
)
from harness.problems import load_benchmark, load_problems
from harness.records import Completions, ExecResult, Problem

pytest_plugins = ("test_execute_support",)

# The shared README: MBPP's reference solution of these tasks fails MultiPL-E's py tests
# (typed tests compare lists where MBPP returns tuples, and similar translation differences).
REFERENCE_FAILURES = {143, 255, 257, 259, 310, 401, 417, 444, 445, 560, 726, 737, 783, 787, 794}
REFERENCE_PASSING = 382
WRONG_PROBLEMS = 20

# One deliberately wrong completion per offered language, written as a model would write it
# after the row's prompt. Typed languages give up at run time, in a way that compiles for any
# return type (adb: a raise expression, since Ada wants a return statement); most dynamic ones
# return a wrong constant (rkt raises, sh prints a wrong answer). Where the tests do not close the function
# (go, js, ts, php, pl, r, lua, rb, elixir, clj, rkt) the completion does; rs, swift, cpp,
# sh, java, cs, scala and adb tests begin by closing it; d's prompt stops before the brace.
WRONG_COMPLETIONS = {
    "adb": " is\n   begin\n      return (raise Program_Error with \"not implemented\");",
    "clj": "nil)\n",
    "cpp": "    throw std::runtime_error(\"not implemented\");\n",
    "cs": "        throw new NotImplementedException();\n",
    "d": "{\n    throw new Exception(\"not implemented\");\n}\n",
    "elixir": "nil\n  end\nend\n",
    "go": "\tpanic(\"not implemented\")\n}\n",
    "hs": " error \"not implemented\"\n",
    "java": "        throw new UnsupportedOperationException(\"not implemented\");\n",
    "js": "  return null;\n}\n",
    "lua": "    return nil\nend\n",
    "ml": "\n  failwith \"not implemented\"\n",
    "php": "    return null;\n}\n",
    "pl": "    return undef;\n}\n",
    "py": "    return None\n",
    "r": "  return(NULL)\n}\n",
    "rb": "  return nil\nend\n",
    "rkt": "  (error \"not implemented\"))\n",
    "rs": "    todo!()\n",
    "scala": "        ???\n",
    "sh": "    echo \"not implemented\"\n",
    "swift": "    fatalError(\"not implemented\")\n",
    "ts": "  return null;\n}\n",
}

# The status each gives: a runtime failure through the language's rules (hs: upstream calls
# every non-zero exit a SyntaxError), so the programs compiled and the tests really ran.
WRONG_STATUS = {key: "Exception" for key in WRONG_COMPLETIONS} | {
    "elixir": "AssertionError", "js": "AssertionError", "ts": "AssertionError", "hs": "SyntaxError"}

# Rows among the first 20 that fail whatever the completion: upstream translation defects
# that benchmarks/mbpp.toml does not list (yet). They still end in an ordinary failure.
FAIL_WHATEVER_THE_COMPLETION = {
    ("elixir", "mbpp_12_sort_matrix"): ("Exception", "the parameter is `M`, an alias: candidate(M) matches "
                                        "only the atom M (FunctionClauseError)"),
    ("go", "mbpp_63_max_difference"): ("SyntaxError", "the tests pass [][]int where the signature takes "
                                       "[][]interface{} (build failed)"),
    ("ml", "mbpp_12_sort_matrix"): ("SyntaxError", "negative ints are written (~2), not valid OCaml"),
    ("ml", "mbpp_58_opposite_Signs"): ("SyntaxError", "negative ints are written (~2), not valid OCaml"),
}

# Correct-looking completions for the js rows whose tests are not valid JavaScript.
JS_DEFECT_COMPLETIONS = {
    "mbpp_237_check_occurences": (
        "  const counts = {};\n"
        "  for (const pair of test_list) {\n"
        "    const key = [...pair].sort((a, b) => a - b);\n"
        "    counts[key] = (counts[key] || 0) + 1;\n"
        "  }\n"
        "  return counts;\n"
        "}\n"),
    "mbpp_563_extract_values": "  return [...text.matchAll(/\"(.*?)\"/g)].map((m) => m[1]);\n}\n",
    "mbpp_725_extract_quotation": "  return [...text1.matchAll(/\"(.*?)\"/g)].map((m) => m[1]);\n}\n",
}


def _offered() -> list[str]:
    return [lang.key for lang in all_languages()]


def _mbpp_dir() -> Path:
    if not (MULTIPLE / "mbpp").is_dir():
        pytest.skip("../shared/multipl-e/mbpp is not present")
    return MULTIPLE


@pytest.fixture(scope="module")
def executor(docker_client, tmp_path_factory):
    """One engine for every language of the module; its cache in a tmp path, so every
    program really runs; never builds an image."""
    from harness.execute.cache import ExecCache
    from harness.execute.engine import Executor

    cache = ExecCache(tmp_path_factory.mktemp("mbpp-exec") / "exec.sqlite")
    with Executor(jobs=2, cache=cache, build_missing=False) as engine:
        yield engine


def _run(executor, lang: Language, problems: list[Problem], completions: list[str]) -> list[ExecResult]:
    """`program_of` for each (problem, completion), all in one `run_programs` call."""
    programs = [program_of(_completions(p, c), c) for p, c in zip(problems, completions, strict=True)]
    results: list[ExecResult | None] = [None] * len(programs)
    for index, result in executor.run_programs(lang, programs):
        assert results[index] is None, f"{lang.key}: program {index} answered twice"
        results[index] = result
    assert all(r is not None for r in results), f"{lang.key}: programs without a result"
    return results  # type: ignore[return-value]


def _completions(problem: Problem, completion: str) -> Completions:
    return Completions(name=problem.name, language=problem.language, temperature=0.0, top_p=1.0,
                       max_tokens=0, prompt=problem.prompt, tests=problem.tests,
                       stop_tokens=problem.stop_tokens, completions=(completion,))


def _reason(result: ExecResult) -> str:
    """The last line of stderr (node's stack and version footer left out), and for a Python
    traceback the source line that raised."""
    lines = [line for line in (result.stderr or result.stdout).splitlines()
             if line.strip() and not line.startswith(("    at ", "Node.js v"))]
    if not lines:
        return f"(no output, exit {result.exit_code})"
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    where = f" at `{lines[frames[-1] + 1].strip()}`" if frames and frames[-1] + 1 < len(lines) - 1 else ""
    return (lines[-1].strip() + where)[:300]


def _ordinary_failures(lang: Language) -> set[str]:
    """Statuses the language's rules give a program that ran to its end and failed."""
    statuses = {rule.status for rule in lang.rules} | {DEFAULT_STATUS}
    statuses |= {step.fail_status for step in lang.compile_steps}
    return statuses - {"OK", "Timeout"} - {step.timeout_status for step in lang.steps}


def _number(problem: Problem) -> int:
    return int(problem.name.split("_")[1])


# ---------------------------------------------------------------------------------------
@pytest.mark.docker
@pytest.mark.slow
def test_mbpp_reference_solutions_pass_382_of_397(executor, docker_client) -> None:
    """MBPP's reference solution of task N (its test_imports, then its code) after the
    `mbpp_N_*` py prompt: 382 pass; the 15 the shared README lists fail, each with a reason."""
    started = time.monotonic()
    dataset = _mbpp_dir()
    lang = load_language("py")
    offered_language(lang.key)
    reference = json.loads((dataset / "mbpp" / "sanitized-mbpp.json").read_text())
    sanitized = {row["task_id"]: row for row in reference}
    problems = list(load_problems("py", dataset, benchmark="mbpp").problems)
    assert len(problems) == 397
    completions = ["".join(f"{line}\n" for line in sanitized[_number(p)]["test_imports"])
                   + sanitized[_number(p)]["code"] for p in problems]
    results = _run(executor, lang, problems, completions)
    failing = {_number(p): r for p, r in zip(problems, results, strict=True) if not r.passed}
    for number, result in sorted(failing.items()):
        print(f"mbpp_{number}: {result.status} (exit {result.exit_code}): {_reason(result)}")
    print(f"py reference solutions: {len(problems) - len(failing)} of {len(problems)} pass "
          f"({time.monotonic() - started:.1f} s)")
    timeouts = sorted(n for n, r in failing.items() if r.exit_code == TIMEOUT_EXIT_CODE)
    assert not timeouts, f"timed out (an overloaded machine?): {timeouts}"
    assert set(failing) == REFERENCE_FAILURES, (
        f"unexpected failures {sorted(set(failing) - REFERENCE_FAILURES)}, "
        f"unexpected passes {sorted(REFERENCE_FAILURES - set(failing))}")
    assert len(problems) - len(failing) == REFERENCE_PASSING


def test_every_offered_language_has_a_wrong_completion() -> None:
    assert sorted(WRONG_COMPLETIONS) == sorted(_offered())


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("key", _offered())
def test_wrong_completion_fails_ordinarily_on_20_mbpp_problems(key: str, executor, docker_client) -> None:
    """A wrong completion on a language's first 20 MBPP rows: every program ends in a
    failure status that the language's rules give (not OK, not a timeout, no harness error)."""
    started = time.monotonic()
    dataset = _mbpp_dir()
    lang = load_language(key)
    offered_language(lang.key)
    problems = list(load_problems(key, dataset, limit=WRONG_PROBLEMS, benchmark="mbpp").problems)
    assert len(problems) == WRONG_PROBLEMS
    results = _run(executor, lang, problems, [WRONG_COMPLETIONS[key]] * len(problems))
    allowed = _ordinary_failures(lang)
    statuses = Counter(r.status for r in results)
    print(f"{key}: {dict(statuses)} ({time.monotonic() - started:.1f} s)")
    bad = [f"{p.name}: {r.status} (exit {r.exit_code}): {_reason(r)}"
           for p, r in zip(problems, results, strict=True)
           if r.passed or r.status not in allowed or r.exit_code == TIMEOUT_EXIT_CODE]
    assert not bad, f"{key}: not an ordinary failure (allowed {sorted(allowed)}):\n" + "\n".join(bad)
    expected = {p.name: FAIL_WHATEVER_THE_COMPLETION.get((key, p.name), (WRONG_STATUS[key], ""))
                for p in problems}
    for problem, result in zip(problems, results, strict=True):
        if expected[problem.name][1]:
            print(f"  {problem.name} fails whatever the completion ({expected[problem.name][1]}): "
                  f"{result.status}: {_reason(result)}")
    other = [f"{p.name}: {r.status}, expected {expected[p.name][0]}: {_reason(r)}"
             for p, r in zip(problems, results, strict=True) if r.status != expected[p.name][0]]
    assert not other, f"{key}: not the wrong completion's own failure:\n" + "\n".join(other)


@pytest.mark.docker
def test_known_defect_js_rows_fail_whatever_the_completion(executor, docker_client) -> None:
    """mbpp_237, 563 and 725 in js: their tests are not valid JavaScript, so node rejects the
    program with a SyntaxError even after a correct-looking completion; the benchmark
    definition names each of them as a known defect."""
    started = time.monotonic()
    dataset = _mbpp_dir()
    lang = load_language("js")
    offered_language(lang.key)
    mbpp = load_benchmark("mbpp")
    by_name = {p.name: p for p in load_problems("js", dataset, benchmark="mbpp").problems}
    assert {d.problem for d in mbpp.known_defects if d.lang == "js"} == set(JS_DEFECT_COMPLETIONS)
    problems = [by_name[name] for name in JS_DEFECT_COMPLETIONS]
    for problem in problems:
        defect = mbpp.defect("js", problem.name)
        assert defect is not None and "not valid JavaScript" in defect.why, problem.name
    results = _run(executor, lang, problems, list(JS_DEFECT_COMPLETIONS.values()))
    for problem, result in zip(problems, results, strict=True):
        print(f"{problem.name}: {result.status}: {_reason(result)}")
        assert result.status == "SyntaxError" and not result.passed, f"{problem.name}: {result.status}"
        # node names the line it rejects: one of the row's tests, past prompt and completion
        line = re.search(rf"{re.escape(lang.file)}:(\d+)\n(.*)\n", result.stderr)
        assert line, f"{problem.name}: no location in {result.stderr[:300]!r}"
        program_lines = result.program.split("\n")
        tests_start = len((problem.prompt + JS_DEFECT_COMPLETIONS[problem.name]).split("\n"))
        assert int(line[1]) > tests_start and program_lines[int(line[1]) - 1] == line[2], problem.name
        assert line[2] in problem.tests.split("\n"), problem.name
    print(f"js known defects ({time.monotonic() - started:.1f} s)")

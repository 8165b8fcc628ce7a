"""Distinct programs of real MultiPL-E problems with a mix of outcomes, for the warm/cold
comparisons (`flora-eval bench execute`, the equality tests): the passing and failing
completions of ../shared/multipl-e/test_inputs, the language's canaries, right completions
of a few HumanEval problems for a language without test inputs (`RIGHT`), and for `rows`
HumanEval problems one completion that compiles but fails (`WRONG`) and one that does not
compile (`BROKEN`). The completions are the body a model would write after the prompt, closed
as the language's tests expect."""

from __future__ import annotations

import json
from pathlib import Path

ELIXIR_END = "\n  end\nend\n"  # closes the prompt's `def` and `defmodule`
# A completion that compiles (where there is a compiler) for any signature, then fails.
WRONG = {
    "ts": "\n  throw new Error('wrong');\n}\n",
    "js": "\n  throw new Error('wrong');\n}\n",
    "java": "\n        throw new RuntimeException(\"wrong\");\n",
    "cpp": "\n    throw 1;\n",
    "scala": "\n        ???\n",
    "clj": "(throw (Exception. \"wrong\")))\n",
    "rkt": "  (error \"wrong\"))\n",
    "elixir": "raise \"wrong\"" + ELIXIR_END,
    "swift": "\n    fatalError(\"wrong\")\n",
}
# A completion that does not compile (or parse).
BROKEN = {
    "ts": "\n  return )(;\n}\n",
    "js": "\n  return )(;\n}\n",
    "java": "\n        return )(;\n",
    "cpp": "\n    return )(;\n",
    "scala": "\n        return )(\n",
    "clj": "(let [x] )))\n",
    "rkt": "  (list 1 2]\n",
    "elixir": "x = ," + ELIXIR_END,  # "** (SyntaxError)"; `)(` is a MismatchedDelimiterError
    "swift": "\n    return )(\n",
}
# Passing completions, by problem, for a language whose test inputs are missing (elixir has
# none in ../shared/multipl-e/test_inputs): written by hand, checked by the equality tests.
RIGHT = {
    "elixir": {name: body + ELIXIR_END for name, body in {
        "HumanEval_2_truncate_number": "number - trunc(number)",
        "HumanEval_7_filter_by_substring": "Enum.filter(strings, &String.contains?(&1, substring))",
        "HumanEval_13_greatest_common_divisor": "Integer.gcd(a, b)",
        "HumanEval_23_strlen": "String.length(string)",
        "HumanEval_28_concatenate": "Enum.join(strings)",
        "HumanEval_34_unique": "l |> Enum.uniq() |> Enum.sort()",
        "HumanEval_42_incr_list": "Enum.map(l, &(&1 + 1))",
        "HumanEval_48_is_palindrome": "text == String.reverse(text)",
        "HumanEval_53_add": "x + y",
        "HumanEval_55_fib": "if n < 2, do: n, else: fib(n - 1) + fib(n - 2)",
    }.items()},
}


def test_input_programs(lang, test_inputs: Path) -> list[str]:
    """Every completion of the language's MultiPL-E test inputs, as programs."""
    programs = []
    for path in sorted(test_inputs.glob(f"{lang.key}-*.json")) if test_inputs.is_dir() else []:
        data = json.loads(path.read_text())
        programs += [data["prompt"] + c + "\n" + data["tests"] for c in data["completions"]]
    return programs


def mixed_programs(lang, dataset_dir: Path, rows: int = 20, broken_rows: int | None = None) -> list[str]:
    """Test inputs, canaries and right completions, then a wrong completion of the first
    `rows` problems and a broken one of the first `broken_rows` (default: as many), for the
    languages that have them, without repeats."""
    from harness.problems import load_problems

    programs = test_input_programs(lang, dataset_dir.parent / "test_inputs")
    programs += [lang.canary.good, lang.canary.bad]
    if lang.key not in RIGHT and lang.key not in WRONG:
        return list(dict.fromkeys(programs))
    problems = load_problems(lang.key, dataset_dir).problems  # read once, for both
    right = RIGHT.get(lang.key, {})
    programs += [p.prompt + right[p.name] + "\n" + p.tests for p in problems if p.name in right]
    if lang.key in WRONG:
        broken_rows = rows if broken_rows is None else broken_rows
        for index, problem in enumerate(problems[:rows]):
            bodies = (WRONG[lang.key], BROKEN[lang.key]) if index < broken_rows else (WRONG[lang.key],)
            programs += [problem.prompt + body + "\n" + problem.tests for body in bodies]
    return list(dict.fromkeys(programs))

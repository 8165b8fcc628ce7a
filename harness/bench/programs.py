"""Distinct programs of real MultiPL-E problems with a mix of outcomes, for the warm/cold
comparisons (`flora-eval bench execute`, the equality tests): the passing and failing
completions of ../shared/multipl-e/test_inputs, the language's canaries, and for `rows`
HumanEval problems one completion that compiles but fails (`WRONG`) and one that does not
compile (`BROKEN`). The completions are the body a model would write after the prompt, closed
as the language's tests expect."""

from __future__ import annotations

import json
from pathlib import Path

# A completion that compiles (where there is a compiler) for any signature, then fails.
WRONG = {
    "ts": "\n  throw new Error('wrong');\n}\n",
    "js": "\n  throw new Error('wrong');\n}\n",
    "java": "\n        throw new RuntimeException(\"wrong\");\n",
    "cpp": "\n    throw 1;\n",
    "scala": "\n        ???\n",
    "clj": "(throw (Exception. \"wrong\")))\n",
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
    "swift": "\n    return )(\n",
}


def test_input_programs(lang, test_inputs: Path) -> list[str]:
    """Every completion of the language's MultiPL-E test inputs, as programs."""
    programs = []
    for path in sorted(test_inputs.glob(f"{lang.key}-*.json")) if test_inputs.is_dir() else []:
        data = json.loads(path.read_text())
        programs += [data["prompt"] + c + "\n" + data["tests"] for c in data["completions"]]
    return programs


def mixed_programs(lang, dataset_dir: Path, rows: int = 20, broken_rows: int | None = None) -> list[str]:
    """Test inputs and canaries, then a wrong completion of the first `rows` problems and a
    broken one of the first `broken_rows` (default: as many), for the languages that have
    them, without repeats."""
    from harness.problems import load_problems

    programs = test_input_programs(lang, dataset_dir.parent / "test_inputs")
    programs += [lang.canary.good, lang.canary.bad]
    if lang.key in WRONG:
        broken_rows = rows if broken_rows is None else broken_rows
        for index, problem in enumerate(load_problems(lang.key, dataset_dir, limit=rows).problems):
            bodies = (WRONG[lang.key], BROKEN[lang.key]) if index < broken_rows else (WRONG[lang.key],)
            programs += [problem.prompt + body + "\n" + problem.tests for body in bodies]
    return list(dict.fromkeys(programs))

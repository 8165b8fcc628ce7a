"""The Python API: evaluate → a run; open a run → its score records and Table 1 as pandas.
End to end on the tiny model and the real py image (the CLI is a thin layer over the same
functions)."""

from __future__ import annotations

import pandas as pd
import pytest

from harness import api
from harness.records import ProblemScore


@pytest.mark.docker
@pytest.mark.slow
def test_evaluate_then_open_run(tmp_path, humaneval_dir, monkeypatch):
    monkeypatch.setenv("FLORA_EVAL_CACHE", str(tmp_path / "cache.sqlite"))
    run = api.evaluate("tiny", langs=["python"], n=2, temperature=0.8, max_tokens=16, seed=3,
                       dataset=str(humaneval_dir), limit=2, run_dir=tmp_path / "run", device="cpu")
    scores = run.scores()
    assert len(scores) == 2 and all(isinstance(s, ProblemScore) for s in scores)
    assert {s.lang for s in scores} == {"py"} and all(s.n == 2 for s in scores)
    assert all(s.provenance.sampling.seed == 3 and s.provenance.model == "tiny" for s in scores)

    opened = api.open_run(tmp_path / "run")
    frame = opened.frame()
    assert list(frame["problem"]) == [s.problem for s in scores]
    assert {"model", "adapter", "method", "lang", "n", "c", "pass@1", "sampling_temperature"} <= set(frame)
    table = opened.table1()
    assert isinstance(table, pd.DataFrame) and list(table.columns) == ["base"]
    assert table.index.tolist() == [("HumanEval", "tiny", "Python")]
    expected = sum(s.pass_at[1] for s in scores) / 2 * 100
    assert table.loc[("HumanEval", "tiny", "Python"), "base"] == f"{expected:.2f}"

    history = opened.manifest()["invocations"]
    assert [h["stage"] for h in history] == ["evaluate"] and history[0]["finished"]
    assert (tmp_path / "run" / "report.html").is_file()


def test_open_run_of_a_missing_folder_is_one_line(tmp_path):
    from harness.errors import UserError

    with pytest.raises(UserError, match="run directory not found"):
        api.open_run(tmp_path / "nothing")


README_EXAMPLE = '''from harness import api

run = api.evaluate("tiny", langs=["py"], n=2, max_tokens=16, dataset={dataset!r}, limit=1,
                   run_dir={run_dir!r}, device="cpu")
print("scored", len(run.scores()), [s.n for s in run.scores()])
'''


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("how", ["script", "stdin"])
def test_the_readme_example_runs_as_a_plain_script_and_from_stdin(tmp_path, humaneval_dir, how):
    """No `if __name__ == "__main__":` guard: the execution process must not import the
    caller's __main__ (multiprocessing's spawn did, and ran the evaluation again in it)."""
    import os
    import subprocess
    import sys

    source = README_EXAMPLE.format(dataset=str(humaneval_dir.parent), run_dir=str(tmp_path / "run"))
    env = {**os.environ, "FLORA_EVAL_CACHE": str(tmp_path / "cache.sqlite")}
    script = tmp_path / "example.py"
    script.write_text(source)
    argv, stdin = {"script": ([sys.executable, str(script)], None),
                   "stdin": ([sys.executable, "-"], source)}[how]
    done = subprocess.run(argv, input=stdin, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "scored 1 [2]", done.stdout
    assert [h["stage"] for h in api.open_run(tmp_path / "run").manifest()["invocations"]] == ["evaluate"]

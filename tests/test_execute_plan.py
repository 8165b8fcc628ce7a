"""The execution plan (harness/execute/plan.py), the one every path uses: what is held, what
differs (the setting with both values) and what is missing; results of regenerated or deleted
completions are not kept."""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_execute_support import small_run

from harness.cli import main
from harness.execute import execute_run, open_executor
from harness.execute.plan import Difference, plan_run
from harness.files import read_completions, read_results, write_completions, write_results

pytest_plugins = ("test_execute_support",)
pytestmark = pytest.mark.docker


def test_the_plan_names_each_difference_and_re_runs_regenerated_completions(tmp_path, humaneval_dir, py_image,
                                                                             exec_cache, capsys):
    run = small_run(tmp_path / "run", humaneval_dir, problems=3)
    execute_run(run, jobs=2)
    regenerated, other_image, held = run.completion_files()
    completions = read_completions(regenerated)
    write_completions(regenerated, dataclasses.replace(completions, completions=("    return 1\n",) * 3))
    results_path = run.result_files()[1]
    write_results(results_path, dataclasses.replace(read_results(results_path), image_id="sha256:0ther"))

    with open_executor(jobs=2) as executor:
        plan = plan_run(run.root, executor)
        assert [t.out.name for t in plan.held] == [held.name.replace(".json.gz", ".results.json.gz")]
        assert not plan.missing and not plan.orphans and len(plan.todo) == 2
        stale = {s.task.out: s.differences for s in plan.stale}
        (programs,) = stale[run.result_files()[0]]
        assert programs.setting == "programs" and programs.held != programs.now
        assert stale[results_path] == (Difference("image_id", "sha256:0ther", py_image),)
        assert str(stale[results_path][0]) == f"image_id: sha256:0ther → {py_image}"
        assert len(plan_run(run.root, executor, rerun=True).todo) == 3, "--no-cache: all of them"

    capsys.readouterr()
    assert execute_run(run, jobs=2).plan == {"held": 1, "stale": 2, "missing": 0, "orphans": 0, "execute": 2}
    note = [line for line in capsys.readouterr().err.splitlines() if line.startswith("execute: ")]
    assert len(note) == 1 and "2 results file(s) made otherwise are executed again" in note[0]
    assert "programs: " in note[0] and "image_id: sha256:0ther → sha256:" in note[0], note
    again = read_results(run.result_files()[0])
    assert all(r.program.startswith(completions.prompt + "    return 1\n") for r in again.results)
    assert execute_run(run, jobs=2).plan["execute"] == 0, "everything is current now"


def test_results_of_deleted_completions_are_removed(tmp_path, humaneval_dir, py_image, exec_cache, capsys):
    run = small_run(tmp_path / "run", humaneval_dir, problems=2)
    execute_run(run, jobs=2)
    gone = run.completion_files()[0]
    gone.unlink()
    assert main(["execute", str(run.root)]) == 0
    assert len(run.result_files()) == 1 and run.result_files()[0].name.startswith(
        run.completion_files()[0].name.removesuffix(".json.gz"))


def test_execute_no_cache_on_a_run_with_results_executes_every_program(tmp_path, humaneval_dir, py_image,
                                                                        exec_cache, capsys):
    run = small_run(tmp_path / "run", humaneval_dir, problems=2)
    execute_run(run, jobs=2)
    assert main(["execute", str(run.root), "--no-cache"]) == 0
    assert "(6 programs)" in capsys.readouterr().out
    manifest = json.loads((run.root / "manifest.json").read_text())
    assert manifest["telemetry"]["execute"]["cache_hits"] == 0 and manifest["plan"]["execute"]["execute"] == 2

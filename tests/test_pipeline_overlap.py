"""Overlapped stages: the main command executes each completions file as soon as it is
written, and its files and scores equal generate-then-execute. "Equal results" compares what
a result says about its program (program, status, exit code, stdout, stderr), not its
timestamp."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from test_execute_support import small_run

from harness import api
from harness.cli import main
from harness.execute import execute_run
from harness.execute.overlap import Overlap
from harness.files import read_completions, read_results, results_path_for
from harness.runs import RunDir

pytest_plugins = ("test_execute_support",)


def outcomes(root: Path) -> dict[str, list[tuple]]:
    return {str(p.relative_to(root)): [(r.program, r.status, r.exit_code, r.stdout, r.stderr)
                                       for r in read_results(p).results] for p in RunDir(root).result_files()}


def scores(root: Path) -> list[tuple]:
    return [(s.provenance.lang, s.problem, s.n, s.c, s.pass_at, s.statuses)
            for s in api.open_run(root).scores()]


def completions(root: Path) -> dict[str, tuple[str, ...]]:
    return {str(p.relative_to(root)): read_completions(p).completions
            for p in RunDir(root).completion_files()}


@pytest.mark.docker
def test_a_file_is_executed_while_generation_goes_on(tmp_path, humaneval_dir, py_image, exec_cache):
    """The producer (standing in for generation) waits for the first file's results before it
    hands over the next: execution runs while the generate stage is still active."""
    run = small_run(tmp_path / "run", humaneval_dir, problems=3)
    files = run.completion_files()
    overlap = Overlap({"jobs": 2, "use_cache": False})  # the execution process starts
    overlap.generation_started()
    overlap.submit(files[0])
    deadline = time.monotonic() + 120
    while not results_path_for(files[0]).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert results_path_for(files[0]).exists() and not results_path_for(files[1]).exists()
    overlap.submit(files[1])
    overlap.submit(files[1])  # twice: executed once
    overlap.generation_done()
    summary = overlap.finish(run)  # files[2] was never submitted: finish executes it
    assert overlap.process.poll() is not None
    assert len(run.result_files()) == 3 and summary.telemetry["programs"] == 9
    report = overlap.report()
    assert report["execute_batches"] >= 2 and report["both_active_s"] > 0
    sequential = RunDir(tmp_path / "sequential")
    shutil.copytree(run.root, sequential.root)
    for path in sequential.result_files():
        path.unlink()
    execute_run(sequential, jobs=2, use_cache=False)
    assert outcomes(run.root) == outcomes(sequential.root)


@pytest.mark.docker
@pytest.mark.slow
def test_main_command_overlapped_equals_generate_then_execute(tmp_path, humaneval_dir, monkeypatch, capsys):
    common = ["--model", "tiny", "--device", "cpu", "--lang", "py", "--lang", "rb", "--dataset",
              str(humaneval_dir), "--limit", "3", "-n", "4", "--max-tokens", "24", "--temperature", "0.8",
              "--batch-size", "4"]
    monkeypatch.setenv("FLORA_EVAL_CACHE", str(tmp_path / "main.sqlite"))
    assert main([*common, "--jobs", "2", "--run-dir", str(tmp_path / "main")]) == 0
    monkeypatch.setenv("FLORA_EVAL_CACHE", str(tmp_path / "stages.sqlite"))  # both really execute
    assert main(["generate", *common, "--run-dir", str(tmp_path / "stages")]) == 0
    assert main(["execute", str(tmp_path / "stages"), "--jobs", "2"]) == 0
    assert main(["score", str(tmp_path / "stages")]) == 0
    capsys.readouterr()
    main_run, stages = tmp_path / "main", tmp_path / "stages"
    assert len(completions(main_run)) == 6 and completions(main_run) == completions(stages)
    assert len(outcomes(main_run)) == 6 and outcomes(main_run) == outcomes(stages)
    assert scores(main_run) == scores(stages)
    manifest = json.loads((main_run / "manifest.json").read_text())
    overlap = manifest["telemetry"]["overlap"]
    assert {"wall_s", "generate_s", "execute_busy_s", "both_active_s", "execute_batches"} <= set(overlap)
    assert overlap["execute_batches"] >= 1 and manifest["config"]["executor"] == "local"
    assert manifest["telemetry"]["execute"]["programs"] == 24 and manifest["invocations"][-1]["finished"]


@pytest.mark.parametrize("then", ["submit", "finish"])
def test_a_dead_execution_process_is_one_line_not_a_hang(tmp_path, exec_cache, then):
    """SIGKILL the execution process: the next submit (of thousands: more than the old queue
    held) or the final wait ends with one line, within seconds; nothing blocks on it."""
    import os
    import signal

    from harness.errors import UserError

    overlap = Overlap({"jobs": 1})
    os.kill(overlap.process.pid, signal.SIGKILL)
    overlap.process.wait(timeout=30)
    start = time.monotonic()
    with pytest.raises(UserError) as error:
        if then == "submit":
            for k in range(5000):
                overlap.submit(tmp_path / f"file-{k}.json.gz")
        else:
            overlap.finish(RunDir(tmp_path))
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert "\n" not in message and f"(pid {overlap.process.pid}) died (killed by SIGKILL)" in message
    assert "run the same command again to resume" in message
    overlap.abort()  # after the error, as api.generate_and_execute does: returns at once
    assert time.monotonic() - start < 15

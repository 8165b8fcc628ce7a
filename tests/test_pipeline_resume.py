"""The main command resumes execution with the same plan as `execute` (harness/execute/plan.py):
results made under other limits run again, `--no-cache` executes every program again, results
of regenerated completions are gone and scores follow them; and a SIGKILLed execution process
ends the run with one line within a bounded time, and the same command then completes it.
Tiny model, local data, a couple of py problems, short samples."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import api
from harness.cli import main
from harness.files import read_results, write_results
from harness.runs import RunDir

pytestmark = pytest.mark.docker
pytest_plugins = ("test_execute_support",)


def common(humaneval_dir: Path, run: Path, *flags: str, n: int = 2, limit: int = 2,
           max_tokens: int = 16) -> list[str]:
    return ["--model", "tiny", "--device", "cpu", "--lang", "py", "--dataset", str(humaneval_dir),
            "--limit", str(limit), "-n", str(n), "--max-tokens", str(max_tokens), "--temperature", "0.8",
            "--run-dir", str(run), *flags]


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


@pytest.fixture
def done_run(tmp_path, humaneval_dir, exec_cache, capsys) -> Path:
    """A finished main-command run: 2 problems × 2 samples, executed."""
    run = tmp_path / "run"
    assert main(common(humaneval_dir, run)) == 0
    capsys.readouterr()
    assert len(RunDir(run).result_files()) == 2
    return run


def test_main_command_reruns_results_made_under_other_limits(done_run, humaneval_dir, capsys):
    other, same = RunDir(done_run).result_files()
    held = read_results(other)
    write_results(other, dataclasses.replace(held, limits="mem=1g,pids=1"))
    untouched = same.read_bytes()
    assert main(common(humaneval_dir, done_run)) == 0
    capsys.readouterr()
    assert read_results(other).limits == held.limits, "executed again under today's limits"
    assert same.read_bytes() == untouched
    plan = manifest(done_run)["plan"]["execute"]
    assert plan["stale"] == 1 and plan["held"] == 1 and plan["execute"] == 1
    assert manifest(done_run)["telemetry"]["execute"]["programs"] == 2


def test_main_command_no_cache_executes_every_program_again(done_run, humaneval_dir, capsys):
    before = {p: [r.timestamp for r in read_results(p).results] for p in RunDir(done_run).result_files()}
    time.sleep(1.1)  # timestamps are whole seconds: a program run again shows a later one
    assert main([*common(humaneval_dir, done_run), "--no-cache"]) == 0
    capsys.readouterr()
    execute = manifest(done_run)["telemetry"]["execute"]
    assert execute["programs"] == 4 and execute["cache_hits"] == 0
    assert execute["executed"] == execute["distinct_programs"] > 0
    for path, stamps in before.items():
        assert min(r.timestamp for r in read_results(path).results) > max(stamps)


def test_report_shows_the_new_scores_after_overwrite(done_run, humaneval_dir, capsys):
    """Regenerated with other settings (`--overwrite`), executed, then reported: the scores are
    those of the new results, whatever the files' times say."""
    assert [s.n for s in api.open_run(done_run).scores()] == [2, 2]
    assert main(["generate", *common(humaneval_dir, done_run, "--overwrite", n=3)]) == 0
    assert api.open_run(done_run).scores() == [], "the old results went with their completions"
    assert main(["execute", str(done_run)]) == 0
    scores = done_run / "scores.csv"
    for path in RunDir(done_run).result_files():  # results older than scores.csv, by time
        os.utime(path, (scores.stat().st_mtime - 60,) * 2)
    capsys.readouterr()
    assert main(["report", str(done_run)]) == 0
    table = capsys.readouterr().out
    assert re.search(r"\|\s+6\s+\|", table), table  # 2 problems × 3 samples
    assert [s.n for s in api.open_run(done_run).scores()] == [3, 3]


def execution_process(parent: int) -> int | None:
    """The pid of `parent`'s execution process (`python -m harness.execute.overlap`)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"harness.execute.overlap" in cmdline:
            return int(entry.name)
    return None


@pytest.mark.slow
def test_a_killed_execution_process_ends_the_run_in_one_line_and_the_rerun_completes(
        tmp_path, humaneval_dir, py_image):
    """SIGKILL the execution process while the one batch of every sample is still being
    generated (no completions file is complete yet, so nothing is handed over that would
    notice): the run ends within seconds with one line, not when generation ends."""
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "harness.cli", *common(humaneval_dir, run, n=3, max_tokens=256)]
    env = {**os.environ, "FLORA_EVAL_CACHE": str(tmp_path / "cache.sqlite")}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    child = None
    while child is None and proc.poll() is None and time.monotonic() < deadline:
        child = execution_process(proc.pid)
        time.sleep(0.05)
    assert child is not None, "the execution process started"
    os.kill(child, signal.SIGKILL)
    killed = time.monotonic()
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert time.monotonic() - killed < 60
    assert proc.returncode == 2, err[-2000:]
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    assert "Traceback" not in err and err.count("flora-eval: error:") == 1, err[-2000:]
    assert lines[-1].startswith(f"flora-eval: error: the execution process (pid {child}) died (killed by "
                                "SIGKILL)"), lines[-1]
    assert "run the same command again to resume" in lines[-1]
    assert len(RunDir(run).completion_files()) < 2, "generation was interrupted, not waited for"

    rerun = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    files = RunDir(run)
    assert len(files.completion_files()) == len(files.result_files()) == 2
    assert [s.n for s in api.open_run(run).scores()] == [3, 3]

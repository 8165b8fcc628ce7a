"""kill -9 of the harness in the middle of `flora-eval execute`, then the same command
again: the results equal an uninterrupted run's, and no container is left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from test_execute_support import engine_containers, small_run

from harness.execute import execute_run
from harness.execute.sandbox import OWNER_LABEL
from harness.files import read_results

pytest_plugins = ("test_execute_support",)
PROBLEMS, SLOW = 6, 5


def comparable(run) -> dict:
    """Every results file, the clock aside: when a program ran (timestamp) and how long each
    step took (the observation's seconds)."""
    return {p.relative_to(run.root).as_posix(): [
        replace(r, timestamp=0, observation=tuple({**step, "seconds": 0} for step in r.observation))
        for r in read_results(p).results] for p in run.result_files()}


def execute_cli(run_root, cache, **kw) -> subprocess.Popen:
    """`flora-eval execute` as a foreground command: SIGINT at its default, so Python turns
    Ctrl-C into KeyboardInterrupt even when these tests themselves run in a background job
    (`make test &` ignores SIGINT, and children inherit that)."""
    env = {**os.environ, "FLORA_EVAL_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "execute", str(run_root), "--jobs", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


@pytest.mark.docker
@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(tmp_path, humaneval_dir, py_image, docker_client,
                                                 monkeypatch):
    monkeypatch.setenv("FLORA_EVAL_CACHE", str(tmp_path / "reference.sqlite"))
    reference = small_run(tmp_path / "reference", humaneval_dir, PROBLEMS, SLOW)
    execute_run(reference, jobs=2)
    expected = comparable(reference)
    assert len(expected) == PROBLEMS

    run = small_run(tmp_path / "killed", humaneval_dir, PROBLEMS, SLOW)
    cache = tmp_path / "killed.sqlite"
    proc = execute_cli(run.root, cache)
    deadline = time.monotonic() + 120
    while not run.result_files() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    done_before_kill = len(run.result_files())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= done_before_kill < PROBLEMS, "killed in the middle of the run"

    owner = f"{socket.gethostname()}:{proc.pid}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        mine = [c for c in engine_containers(docker_client) if c["Labels"].get(OWNER_LABEL) == owner]
        if not mine:
            break
        time.sleep(0.2)
    assert not mine, "the killed harness's containers went away on their own"

    resumed = execute_cli(run.root, cache)
    assert resumed.wait(timeout=300) == 0
    assert comparable(run) == expected
    owner = f"{socket.gethostname()}:{resumed.pid}"
    assert [c for c in engine_containers(docker_client) if c["Labels"].get(OWNER_LABEL) == owner] == []


@pytest.mark.docker
@pytest.mark.slow
def test_ctrl_c_removes_containers_and_keeps_finished_results(tmp_path, humaneval_dir, py_image,
                                                               docker_client):
    # the last problem holds the run open for seconds, so Ctrl-C lands while work remains
    run = small_run(tmp_path / "run", humaneval_dir, PROBLEMS, SLOW, hold_last=0.5)
    proc = execute_cli(run.root, tmp_path / "cache.sqlite")
    owner = f"{socket.gethostname()}:{proc.pid}"
    deadline = time.monotonic() + 120
    while not run.result_files() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert [c for c in engine_containers(docker_client) if c["Labels"].get(OWNER_LABEL) == owner]
    assert proc.poll() is None and len(run.result_files()) < PROBLEMS, "the run ended before Ctrl-C"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130  # "interrupted; run the same command again to resume"
    assert [c for c in engine_containers(docker_client) if c["Labels"].get(OWNER_LABEL) == owner] == []
    finished = run.result_files()
    assert finished and all(len(read_results(p).results) >= 3 + SLOW for p in finished)  # whole files only

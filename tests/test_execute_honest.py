"""Honest statuses, through the real engine and real containers: a harness fault is never a
program's result (a spawn failure is retried in a fresh container), a Timeout is confirmed
by a second run alone before it is recorded or cached, `--no-cache` executes everything
again, and results made by another image or other limits are executed again on resume."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from test_execute_support import own_containers, small_run, with_timeout

from harness.cli import build_parser, main
from harness.execute import execute_run
from harness.execute.cache import ExecCache, cache_key
from harness.execute.engine import Executor, timeout_jump
from harness.execute.languages import load_language, result_of
from harness.files import read_results, write_results

pytest_plugins = ("test_execute_support",)

FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
HOG = "while True:\n    pass\n"
# about 0.5-2 s of one core here: well inside 5 s alone, far outside it at a 15th of a core
VICTIM = "assert sum(range(100_000_000)) == 4999999950000000\nprint('done')\n"


# -- no Docker needed -------------------------------------------------------------------
def test_timeout_jump_needs_five_points_and_twice_the_median():
    assert timeout_jump(0.30, []) is None  # no history: nothing to compare with
    assert timeout_jump(0.04, [0.0, 0.0]) is None  # under 5 points
    assert timeout_jump(0.06, [0.0, 0.01, 0.0]) == 0.0
    assert timeout_jump(0.16, [0.10, 0.12, 0.08]) is None  # 6 points up, but not twice
    assert timeout_jump(0.21, [0.10, 0.12, 0.08]) == 0.10


def test_a_jump_in_the_timeout_share_warns_and_the_history_grows(tmp_path, capsys):
    from harness.execute.engine import LanguageCounts

    lang = load_language("py")
    executor = Executor(cache=ExecCache(tmp_path / "exec.sqlite"))
    for timeouts in (1, 0, 2):  # earlier executions: 1 %, 0 %, 2 %
        executor._timeout_history(lang, "sha256:img", LanguageCounts(programs=100, timeouts=timeouts))
    assert capsys.readouterr().err == ""
    counts = LanguageCounts(programs=100, timeouts=9)
    executor._timeout_history(lang, "sha256:img", counts)
    err = capsys.readouterr().err
    assert err.startswith("flora-eval: warning: py: 9.0% of programs timed out") and err.count("\n") == 1
    assert "median of 1.0%" in err and "--no-cache" in err
    assert counts.as_dict()["timeout_share_before"] == 0.01
    executor._timeout_history(lang, "sha256:other", LanguageCounts(programs=100, timeouts=9))
    assert capsys.readouterr().err == "", "another image has its own history"
    assert executor.cache.timeout_shares("py", "sha256:img") == [0.01, 0.0, 0.02, 0.09]


def test_no_cache_flag_on_execute_and_the_main_command():
    parser = build_parser()
    assert parser.parse_args(["--no-cache"]).no_cache
    assert not parser.parse_args([]).no_cache
    assert parser.parse_args(["execute", "x.json", "--no-cache"]).no_cache


# -- Docker -----------------------------------------------------------------------------
@pytest.mark.docker
def test_spawn_failure_is_retried_in_a_fresh_container_not_scored(py_image, exec_cache):
    """Two lanes share one container with a pids limit of 32: a fork bomb in one lane fills
    it, so starting the next programs in the other lane fails with EAGAIN. They are retried
    in a fresh container and pass; before, each came out as exit 127, an Exception."""
    lang = dataclasses.replace(with_timeout(load_language("py"), 3.0), pids=32)
    ok = [f"import time\ntime.sleep(0.3)\nassert {i} + 1 == {i + 1}\n" for i in range(6)]
    with Executor(jobs=1, lanes=2, cache=None) as executor:
        results = dict(executor.run_programs(lang, [FORK_BOMB, *ok]))
        stats = executor.stats.as_dict()
    assert results[0].status in {"Timeout", "Exception"}
    failed = {i: (r.status, r.exit_code, r.stderr[-200:]) for i, r in results.items() if i and not r.passed}
    assert failed == {}, "a program that could not be started was scored"
    assert stats["infra_retries"] >= 1 and stats["containers_retired"] >= 1, stats


ESCAPE = """
import os, time
if os.fork() == 0:
    os.setsid()
    null = os.open('/dev/null', os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    time.sleep(10 ** 6)
print('parent done')
"""
# the programs' own uid: its other live processes (a survivor of the program before)
OTHERS = """
import os
others = []
for pid in os.listdir('/proc'):
    if pid.isdigit() and int(pid) != os.getpid():
        try:
            status = open(f'/proc/{pid}/status').read()
        except OSError:
            continue
        if int(status.split('Uid:')[1].split()[0]) == os.getuid() and 'zombie' not in status:
            others.append(pid)
assert others == [], others
print('alone')
"""


class NoCleanupExecutor(Executor):
    """The worker gives up killing at once: any process a program leaves survives cleanup."""

    def limits(self, lang):
        return dataclasses.replace(super().limits(lang), cleanup_s=0.0)


@pytest.mark.docker
def test_a_container_whose_cleanup_left_processes_is_replaced(py_image):
    """A program leaves an escaped process that cleanup does not kill: its result is kept,
    and the next program runs in a fresh container, never beside the survivor."""
    lang = load_language("py")
    with NoCleanupExecutor(jobs=1, cache=None) as executor:
        results = dict(executor.run_programs(lang, [ESCAPE, OTHERS]))
        stats = executor.stats.as_dict()
    assert results[0].passed and results[0].stdout == "parent done\n"
    assert results[1].passed and results[1].stdout == "alone\n", results[1].stderr[-300:]
    assert stats["containers_retired"] >= 1 and stats["sandbox_restarts"] == 0, stats


class LoadedExecutor(Executor):
    """Three lanes share a fifth of a core: each program gets a fifteenth."""

    def limits(self, lang):
        return dataclasses.replace(super().limits(lang), cpus=0.2)


@pytest.mark.docker
@pytest.mark.slow
def test_timeout_from_a_loaded_container_is_run_again_and_comes_out_ok(py_image, tmp_path):
    lang = with_timeout(load_language("py"), 5.0)
    cache = ExecCache(tmp_path / "exec.sqlite")
    programs = [HOG, HOG + "# another\n", VICTIM]
    with LoadedExecutor(jobs=1, lanes=3, cache=cache) as executor:
        results = dict(executor.run_programs(lang, programs))
        counts = executor.stats.as_dict()["languages"]["py"]
        limits = executor.limits_key(lang)
    assert results[2].passed and results[2].stdout == "done\n", (results[2].status, results[2].stderr[-300:])
    assert [results[i].status for i in (0, 1)] == ["Timeout", "Timeout"]
    assert counts["timeout_reruns"] == 3, "the victim timed out at first, with the hogs"
    assert counts["timeouts_confirmed"] == 2 and counts["timeouts"] == 2
    assert counts["timeout_share"] == round(2 / 3, 4)
    keys = [cache_key(p, py_image, limits) for p in programs]
    cached = cache.get_many(keys)
    judged = [result_of(lang, program, cached[key]["observation"]).status
              for program, key in zip(programs, keys, strict=True)]
    assert judged == ["Timeout", "Timeout", "OK"], "only the second runs"


@pytest.mark.docker
def test_no_cache_executes_everything_again(tmp_path, humaneval_dir, py_image, exec_cache, docker_client):
    run = small_run(tmp_path / "run", humaneval_dir, problems=2)
    assert execute_run(run, jobs=2).telemetry["executed"] == 4
    for path in run.result_files():
        path.unlink()
    cached = execute_run(run, jobs=2).telemetry
    assert cached["cache_hits"] == 6 and cached["executed"] == 0
    for path in run.result_files():
        path.unlink()
    again = execute_run(run, jobs=2, use_cache=False).telemetry
    assert again["cache_hits"] == 0 and again["executed"] == 4 and again["programs"] == 6
    assert own_containers(docker_client) == [], "every container of this process was removed"


@pytest.mark.docker
def test_no_cache_on_the_execute_command(tmp_path, test_inputs_dir, py_image, exec_cache, capsys):
    source = test_inputs_dir / "py-davinci-0.2-keep-HumanEval53.json"

    def stamps(*flags):
        assert main(["execute", str(source), "--out", str(tmp_path), *flags]) == 0
        out = capsys.readouterr().out.strip()
        return [r.timestamp for r in read_results(Path(out)).results]

    first = stamps()
    time.sleep(1.1)  # timestamps are whole seconds: a new run shows a later one
    assert stamps() == first, "cached"
    assert min(stamps("--no-cache")) > max(first), "executed again"


@pytest.mark.docker
def test_results_of_another_image_or_limits_are_run_again_on_resume(tmp_path, humaneval_dir, py_image,
                                                                     exec_cache):
    run = small_run(tmp_path / "run", humaneval_dir, problems=3)
    execute_run(run, jobs=2)
    paths = run.result_files()
    first = {p: read_results(p) for p in paths}
    assert all(r.image_id == py_image and r.limits for r in first.values())
    other_image, other_limits, same = paths
    write_results(other_image, dataclasses.replace(first[other_image], image_id="sha256:0ther"))
    write_results(other_limits, dataclasses.replace(first[other_limits], limits="mem=1g,pids=1"))
    mtime = same.stat().st_mtime_ns
    again = execute_run(run, jobs=2).telemetry
    assert again["programs"] == 6, "the two files made elsewhere, not the third"
    assert read_results(other_image).image_id == py_image
    assert read_results(other_limits).limits == first[other_limits].limits
    assert same.stat().st_mtime_ns == mtime
    assert execute_run(run, jobs=2).telemetry == {}, "everything is current now"

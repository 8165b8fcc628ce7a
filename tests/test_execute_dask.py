"""Execution on a Dask cluster (`--executor dask`): a real local cluster of two worker
processes on 127.0.0.1, real Docker. "Identical results" compares what a result says about
its program (program, status, exit code, stdout, stderr with numbers masked: Ruby's test
runner prints its own timings), not when it ran (timestamp)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from test_execute_support import engine_containers, small_run

from harness.cli import main
from harness.errors import UserError
from harness.execute import execute_run, open_executor
from harness.execute.engine import Executor
from harness.execute.sandbox import OWNER_LABEL
from harness.files import read_completions, read_results, write_completions
from harness.runs import RunDir

pytest_plugins = ("test_execute_support",)
distributed = pytest.importorskip("distributed", reason="needs the dask extra (pip install '.[dask]')")
LANGS = ("py", "rb", "lua")


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes (two threads each), scheduler and workers on loopback only."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                                  protocol="tcp", dashboard_address=None) as local:
        yield local


def loopback_only(cluster) -> None:
    with distributed.Client(cluster.scheduler_address) as client:
        workers = list(client.nthreads())
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)


def languages_run(root: Path, test_inputs_dir: Path) -> RunDir:
    """py, rb and lua: MultiPL-E's HumanEval 53 completions (a pass and a failure each), six
    distinct programs per file (trailing spaces), so batches spread over both workers."""
    run = RunDir.open(root)
    for lang in LANGS:
        record = read_completions(test_inputs_dir / f"{lang}-davinci-0.2-keep-HumanEval53.json")
        variants = tuple(c + " " * k for k in range(3) for c in record.completions)
        write_completions(run.completions_path("tiny", "base", lang, record.name),
                          record.__class__(**{**vars(record), "completions": variants}))
    return run


def outcomes(run: RunDir) -> dict[str, list[tuple]]:
    return {str(p.relative_to(run.root)): [(r.program, r.status, r.exit_code, timeless(r.stdout),
                                            timeless(r.stderr)) for r in read_results(p).results]
            for p in run.result_files()}


def timeless(output: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "N", output)


def local_outcomes(run: RunDir, tmp_path: Path) -> dict[str, list[tuple]]:
    copy = RunDir(shutil.copytree(run.root, tmp_path / "local-pool"))
    with Executor(jobs=2, cache=None, use_cache=False) as executor:
        execute_run(copy, executor=executor)
    return outcomes(copy)


def owned_by(client, pids: set[int]) -> list:
    host = socket.gethostname()
    return [c for c in engine_containers(client)
            if (c.get("Labels") or {}).get(OWNER_LABEL) in {f"{host}:{pid}" for pid in pids}]


# -- no Docker needed -------------------------------------------------------------------
@pytest.mark.slow  # the connection timeout (20 s)
def test_unreachable_scheduler_is_one_line_naming_the_fix(tmp_path, capsys):
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    run = RunDir.open(tmp_path / "run")
    (run.root / "manifest.json").write_text("{}")
    scheduler = f"tcp://127.0.0.1:{port}"
    assert main(["execute", str(run.root), "--executor", "dask", "--scheduler", scheduler]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flora-eval: error: the Dask scheduler at tcp://127.0.0.1:") and "\n" not in err
    assert "--scheduler" in err


def test_dask_without_the_extra_or_a_scheduler_names_the_fix(monkeypatch):
    with pytest.raises(UserError, match="--scheduler"):
        open_executor("dask")
    with pytest.raises(UserError, match="--executor dask"):
        open_executor("local", scheduler="tcp://127.0.0.1:8786")
    monkeypatch.setitem(os.sys.modules, "distributed", None)  # as without the extra installed
    with pytest.raises(UserError, match=r"pip install 'flora-eval\[dask\]'"):
        open_executor("dask", scheduler="tcp://127.0.0.1:8786")


def test_nodes_whose_toolchains_differ_are_refused():
    from harness.execute.cluster import DaskExecutor
    from harness.execute.languages import load_language

    executor, py = DaskExecutor(scheduler="tcp://127.0.0.1:8786"), load_language("py")
    executor.record(py, {"node": "a", "worker": "tcp://10.0.0.1:1", "image": "sha256:aa",
                         "toolchain": "Python 3.13.5"}, batches=1)
    assert executor.images["py"] == "sha256:aa"
    executor.record(py, {"node": "b", "worker": "tcp://10.0.0.2:1", "image": "sha256:bb",
                         "toolchain": "Python 3.13.5"})  # built on its node: same toolchain, other id
    assert executor.images["py"] == "toolchain:Python 3.13.5"
    assert executor.nodes["tcp://10.0.0.1:1"] == {"node": "a", "batches": 1,
                                                 "images": {"py": {"image": "sha256:aa",
                                                                   "toolchain": "Python 3.13.5"}}}
    with pytest.raises(UserError, match="disagree on the py toolchain"):
        executor.record(py, {"node": "c", "worker": "tcp://10.0.0.3:1", "image": "sha256:cc",
                             "toolchain": "Python 3.12.1"})


# -- Docker -----------------------------------------------------------------------------
@pytest.mark.docker
@pytest.mark.slow
def test_three_languages_on_two_workers_equal_the_local_pool(cluster, test_inputs_dir, tmp_path,
                                                             docker_client, exec_cache):
    loopback_only(cluster)
    run = languages_run(tmp_path / "run", test_inputs_dir)
    with open_executor("dask", jobs=1, use_cache=True, scheduler=cluster.scheduler_address) as executor:
        executor.programs_per_batch = 2
        summary = execute_run(run, executor=executor)
    assert outcomes(run) == local_outcomes(run, tmp_path)
    statuses = {lang: [r[1] for r in rs] for lang, rs in outcomes(run).items()}
    assert all("OK" in s and len(s) == 6 for s in statuses.values()) and len(statuses) == 3
    assert summary.telemetry["executed"] == summary.telemetry["distinct_programs"] == 18
    assert len(summary.nodes) == 2 and all(n["batches"] > 0 for n in summary.nodes.values())
    for node in summary.nodes.values():  # every node's image and toolchain, per language
        assert set(node["images"]) == set(LANGS) and node["node"] == socket.gethostname()
        assert all(v["image"] == summary.images[k] and v["toolchain"] for k, v in node["images"].items())
    # the cache stays with the client: a second run executes nothing
    for path in run.result_files():
        path.unlink()
    with open_executor("dask", jobs=1, scheduler=cluster.scheduler_address) as executor:
        again = execute_run(run, executor=executor)
    assert again.telemetry["cache_hits"] == 18 and again.telemetry["executed"] == 0


@pytest.mark.docker
@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_nothing_and_leaves_no_container(cluster, humaneval_dir, tmp_path,
                                                                        docker_client, exec_cache):
    loopback_only(cluster)
    run = small_run(tmp_path / "run", humaneval_dir, problems=4, slow_variants=4)  # 28 programs, 24 distinct
    with distributed.Client(cluster.scheduler_address) as client:
        pids = set(client.run(os.getpid).values())
    victim = max(pids)
    killed_at: list[int] = []  # batches answered when the worker was killed
    with open_executor("dask", jobs=1, use_cache=False, scheduler=cluster.scheduler_address) as executor:
        executor.programs_per_batch = 2

        def kill_after_first_batch():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                answered = sum(n["batches"] for n in list(executor.nodes.values()))
                if answered >= 1:
                    os.kill(victim, signal.SIGKILL)
                    killed_at.append(answered)
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_after_first_batch, daemon=True)
        killer.start()
        summary = execute_run(run, executor=executor)
        killer.join()
    assert killed_at and killed_at[0] < 6  # killed mid-run: 12 batches of 2 distinct programs
    assert sum(n["batches"] for n in summary.nodes.values()) == 12  # each batch's answer taken once
    assert outcomes(run) == local_outcomes(run, tmp_path)
    assert summary.telemetry["executed"] == summary.telemetry["distinct_programs"] == 24
    with distributed.Client(cluster.scheduler_address) as client:
        client.wait_for_workers(2, timeout=120)  # the nanny restarted the killed worker
        pids |= set(client.run(os.getpid).values())
    deadline = time.monotonic() + 30
    while owned_by(docker_client, pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert owned_by(docker_client, pids) == []


@pytest.mark.docker
@pytest.mark.slow
def test_the_main_command_on_dask_plans_as_execute_does(cluster, humaneval_dir, tmp_path, exec_cache, capsys):
    """The main command with `--executor dask`: the same plan (results made under other limits
    run again, the others are held) as every other path."""
    import dataclasses

    from harness.files import write_results

    run = tmp_path / "run"
    argv = ["--model", "tiny", "--device", "cpu", "--lang", "py", "--dataset", str(humaneval_dir),
            "--limit", "2", "-n", "2", "--max-tokens", "16", "--run-dir", str(run), "--executor", "dask",
            "--scheduler", cluster.scheduler_address]
    assert main(argv) == 0
    other, same = RunDir(run).result_files()
    held = read_results(other)
    write_results(other, dataclasses.replace(held, limits="mem=1g,pids=1"))
    untouched = same.read_bytes()
    assert main(argv) == 0
    capsys.readouterr()
    assert read_results(other).limits == held.limits and same.read_bytes() == untouched
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["plan"]["execute"] == {"held": 1, "stale": 1, "missing": 0, "orphans": 0, "execute": 1}
    assert manifest["config"]["executor"] == "dask" and len(manifest["nodes"]) == 2

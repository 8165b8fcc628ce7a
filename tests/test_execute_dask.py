"""Execution on a Dask cluster (`--executor dask`): a real local cluster of two worker
processes on 127.0.0.1, real Docker. "Identical results" compares what a result says about
its program (program, status, exit code, stdout, stderr), not when it ran (timestamp)."""

from __future__ import annotations

import os
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
    return {str(p.relative_to(run.root)): [(r.program, r.status, r.exit_code, r.stdout, r.stderr)
                                           for r in read_results(p).results] for p in run.result_files()}


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


def test_a_node_whose_image_id_is_not_the_runs_is_refused_naming_it():
    """The cache key is the run's image id, never a label: a node with the same toolchain but
    another image id, or no image, stops the run with one line naming it and both ids."""
    from harness.execute.cluster import DaskExecutor
    from harness.execute.languages import load_language

    py = load_language("py")
    a = {"node": "a", "worker": "tcp://10.0.0.1:1", "image": "sha256:aa", "toolchain": "Python 3.13.5"}
    b = {"node": "b", "worker": "tcp://10.0.0.2:1", "image": "sha256:bb", "toolchain": "Python 3.13.5"}
    # a client without the image (or without Docker): the first node's id is the run's
    executor = DaskExecutor(scheduler="tls://127.0.0.1:8786")
    executor.record(py, a, batches=1)
    assert executor.images["py"] == "sha256:aa"
    assert executor.nodes["tcp://10.0.0.1:1"] == {"node": "a", "batches": 1, "images": {
        "py": {"image": "sha256:aa", "toolchain": "Python 3.13.5"}}}
    with pytest.raises(UserError, match=r"Dask workers tcp://10.0.0.1:1 and tcp://10.0.0.2:1 run different "
                                        r"flora-eval/py images \(sha256:aa and sha256:bb\)") as refused:
        executor.record(py, b)
    assert "\n" not in str(refused.value) and "docker load" in str(refused.value)
    assert executor.images["py"] == "sha256:aa"  # never a label
    # a client with the image: every node must run the client's id
    executor = DaskExecutor(scheduler="tls://127.0.0.1:8786", images={"py": "sha256:cc"}, _own={"py": True})
    with pytest.raises(UserError, match=r"Dask worker tcp://10.0.0.1:1 \(node a\) runs flora-eval/py as "
                                        r"sha256:aa, this client as sha256:cc; .*docker -H ssh://a load"):
        executor.record(py, a)
    with pytest.raises(UserError, match=r"\(node b\) has no flora-eval/py image sha256:cc"):
        executor.record(py, {**b, "image": ""})


def test_a_plain_tcp_scheduler_beyond_this_machine_is_warned_about(tmp_path, capsys, monkeypatch):
    from harness.execute.cluster import WARNED_ENV, connect, plain_tcp_warning

    for safe in ("tls://10.0.0.1:8786", "tcp://127.0.0.1:8786", "tcp://localhost:8786", "tcp://[::1]:8786",
                 "127.0.0.1:8786"):
        assert plain_tcp_warning(safe) == "", safe
    for unsafe in ("tcp://10.0.0.1:8786", "10.0.0.1:8786", "tcp://sched.example.org:8786"):
        assert "plain TCP" in plain_tcp_warning(unsafe) and "tls://" in plain_tcp_warning(unsafe)
    # a scheduler file is read for its address; the warning comes once, before connecting
    monkeypatch.delenv(WARNED_ENV, raising=False)
    monkeypatch.setattr("harness.execute.cluster.CONNECT_TIMEOUT_S", 0.5)
    sched = tmp_path / "sched.json"
    sched.write_text('{"address": "tcp://192.0.2.1:8786"}')  # TEST-NET-1: nothing answers
    for _ in range(2):
        with pytest.raises(UserError, match="not reachable"):
            connect(str(sched))
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if line.startswith("flora-eval: warning:")] == [
        "flora-eval: warning: " + plain_tcp_warning("tcp://192.0.2.1:8786")]


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

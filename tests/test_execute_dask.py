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
import subprocess
import sys
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
def test_a_node_runs_the_clients_id_under_any_tag_and_never_builds_another(docker_client, py_image):
    """What a worker answers (its facts), asked outside a cluster: the client's id when its
    engine has it under any tag; without it and without the tag, nothing (a build here would
    make another id); with no id expected, its own tag's."""
    import dataclasses

    from harness.execute.cluster import node_facts
    from harness.execute.languages import load_language

    py = load_language("py")
    untagged = dataclasses.replace(py, image=f"flora-eval-test/absent-{os.getpid()}")
    assert node_facts(untagged, py_image)["image"] == py_image
    assert node_facts(untagged, "sha256:" + "0" * 64)["image"] == ""
    assert docker_client.images.list(name=untagged.image_tag) == []  # nothing was built
    own = node_facts(py)
    assert own["image"] == py_image and own["toolchain"].startswith("Python")
    assert node_facts(py, "sha256:" + "0" * 64)["image"] == py_image  # another id: the client refuses it


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


# -- real `dask worker` processes: a worker dies during its first image build, or the last one mid-run
@pytest.fixture
def scheduler():
    """A scheduler on loopback with no workers of its own: the tests start `dask worker`s."""
    with distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1", protocol="tcp",
                                  dashboard_address=None) as local:
        yield local.scheduler_address


@pytest.fixture
def workers(scheduler, tmp_path):
    """Start real `dask worker` processes (no nanny: a killed one stays dead), logs in files."""
    started: list[subprocess.Popen] = []

    def start(name: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", scheduler,
                                     "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                                     "--name", name], stdout=out, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc, log

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def wait_for_workers(scheduler: str, count: int) -> dict[str, str]:
    """Worker address → name, once `count` workers have joined."""
    with distributed.Client(scheduler) as client:
        client.wait_for_workers(count, timeout=120)
        return {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}


def wait_for_line(log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{log.name}: no {text!r} in {timeout} s"
        time.sleep(0.02)


PROGRAMS = ("print('ok')\n", "assert 1 == 2\n", "import sys\nprint('x' * 10)\nsys.exit(3)\n")


@pytest.mark.docker
@pytest.mark.slow
def test_a_worker_killed_during_its_first_image_build_leaves_the_run_to_the_others(
        scheduler, workers, docker_client, py_image):
    """Neither the client nor the nodes have the language's (test-only) image tag: each worker
    builds it. The worker that logs its build first is SIGKILLed then; its pinned task is
    dropped within seconds, the other's image id is the run's (and the cache key), and the
    programs run there, as on the local pool."""
    import dataclasses

    from harness.execute.cluster import DaskExecutor
    from harness.execute.languages import load_language

    tag = f"flora-eval-test/py-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    lang = dataclasses.replace(load_language("py"), image=tag)
    (a, log_a), (b, _) = workers("a"), workers("b")
    wait_for_workers(scheduler, 2)
    try:
        started = time.monotonic()
        with DaskExecutor(jobs=1, cache=None, use_cache=False, scheduler=scheduler) as executor:
            killer = threading.Thread(target=lambda: (wait_for_line(log_a, f"building {tag}", 120),
                                                      os.kill(a.pid, signal.SIGKILL)), daemon=True)
            killer.start()
            got = dict(executor.run_programs(lang, list(PROGRAMS)))
            killer.join()
            lost, image = list(executor.lost), executor.images["py"]
        took = time.monotonic() - started
        assert a.wait(timeout=10) == -signal.SIGKILL and b.poll() is None
        assert len(lost) == 1 and lost[0] not in executor.nodes  # a never answered
        assert image == docker_client.images.get(tag).id  # b's build, by id (on one engine: py's)
        with Executor(jobs=1, cache=None, use_cache=False) as local:
            want = dict(local.run_programs(load_language("py"), list(PROGRAMS)))
        assert [(r.status, r.exit_code, r.stdout) for _, r in sorted(got.items())] == \
               [(r.status, r.exit_code, r.stdout) for _, r in sorted(want.items())]
        assert took < 240, took
    finally:  # this test's tags only (an image with other tags stays)
        for name in (tag, f"{tag}:staging"):
            try:
                docker_client.images.remove(name, noprune=True)
            except Exception:  # never built (or already removed)
                pass


@pytest.mark.docker
@pytest.mark.slow
def test_the_last_worker_killed_mid_run_ends_in_one_line_and_a_rerun_resumes(
        scheduler, workers, humaneval_dir, tmp_path, py_image, exec_cache, capsys, monkeypatch):
    monkeypatch.setenv("FLORA_EVAL_DASK_WORKERS_TIMEOUT", "5")
    run = small_run(tmp_path / "run", humaneval_dir, problems=4, slow_variants=4)  # 24 distinct programs
    only, _ = workers("only")
    wait_for_workers(scheduler, 1)
    killer = threading.Thread(daemon=True, target=lambda: (wait_for_results(run, 1, 120),
                                                           os.kill(only.pid, signal.SIGKILL)))
    killer.start()
    started = time.monotonic()
    code = main(["execute", str(run.root), "--executor", "dask", "--scheduler", scheduler, "--jobs", "1"])
    took = time.monotonic() - started
    killer.join()
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("flora-eval")]
    assert code == 2 and took < 60, (code, took)
    assert len(err) == 1 and err[0].startswith("flora-eval: error: every Dask worker left"), err
    assert "run the same command again to resume" in err[0]
    kept = {p.name for p in run.result_files()}
    assert 1 <= len(kept) < 4  # the finished files stay
    workers("again")
    wait_for_workers(scheduler, 1)
    with open_executor("dask", jobs=1, scheduler=scheduler) as executor:
        executor.programs_per_batch = 2
        again = execute_run(run, executor=executor)
    assert again.telemetry["executed"] < 24  # resumed: what finished was kept
    assert outcomes(run) == local_outcomes(run, tmp_path)


def wait_for_results(run: RunDir, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(list(run.result_files())) < count:
        assert time.monotonic() < deadline, "no results file appeared"
        time.sleep(0.02)


# -- TLS: the scheduler and workers require certificates signed by the cluster's CA ------------
@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    """A CA and one certificate it signed (scheduler, workers and client alike), by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    root = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=flora-test-ca")
    openssl("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=flora-test-node")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "node.pem", "-days", "1")
    return {"ca": root / "ca.pem", "cert": root / "node.pem", "key": root / "node.key"}


def dask_tls_config(certs: dict[str, Path]) -> dict[str, object]:
    """What a user puts in ~/.config/dask/*.yaml (or DASK_DISTRIBUTED__COMM__... variables)."""
    return {"distributed.comm.require-encryption": True, "distributed.comm.tls.ca-file": str(certs["ca"]),
            "distributed.comm.tls.client.cert": str(certs["cert"]),
            "distributed.comm.tls.client.key": str(certs["key"])}


@pytest.mark.docker
@pytest.mark.slow
def test_the_dask_path_over_tls_executes_and_refuses_a_client_without_a_certificate(
        certificates, humaneval_dir, tmp_path, docker_client, py_image, exec_cache, capsys, monkeypatch):
    """`execute`, and the main command (whose execution process is another process), over TLS
    with the client's certificate set in code; without one the scheduler refuses the client."""
    import dask

    from harness.execute.cluster import CLIENT_SECURITY, dask_env_name

    for key in CLIENT_SECURITY:  # what the run hands on to its child is undone after the test
        monkeypatch.setenv(dask_env_name(key), "")
        monkeypatch.delenv(dask_env_name(key))

    certs = {k: str(v) for k, v in certificates.items()}
    security = distributed.Security(require_encryption=True, tls_ca_file=certs["ca"],
                                    tls_scheduler_cert=certs["cert"], tls_scheduler_key=certs["key"],
                                    tls_worker_cert=certs["cert"], tls_worker_key=certs["key"],
                                    tls_client_cert=certs["cert"], tls_client_key=certs["key"])
    run = small_run(tmp_path / "run", humaneval_dir, problems=2)  # 6 programs, 4 distinct
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  protocol="tls", security=security, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        # no certificate in Dask's config: the scheduler does not let this client in
        assert main(["execute", str(run.root), "--executor", "dask", "--scheduler", address]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("flora-eval: error: the Dask scheduler at tls://") and "\n" not in err
        assert "distributed.comm.tls.ca-file" in err and list(run.result_files()) == []
        with dask.config.set(dask_tls_config(certificates)):
            assert main(["execute", str(run.root), "--executor", "dask", "--scheduler", address,
                         "--jobs", "1"]) == 0
            assert main(["--model", "tiny", "--device", "cpu", "--lang", "py", "--dataset",
                         str(humaneval_dir), "--limit", "1", "-n", "2", "--max-tokens", "16", "--run-dir",
                         str(tmp_path / "main"), "--executor", "dask", "--scheduler", address,
                         "--jobs", "1"]) == 0
    assert "warning" not in capsys.readouterr().err
    statuses = [r[1] for rs in outcomes(run).values() for r in rs]
    assert len(statuses) == 6 and statuses.count("OK") == 4
    assert [len(rs) for rs in outcomes(RunDir(tmp_path / "main")).values()] == [2]


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


@pytest.mark.docker
@pytest.mark.slow
def test_timeouts_are_confirmed_alone_on_the_workers_too(cluster, py_image):
    """A program that timed out runs again as a task of its own, one task at a time, in the
    node's one-container one-lane pool, as on the local pool (a 1 s limit keeps it short)."""
    import dataclasses

    from harness.execute.cluster import DaskExecutor
    from harness.execute.languages import load_language

    py = load_language("py")
    lang = dataclasses.replace(py, steps=tuple(dataclasses.replace(s, timeout_s=1.0) for s in py.steps))
    loops = [f"while True:\n    x = {k}\n" for k in range(3)]
    with DaskExecutor(jobs=2, cache=None, use_cache=False, scheduler=cluster.scheduler_address) as executor:
        got = dict(executor.run_programs(lang, [*loops, "print('ok')\n"]))
        batches = sum(node["batches"] for node in executor.nodes.values())
        counts = executor.stats.languages["py"]
        assert executor._pools["py#confirm"].alone
    assert [got[i].timed_out for i in range(4)] == [True, True, True, False]
    assert [got[i].status for i in range(4)] == ["Timeout", "Timeout", "Timeout", "OK"]
    assert (counts.reruns, counts.confirmed) == (3, 3)
    assert batches >= 1 + 3, "each confirmation is a task of its own"

"""The in-container worker, run here on the host as a plain subprocess (no Docker, no uid
switching): its protocol, time limits, output cap, compile-step stop and process-group kill."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.execute import worker

WORKER = Path(worker.__file__)
# Debian's python3-minimal (what language images carry) lacks shutil, queue, ...
MINIMAL_OK = {"errno", "json", "os", "select", "selectors", "signal", "subprocess", "sys", "threading",
              "time", "collections"}


def run_worker(tmp_path: Path, steps: list[dict], sources: list[str], limit: int = 2048, lanes: int = 2,
               worker_env: dict | None = None, needles: tuple[str, ...] = ()):
    config = {"file": "main.py", "steps": steps, "env": {"GREETING": "hi {file}"}, "output_limit": limit,
              "needles": list(needles), "lanes": lanes, "uids": None, "gid": None,
              "root": str(tmp_path / "work"), "oom_adj": False}
    lines = [json.dumps({"config": config})] + [json.dumps({"id": str(i), "source": s})
                                                for i, s in enumerate(sources)]
    proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=worker_env)
    proc.stdin.write("\n".join(lines) + "\n")
    proc.stdin.flush()
    answers = [json.loads(proc.stdout.readline())]
    while len(answers) < len(sources) + 1:
        answers.append(json.loads(proc.stdout.readline()))
    proc.stdin.close()
    proc.wait(timeout=10)
    assert answers[0]["ready"]
    return {a["id"]: a["steps"] for a in answers[1:]}


def py_step(timeout: float = 2.0) -> dict:
    return {"argv": [sys.executable, "{file}"], "timeout_s": timeout, "ok_exit": [0]}


def test_worker_imports_only_python3_minimal_modules():
    tree = ast.parse(WORKER.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names <= MINIMAL_OK, names - MINIMAL_OK


def test_runs_programs_with_status_inputs_and_env(tmp_path):
    got = run_worker(tmp_path, [py_step()], [
        "print('ok')",
        "import sys; print('bad', file=sys.stderr); sys.exit(3)",
        "import os; print(os.environ['GREETING'], os.getcwd() == os.environ['HOME'])",
        "def f(:\n",
    ])
    assert got["0"][0]["exit_code"] == 0 and got["0"][0]["stdout"] == "ok\n"
    assert got["1"][0]["exit_code"] == 3 and got["1"][0]["stderr"] == "bad\n"
    assert got["2"][0]["stdout"] == "hi main.py True\n"
    assert "SyntaxError" in got["3"][0]["stderr"]
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir()), "work dirs removed"


def test_timeout_kills_the_process_group_and_caps_output(tmp_path):
    pidfile = tmp_path / "child.pid"
    got = run_worker(tmp_path, [py_step(1.5)], [
        "while True: print('x' * 1000)",
        f"import subprocess, time\np = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\ntime.sleep(60)",
    ], limit=100)
    flood, sleeper = got["0"][0], got["1"][0]
    assert flood["timed_out"] and flood["stdout"].startswith("x" * 100 + "\n... [")
    assert flood["stdout_bytes"] > 10_000 and flood["stdout_cut"] == flood["stdout_bytes"] - 200
    assert sleeper["timed_out"] and sleeper["seconds"] < 5
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_output_keeps_head_and_tail_and_finds_needles_in_the_whole_stream(tmp_path):
    """A long trace keeps its end; a needle anywhere in the stream (one split across two
    reads included) is reported even where its text was cut."""
    got = run_worker(tmp_path, [py_step()], [
        "import sys, time\nprint('head', flush=True)\nsys.stdout.write('y' * 100_000 + 'NEED')\n"
        "sys.stdout.flush(); time.sleep(0.2)\nprint('LE middle' + 'z' * 100_000 + 'the end')",
        "import sys; print('é' * 150, file=sys.stderr)",
        "print('short NEEDLE')",
    ], limit=100, needles=("NEEDLE", "absent"))
    long, wide, short = got["0"][0], got["1"][0], got["2"][0]
    assert long["stdout"].startswith("head\nyyy") and long["stdout"].endswith("zzthe end\n")
    assert long["stdout_bytes"] == 5 + 100_004 + 100_017 and long["stdout_cut"] == long["stdout_bytes"] - 200
    assert long["scanned"] == ["NEEDLE", "absent"] and long["stdout_found"] == ["NEEDLE"]
    assert long["stderr"] == "" and long["stderr_bytes"] == 0 and long["stderr_cut"] == 0
    assert wide["stderr"] == "é" * 150 + "\n" and wide["stderr_cut"] == 0 and wide["stderr_bytes"] == 301
    assert short["stdout"] == "short NEEDLE\n" and "scanned" not in short  # whole: the text decides


def test_failed_compile_step_stops_the_program(tmp_path):
    compile_step = {"argv": [sys.executable, "-m", "py_compile", "{file}"], "timeout_s": 5, "ok_exit": [0]}
    got = run_worker(tmp_path, [compile_step, py_step()], ["print('ran')", "def f(:\n"])
    assert [s["exit_code"] for s in got["0"]] == [0, 0] and got["0"][1]["stdout"] == "ran\n"
    assert len(got["1"]) == 1 and got["1"][0]["exit_code"] != 0


def test_missing_toolchain_is_an_outcome_not_a_crash(tmp_path):
    got = run_worker(tmp_path, [{"argv": ["no-such-compiler-xyz", "{file}"], "timeout_s": 2, "ok_exit": [0]}],
                     ["x"])
    assert got["0"][0]["exit_code"] == 127 and "cannot start" in got["0"][0]["stderr"]


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX only")
def test_end_of_input_ends_the_worker(tmp_path):
    config = {"file": "main.py", "steps": [py_step(30)], "env": {}, "output_limit": 10, "lanes": 1,
              "uids": None, "gid": None, "root": str(tmp_path / "w"), "oom_adj": False}
    proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    proc.stdin.write(json.dumps({"config": config}) + "\n")
    proc.stdin.write(json.dumps({"id": "0", "source": "import time; time.sleep(30)"}) + "\n")
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["ready"]
    proc.stdin.close()  # the harness died
    assert proc.wait(timeout=5) == 0


def test_programs_see_the_image_env_with_a_private_home(tmp_path):
    """The worker's environment is the image's ENV: programs get it (go's GOCACHE lives there),
    minus the container's HOSTNAME, with their own HOME/TMPDIR and the definition's env on top."""
    image_env = {"PATH": os.environ["PATH"], "IMAGE_VAR": "from-image", "HOSTNAME": "c0ffee",
                 "HOME": "/root", "GREETING": "overridden by the definition"}
    got = run_worker(tmp_path, [py_step()], [
        "import os; print(os.environ.get('IMAGE_VAR'), 'HOSTNAME' in os.environ, "
        "os.environ['HOME'] == os.getcwd(), os.environ['GREETING'])",
    ], worker_env=image_env)
    assert got["0"][0]["stdout"] == "from-image False True hi main.py\n"


def run_worker_answers(tmp_path: Path, steps: list[dict], sources: list[str], lanes: int = 1) -> dict:
    """Like run_worker, but every answer object (errors included), by id."""
    config = {"file": "main.py", "steps": steps, "env": {}, "output_limit": 2048, "lanes": lanes,
              "uids": None, "gid": None, "root": str(tmp_path / "work"), "oom_adj": False}
    lines = [json.dumps({"config": config})] + [json.dumps({"id": str(i), "source": s})
                                                for i, s in enumerate(sources)]
    proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    proc.stdin.write("\n".join(lines) + "\n")
    proc.stdin.flush()  # stdin stays open: closing it ends the worker
    answers = [json.loads(proc.stdout.readline()) for _ in range(len(sources) + 1)]
    proc.stdin.close()
    proc.wait(timeout=10)
    assert answers[0]["ready"]
    return {a["id"]: a for a in answers[1:]}


def test_spawn_failure_is_a_harness_fault_and_retires_the_worker(tmp_path):
    """exec failing with E2BIG (an argument over the kernel's 128 KiB per-string limit) is
    not a missing toolchain: the program is answered with an error (the harness runs it
    again elsewhere), never with an exit code, and the worker runs nothing more."""
    step = {"argv": [sys.executable, "-c", "pass", "x" * (1 << 18)], "timeout_s": 5, "ok_exit": [0]}
    got = run_worker_answers(tmp_path, [step], ["print(1)", "print(2)"])
    first, second = got["0"], got["1"]
    assert "steps" not in first and "cannot start" in first["error"] and first["bounced"] is False
    assert "steps" not in second and "retired" in second["error"] and second["bounced"] is True


def test_step_outcomes_say_why_the_sandbox_stopped_them(tmp_path):
    got = run_worker(tmp_path, [py_step(1.0)], [
        "import time; time.sleep(10)",
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",  # what the OOM killer sends
        # Python ignores SIGXFSZ (it sees EFBIG); programs in other languages die of it
        "import os, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
        "os.kill(os.getpid(), signal.SIGXFSZ)",
        "print('ok')",
    ], lanes=1)
    assert [got[str(i)][0]["stopped"] for i in range(4)] == ["time", "memory", "file_size", None]
    assert "survivors" not in got["3"][0]


def test_stop_reasons_from_exit_status_and_cgroup_counters():
    none = (None, None)
    assert worker.stop_reason(-9, True, none, none) == "time"
    assert worker.stop_reason(-9, False, none, none) == "memory"
    assert worker.stop_reason(137, False, (0, 0), (1, 0)) == "memory"  # a child of a shell, OOM-killed
    assert worker.stop_reason(-25, False, none, none) == "file_size"
    assert worker.stop_reason(2, False, (0, 3), (0, 4)) == "pids"  # failed after hitting the pids limit
    assert worker.stop_reason(0, False, (0, 3), (0, 4)) is None  # hit it, coped, and succeeded
    assert worker.stop_reason(1, False, (0, 3), (0, 3)) is None
    assert worker.stop_reason(1, False, none, none) is None

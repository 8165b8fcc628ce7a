"""Hostile programs are contained, get the right status, and leave the host, the other
programs and the engine unharmed. All of them run in ONE batch through the real executor
(py, run-step timeout shortened to 3 s, same rules), one slot, so each is followed by the
next program in the same container; a probe at the end checks what they left behind."""

from __future__ import annotations

import socket

import pytest
from test_execute_support import own_containers, with_timeout

from harness.execute.engine import Executor
from harness.execute.languages import load_language

pytest_plugins = ("test_execute_support",)

TIMEOUT_S = 3.0
OK_PROGRAM = "assert sum(range(10)) == 45\nprint('fine')\n"

HOSTILE = {
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "allocate_8gib": "data = b'x' * (8 << 30)\nprint(len(data))\n",
    "fill_the_disk": "block = b'x' * (1 << 20)\nwith open('big', 'wb') as f:\n    while True:\n"
                     "        f.write(block)\n",
    "fill_tmp_with_files": "import itertools\nfor i in itertools.count():\n"
                           "    open(f'/tmp/f{i}', 'wb').write(b'x' * (1 << 20))\n",
    "print_forever": "while True:\n    print('x' * 1000)\n",
    "sleep_forever": "import time\ntime.sleep(10 ** 6)\n",
    "network": "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\nprint('connected')\n",
    "dns": "import socket\nprint(socket.getaddrinfo('deb.debian.org', 80))\n",
    "kill_the_worker": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
                       "os.kill(1, signal.SIGKILL)\n",
    "kill_everything": "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
    "write_outside_work_dir": "open('/usr/evil', 'w').write('x')\n",
    "lone_surrogate": 'print("\ud800")\n',  # broken unicode from a model must not break the engine
    "privileges": "import os\nstatus = open('/proc/self/status').read()\n"
                  "caps = [line for line in status.splitlines() if line.startswith('Cap')]\n"
                  "print(os.getuid(), os.geteuid(), caps)\n"
                  "os.setuid(0)\n",
    "escape_with_setsid": "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
                          "    null = os.open('/dev/null', os.O_WRONLY)\n"
                          "    os.dup2(null, 1)\n    os.dup2(null, 2)\n"
                          "    time.sleep(10 ** 6)\nprint('parent done')\n",
}
EXPECTED = {
    "fork_bomb": {"Timeout", "Exception"},
    # MemoryError or the OOM killer (Exception); on a loaded machine the test's short 3 s
    # limit can come first while the container's 1 GiB fills (Timeout). Never OK.
    "allocate_8gib": {"Exception", "Timeout"},
    "fill_the_disk": {"Exception"},  # file-size limit (SIGXFSZ) or a full tmpfs
    "fill_tmp_with_files": {"Exception"},
    "print_forever": {"Timeout"},
    "sleep_forever": {"Timeout"},
    "network": {"Exception"},
    "dns": {"Exception"},
    "kill_the_worker": {"Exception"},  # not permitted: programs run under another uid
    "kill_everything": {"OK"},  # kill(-1) reaches only its own uid, and Linux spares the caller
    "write_outside_work_dir": {"Exception"},
    "lone_surrogate": {"OK"},
    "privileges": {"Exception"},  # setuid(0) is not permitted
    "escape_with_setsid": {"OK"},  # it exits 0; its escaped child is killed afterwards
}
# Runs after every hostile program in the same container: nothing of theirs is left.
PROBE = """
import os
mine = os.getuid()
others = []
for pid in os.listdir('/proc'):
    if pid.isdigit() and int(pid) != os.getpid():
        try:
            status = open(f'/proc/{pid}/status').read()
        except OSError:
            continue
        uid = int(status.split('Uid:')[1].split()[0])
        state = status.split('State:')[1].split()[0]
        if uid == mine and state != 'Z':
            others.append(pid)
assert others == [], others
assert os.listdir('.') == ['main.py', '.tmp'] or sorted(os.listdir('.')) == ['.tmp', 'main.py']
assert [f for f in os.listdir('/tmp') if f.startswith('f')] == [], 'files left in /tmp'
open('small', 'wb').write(b'x' * (8 << 20))  # the disk has room again
print('clean')
"""


@pytest.fixture(scope="module")
def outcome(request, py_image, tmp_path_factory):
    """Run the whole hostile batch once; the tests below look at one result each."""
    secret = tmp_path_factory.mktemp("host") / "secret.txt"
    secret.write_text("host secret 42")
    programs = dict(HOSTILE)
    programs["read_host_file"] = f"print(open({str(secret)!r}).read())\n"
    names = []
    sources = []
    for name, source in programs.items():
        names += [name, f"after_{name}"]
        sources += [source, OK_PROGRAM + f"# after {name}\n"]
    names.append("probe")
    sources.append(PROBE)
    lang = with_timeout(load_language("py"), TIMEOUT_S)
    with Executor(jobs=1, cache=None) as executor:
        results = dict(executor.run_programs(lang, sources))
        restarts = executor.stats.restarts
    client = request.getfixturevalue("docker_client")
    return {"results": {names[i]: r for i, r in results.items()}, "restarts": restarts,
            "secret": secret, "client": client}


KEPT = 2 * 2048 + 64  # the head and the tail of a stream, and the note of the cut between them


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_contained(outcome, name):
    result = outcome["results"][name]
    assert result.status in EXPECTED[name], (result.status, result.exit_code, result.stderr[-300:])
    assert len(result.stdout) <= KEPT and len(result.stderr) <= KEPT
    after = outcome["results"][f"after_{name}"]
    assert after.passed and after.stdout == "fine\n", "the next program in the same container is unharmed"


@pytest.mark.docker
@pytest.mark.slow
def test_details(outcome):
    results = outcome["results"]
    flood = results["print_forever"]
    assert flood.exit_code == -1 and len(flood.stdout) <= KEPT and " bytes cut] ...\n" in flood.stdout
    assert flood.observation[-1]["stdout_bytes"] > flood.observation[-1]["stdout_cut"] > 0
    assert results["sleep_forever"].exit_code == -1
    assert "Network is unreachable" in results["network"].stderr
    assert "PermissionError" in results["kill_the_worker"].stderr
    assert "Read-only file system" in results["write_outside_work_dir"].stderr
    assert results["escape_with_setsid"].stdout == "parent done\n"
    uid, euid, *_ = results["privileges"].stdout.split()
    assert int(uid) == int(euid) != 0
    assert "CapEff:\\t0000000000000000" in results["privileges"].stdout  # no capabilities at all
    assert "CapPrm:\\t0000000000000000" in results["privileges"].stdout


@pytest.mark.docker
@pytest.mark.slow
def test_host_files_are_out_of_reach(outcome):
    result = outcome["results"]["read_host_file"]
    assert result.status == "Exception" and "FileNotFoundError" in result.stderr
    assert "host secret" not in result.stdout
    assert outcome["secret"].read_text() == "host secret 42"


@pytest.mark.docker
@pytest.mark.slow
def test_engine_and_host_unharmed(outcome):
    probe = outcome["results"]["probe"]
    assert probe.passed and probe.stdout == "clean\n", probe.stderr[-500:]
    assert outcome["restarts"] == 0, "no hostile program brought its container down"
    assert own_containers(outcome["client"]) == []  # all removed when the executor closed
    socket.gethostbyname("localhost")  # the host still resolves names; the engine still answers
    assert outcome["client"].ping()

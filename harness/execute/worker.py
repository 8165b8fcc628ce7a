"""The in-container worker: runs programs it reads from stdin, one JSON object per line,
and writes one JSON result per line to stdout as each finishes. Standard library only,
one file: the harness passes this file's text to `python3 -c` when a container starts.

Protocol
  first line  {"config": {"file", "steps": [{"argv", "fast", "timeout_s", "ok_exit", "warm"}], "env",
               "output_limit", "needles": [str], "lanes", "uids": [..] | null, "gid",
               "warm_uids": [..], "root", "oom_adj", "cleanup_s"}}
  then        {"id": str, "source": str}                       one per program
  answers     {"ready": true, "python": "3.13.5"}               once, after the config
              {"id": str, "steps": [{"exit_code", "stdout", "stderr", "stdout_bytes",
                                     "stderr_bytes", "stdout_cut", "stderr_cut", "timed_out",
                                     "stopped", "seconds"}], "retire": str (only when set)}
              {"id": str, "error": str, "bounced": bool}     the worker's own fault
Steps run in order; a step stops the program when it timed out, the sandbox stopped it, or
its exit code is not in its `ok_exit` (null: any). The harness decides the status from the
outcomes (the observation). Each stream is read whole: its size in bytes is reported, and
its text is kept whole up to 2 x `output_limit` characters, else as its first and last
`output_limit` characters with the number of bytes cut between them. The harness's rules
look for `needles` (every text its status rules name) in the whole stream: a step whose
stream was cut also reports "scanned" (the needles) and "<stream>_found" (those seen).
`stopped` says why the sandbox ended a step: "time" (its limit), "memory" (killed by
SIGKILL, which only the OOM killer sends, or the container's OOM-kill count rose during
it), "file_size" (SIGXFSZ), "pids" (it failed after hitting the process limit) or null. The
cgroup's counters name the program only when it runs alone in its container (one lane).

Warm steps. A step with "warm": {"argv", "quota", "start_s"} is answered by a long-lived
toolchain process (one per lane, started on first use, under the lane's own warm uid from
"warm_uids": never root, never a program's uid; while it compiles, the work dir's group is
its uid's, so it reads that program's files and nothing another uid keeps to itself)
instead of a fresh `argv`: the worker holds its stdin and stdout pipes (no socket, no port:
nothing the program's uid can open) and writes one request per line,
{"argv": the step's filled argv, "cwd": the work dir, "env": the step's env}; it answers one
line, {"exit_code": int, "stdout": str, "stderr": str}, after writing its files into cwd
(which the worker then hands to the lane's uid). No answer within the step's own time limit
is the program's Timeout (the process is killed, the next program starts a fresh one); an
answer that is not such a line, or a process that died, is the process's fault: it is
restarted and the program's step runs cold. It is also restarted after `quota` requests.
The step's outcome says which path ran: "warm": true, or "warm_fallback": why it ran cold.
A step whose argv is its language's faster-starting command ("fast": true, the harness's
choice) says so in its outcome too: "fast": true.

Harness faults are never a program's result. A program that cannot be started for a reason
other than a missing toolchain (EAGAIN/ENOMEM from fork under pids or memory pressure) is
answered with "error"; so is any failure of the worker itself. A cleanup that could not kill
every process of the program's uid delivers the result with "retire". After either, the
worker is retired: later programs are answered with "error" and "bounced" (never run here),
and the harness replaces the container.

Only modules of Debian's python3-minimal may be used (no shutil, no queue): language
images need not carry a full Python.

Each lane runs one program at a time under its own uid (never the worker's), in its own
process group, in a fresh work dir. When a step ends, its process group and then every
process of the lane's uid are killed, and the lane's files are removed. Closing stdin (the
harness exited or was killed) ends the worker, and with it the container.
"""

import errno
import json
import os
import select
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque

OOM_WRAPPER = ["/bin/sh", "-c", 'echo 1000 > /proc/self/oom_score_adj 2>/dev/null; exec "$@"', "sh"]
SHARED_TMP_DIRS = ("/tmp", "/dev/shm", "/var/tmp")
WORKER_ONLY_ENV = ("HOSTNAME",)  # the container's id: would differ between runs of a program
# exec errors that mean "this toolchain is not there": the program's outcome (exit 127)
TOOLCHAIN_MISSING = (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR)
CLEANUP_DEADLINE_S = 3.0
# (cgroup v2 file, cgroup v1 file) and the counter's name in them
OOM_KILLS = (("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"), "oom_kill")
PIDS_LIMIT_HITS = (("/sys/fs/cgroup/pids.events", "/sys/fs/cgroup/pids/pids.events"), "max")


class SpawnFailed(Exception):
    """The program could not be started for a reason of the sandbox's (not a missing
    toolchain): never the program's result."""


class Stream:
    """One output stream as it is read: its first and last `keep` bytes, its size, and which
    of `needles` occur anywhere in it (the last bytes of each read are kept as an overlap
    window, so a needle split across two reads is found)."""

    def __init__(self, keep, needles):
        self.keep = keep
        self.head = bytearray()
        self.tail = bytearray()  # the last `keep` bytes after the head
        self.size = 0
        self.needles = [(n, n.encode("utf-8")) for n in needles]
        self.window = max([len(b) for _, b in self.needles] + [1]) - 1
        self.carry = b""
        self.found = set()

    def add(self, chunk):
        self.size += len(chunk)
        room = self.keep - len(self.head)
        if room > 0:
            self.head.extend(chunk[:room])
            rest = chunk[room:]
        else:
            rest = chunk
        if rest:
            self.tail.extend(rest)
            if len(self.tail) > self.keep:
                del self.tail[: len(self.tail) - self.keep]
        if self.needles:
            data = self.carry + chunk
            for needle, raw in self.needles:
                if needle not in self.found and raw in data:
                    self.found.add(needle)
            self.carry = data[len(data) - self.window:] if self.window else b""


def _text(raw):
    return raw.decode("utf-8", errors="surrogateescape")


def _size(text):
    return len(text.encode("utf-8", errors="surrogateescape"))


def _plain(text):
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def observed(stream, limit):
    """(text, bytes cut): the whole stream when it has at most 2 x `limit` characters, else
    its first and last `limit` characters around a note of how many bytes were cut."""
    whole = stream.size == len(stream.head) + len(stream.tail)
    if whole:
        text = _text(bytes(stream.head + stream.tail))
        if len(text) <= 2 * limit:
            return _plain(text), 0
        first, last = text[:limit], text[-limit:]
    else:
        first, last = _text(bytes(stream.head))[:limit], _text(bytes(stream.tail))[-limit:]
    cut = stream.size - _size(first) - _size(last)
    return f"{_plain(first)}\n... [{cut} bytes cut] ...\n{_plain(last)}", cut


def outputs(out, err, limit):
    """The step fields that describe its output: the text kept of each stream, its size in
    bytes and how many bytes were cut; for a stream that was cut, the needles scanned for
    and those found (the rules decide on the whole stream, not on what was kept)."""
    fields = {}
    for name, stream in (("stdout", out), ("stderr", err)):
        fields[name], fields[f"{name}_cut"] = observed(stream, limit)
        fields[f"{name}_bytes"] = stream.size
        if fields[f"{name}_cut"]:
            fields[f"{name}_found"] = sorted(stream.found)
    if fields["stdout_cut"] or fields["stderr_cut"]:
        fields["scanned"] = sorted(n for n, _ in out.needles)
    return fields


def read_until(proc, deadline, out, err):
    """Drain stdout and stderr into their Streams until both close or the deadline passes.
    Returns whether the deadline passed."""
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    sel = selectors.DefaultSelector()
    for stream in (proc.stdout, proc.stderr):
        sel.register(stream.fileno(), selectors.EVENT_READ)
    open_fds = set(streams)
    timed_out = False
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        for key, _ in sel.select(timeout=min(left, 1.0)):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fd)
                open_fds.discard(key.fd)
                continue
            streams[key.fd].add(chunk)
    sel.close()
    return timed_out


def wait_until(proc, deadline):
    """Wait for the process to exit by the deadline (True) or not (False). A pidfd wakes us
    the moment it exits; Popen.wait(timeout) polls with growing sleeps, which costs ~20 ms
    per program."""
    left = max(0.0, deadline - time.monotonic())
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=left)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([fd], [], [], left)
    finally:
        os.close(fd)
    if ready:
        proc.wait()
    return bool(ready)


def processes_of(uid):
    """Live (non-zombie) pids whose real uid is `uid`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        state = fields.get("State", "").strip()[:1]
        uids = fields.get("Uid", "").split()
        if uids and int(uids[0]) == uid and state != "Z":
            found.append(int(name))
    return found


def kill_all(proc, uid, deadline_s=CLEANUP_DEADLINE_S):
    """Kill the program's process group, then every process of its uid (catches setsid).
    Returns how many processes of the uid survived (0: clean)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is None:
        return 0
    deadline = time.monotonic() + deadline_s
    while True:
        pids = processes_of(uid)
        if not pids or time.monotonic() > deadline:
            return len(pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)


def cgroup_count(counter):
    """A counter of the container's cgroup (v2 or v1), or None where it cannot be read."""
    paths, wanted = counter
    for path in paths:
        try:
            with open(path) as f:
                for line in f:
                    name, _, value = line.partition(" ")
                    if name == wanted:
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def rose(before, after):
    return before is not None and after is not None and after > before


def stop_reason(returncode, timed_out, counts_before, counts_after):
    """Why the sandbox ended the step, or None when the program ended by itself. The counts
    are (OOM kills, pids-limit hits) around the step, or Nones."""
    (oom_before, pids_before), (oom_after, pids_after) = counts_before, counts_after
    if timed_out:
        return "time"
    if returncode == -signal.SIGKILL or rose(oom_before, oom_after):
        return "memory"
    if returncode == -signal.SIGXFSZ:
        return "file_size"
    if returncode != 0 and rose(pids_before, pids_after):
        return "pids"
    return None


def limit_counts(alone):
    return (cgroup_count(OOM_KILLS), cgroup_count(PIDS_LIMIT_HITS)) if alone else (None, None)


def run_step(argv, cwd, env, timeout_s, uid, gid, limit, oom_adj, running, alone=False,
             cleanup_s=CLEANUP_DEADLINE_S, needles=()):
    start = time.monotonic()
    deadline = start + timeout_s
    ids = {} if uid is None else {"user": uid, "group": gid, "extra_groups": []}
    counts_before = limit_counts(alone)
    out, err = Stream(limit * 4 + 4, needles), Stream(limit * 4 + 4, needles)
    try:
        proc = subprocess.Popen((OOM_WRAPPER if oom_adj else []) + argv, cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, **ids)
    except OSError as exc:
        if exc.errno not in TOOLCHAIN_MISSING:  # EAGAIN, ENOMEM, ...: the sandbox's fault
            raise SpawnFailed(f"cannot start {argv[0]}: {exc}") from exc
        err.add(f"worker: cannot start {argv[0]}: {exc}".encode())
        return {"exit_code": 127, **outputs(out, err, limit), "timed_out": False, "stopped": None,
                "seconds": 0.0, "survivors": 0}
    running.add(proc)
    try:
        timed_out = read_until(proc, deadline, out, err)
        if not timed_out:
            timed_out = not wait_until(proc, deadline)
    finally:
        survivors = kill_all(proc, uid, cleanup_s)
        proc.wait()
        running.discard(proc)
        proc.stdout.close()
        proc.stderr.close()
    stopped = stop_reason(proc.returncode, timed_out, counts_before, limit_counts(alone))
    return {"exit_code": proc.returncode, **outputs(out, err, limit), "timed_out": timed_out,
            "stopped": stopped, "seconds": round(time.monotonic() - start, 4), "survivors": survivors}


class Warm:
    """One lane's long-lived toolchain process for one step (see "Warm steps" above), run as
    `uid` (its own, neither root nor a program's; None: the worker's)."""

    def __init__(self, spec, env, uid=None):
        self.spec = spec
        self.env = env
        self.uid = uid
        self.proc = None
        self.served = 0
        self.failed_starts = 0
        self.why = None
        self.sent = None  # when the last request was sent

    def stop(self):
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            self.proc = None

    def start(self):
        """Start the process and wait for its first line (bounded by `start_s`): None, or
        why it could not be started."""
        self.stop()
        try:
            ids = {} if self.uid is None else {"user": self.uid, "group": self.uid, "extra_groups": []}
            self.proc = subprocess.Popen(self.spec["argv"], cwd="/", env=self.env, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         start_new_session=True, **ids)
        except OSError as exc:
            return f"cannot start {self.spec['argv'][0]}: {exc}"
        self.served = 0
        line = self.read_line(time.monotonic() + self.spec.get("start_s", 60))
        if line is None:
            self.stop()
            return "no ready line"
        return None

    def read_line(self, deadline):
        """One line from the process by the deadline, or None (timeout, end of output)."""
        fd = self.proc.stdout.fileno()
        data = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            data.extend(chunk)
            if data.endswith(b"\n"):
                return bytes(data)

    def ask(self, request, timeout_s):
        """("answer", dict) | ("timeout", None) | ("broken", why): the process's answer to one
        request within `timeout_s` of its sending (a start it needed first is not the
        program's time). Anything but an answer stops the process."""
        if self.proc is None or self.proc.poll() is not None or self.served >= self.spec.get("quota", 100):
            if self.failed_starts >= 3:
                return "broken", "it failed to start 3 times"
            why = self.start()
            if why:
                self.failed_starts += 1
                return "broken", why
        self.served += 1
        self.sent = time.monotonic()
        deadline = self.sent + timeout_s
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as exc:
            self.stop()
            return "broken", f"cannot write to it: {exc}"
        line = self.read_line(deadline)
        if line is None:
            alive = self.proc.poll() is None
            self.stop()
            return ("timeout", None) if alive and time.monotonic() >= deadline else ("broken", "it died")
        try:
            answer = json.loads(line)
            ok = (isinstance(answer, dict) and type(answer.get("exit_code")) is int
                  and all(isinstance(answer.get(k), str) for k in ("stdout", "stderr")))
        except ValueError:
            ok = False
        if not ok:
            self.stop()
            return "broken", "a bad answer"
        return "answer", answer


def hand_over(work, uid, gid):
    """Give the files a warm process wrote into the work dir to the lane's uid, as if the
    program's own compiler had written them."""
    os.chown(work, uid, gid)
    for root, dirs, files in os.walk(work):
        for name in dirs + files:
            try:
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
            except OSError:
                pass


def run_warm_step(warm, argv, cwd, env, timeout_s, uid, gid, limit, needles):
    """The step answered by its warm process: an outcome like run_step's, or None when the
    process failed (the caller runs the step cold) with the reason in warm.why."""
    # the warm uid's group may use this one work dir and its TMPDIR while it compiles
    private = [cwd] + [env[k] for k in ("TMPDIR",) if env.get(k, "").startswith(cwd + "/")]
    if uid is not None:
        for path in private:
            os.chown(path, uid, warm.uid)
            os.chmod(path, 0o770)
    kind, answer = warm.ask({"argv": argv, "cwd": cwd, "env": env}, timeout_s)
    if uid is not None:
        hand_over(cwd, uid, gid)
        for path in private:
            os.chmod(path, 0o700)
    if kind == "broken":
        warm.why = answer
        return None
    out, err = Stream(limit * 4 + 4, needles), Stream(limit * 4 + 4, needles)
    if kind == "timeout":
        code, timed_out, stopped = -signal.SIGKILL, True, "time"
    else:
        out.add(answer["stdout"].encode("utf-8", errors="surrogateescape"))
        err.add(answer["stderr"].encode("utf-8", errors="surrogateescape"))
        code, timed_out, stopped = answer["exit_code"], False, None
    return {"exit_code": code, **outputs(out, err, limit), "timed_out": timed_out, "stopped": stopped,
            "seconds": round(time.monotonic() - warm.sent, 4), "survivors": 0, "warm": True}


def remove_tree(path):
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files + dirs:
            full = os.path.join(root, name)
            try:
                if os.path.isdir(full) and not os.path.islink(full):
                    os.rmdir(full)
                else:
                    os.unlink(full)
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


class Jobs:
    """A blocking FIFO (python3-minimal has no `queue`)."""

    def __init__(self):
        self.items = deque()
        self.cond = threading.Condition()

    def put(self, item):
        with self.cond:
            self.items.append(item)
            self.cond.notify()

    def get(self):
        with self.cond:
            while not self.items:
                self.cond.wait()
            return self.items.popleft()


def fill(text, names):
    for key, value in names.items():
        text = text.replace("{" + key + "}", value)
    return text


def remove_leftovers(uid):
    """Files a program left in the shared temp dirs (a channel to the next program)."""
    for top in SHARED_TMP_DIRS:
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    if entry.is_dir(follow_symlinks=False):
                        remove_tree(entry.path)
                    else:
                        os.unlink(entry.path)
            except OSError:
                pass


def run_program(config, lane, source, running, warms):
    uids = config.get("uids")
    uid = uids[lane] if uids else None
    gid = config.get("gid") if uids else None
    # the same path for every program of a lane, so outputs (tracebacks) are reproducible
    work = os.path.join(config["root"], f"lane{lane}")
    remove_tree(work)
    os.mkdir(work, 0o700)
    tmp = os.path.join(work, ".tmp")
    os.mkdir(tmp, 0o700)
    path = os.path.join(work, config["file"])
    with open(path, "w", encoding="utf-8", errors="replace") as f:  # lone surrogates from a model
        f.write(source)
    if uid is not None:
        for p in (work, tmp, path):
            os.chown(p, uid, gid)
    stem = config["file"].rsplit(".", 1)[0]
    names = {"file": config["file"], "stem": stem, "dir": work}
    # the image's ENV (the worker's own environment, as MultiPL-E's containers give their
    # programs), a private HOME and TMPDIR, UTF-8, then the language definition's env
    env = {k: v for k, v in os.environ.items() if k not in WORKER_ONLY_ENV}
    env.update({"HOME": work, "TMPDIR": tmp, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({k: fill(v, names) for k, v in config.get("env", {}).items()})
    outcomes = []
    try:
        for index, step in enumerate(config["steps"]):
            argv = [fill(a, names) for a in step["argv"]]
            outcome, why = None, None
            if step.get("warm"):
                warm = warms.get(index)
                if warm is None:
                    warm_uid = config["warm_uids"][lane] if uids and config.get("warm_uids") else None
                    warm = warms[index] = Warm(step["warm"], warm_env(config), warm_uid)
                outcome = run_warm_step(warm, argv, work, env, step["timeout_s"], uid, gid,
                                        config["output_limit"], config.get("needles", ()))
                why = None if outcome else warm.why
            if outcome is None:
                # the cgroup's counters name this program only when it runs alone in the container
                outcome = run_step(argv, work, env, step["timeout_s"], uid, gid, config["output_limit"],
                                   config.get("oom_adj", False), running, config.get("lanes", 1) == 1,
                                   config.get("cleanup_s", CLEANUP_DEADLINE_S), config.get("needles", ()))
                if why:
                    outcome["warm_fallback"] = why
                if step.get("fast"):
                    outcome["fast"] = True
            outcomes.append(outcome)
            ok_exit = step.get("ok_exit")
            if outcome["stopped"] or (ok_exit is not None and outcome["exit_code"] not in ok_exit):
                break
    finally:
        remove_tree(work)
        if uid is not None:
            remove_leftovers(uid)
    return outcomes


def warm_env(config):
    """A warm process's environment: the programs' (the image's ENV and the language's env),
    less what names a program's own work dir."""
    env = {k: v for k, v in os.environ.items() if k not in WORKER_ONLY_ENV}
    env.update({"HOME": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({k: v for k, v in config.get("env", {}).items() if "{" not in v})
    return env


def lane_loop(config, lane, jobs, emit, running, retired, warms):
    """`retired` (a one-item list, shared by the lanes) holds why this worker must run
    nothing more, once a harness fault happened here. `warms`: the lane's warm processes
    (step index -> Warm)."""
    while True:
        job = jobs.get()
        if job is None:
            return
        if retired:
            emit({"id": job["id"], "error": f"not run: the worker was retired ({retired[0]})",
                  "bounced": True})
            continue
        try:
            steps = run_program(config, lane, job["source"], running, warms)
        except Exception as exc:  # the worker's own fault: the harness retries, never scores it
            retired.append(f"{type(exc).__name__}: {exc}")
            emit({"id": job["id"], "error": retired[0], "bounced": False})
            continue
        survivors = sum(step.pop("survivors", 0) for step in steps)
        answer = {"id": job["id"], "steps": steps}
        if survivors:
            retired.append(f"{survivors} processes of uid {config['uids'][lane]} survived cleanup")
            answer["retire"] = retired[0]
        emit(answer)


def main():
    out_lock = threading.Lock()

    def emit(obj):
        line = json.dumps(obj) + "\n"
        with out_lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    first = sys.stdin.readline()
    if not first:
        return
    config = json.loads(first)["config"]
    os.makedirs(config["root"], exist_ok=True)
    jobs = Jobs()
    running = set()  # the programs' processes now running, to kill when the harness goes
    retired = []
    warms = [{} for _ in range(config.get("lanes", 1))]
    lanes = [threading.Thread(target=lane_loop, args=(config, i, jobs, emit, running, retired, warms[i]),
                              daemon=True)
             for i in range(config.get("lanes", 1))]
    for t in lanes:
        t.start()
    emit({"ready": True, "python": sys.version.split()[0]})
    for line in sys.stdin:
        if line.strip():
            jobs.put(json.loads(line))
    # stdin closed: the harness is done or dead. Stop everything now.
    for lane_warms in warms:
        for warm in list(lane_warms.values()):
            if warm.proc is not None:
                try:
                    os.killpg(warm.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
    for proc in list(running):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    for uid in config.get("uids") or []:
        for pid in processes_of(uid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

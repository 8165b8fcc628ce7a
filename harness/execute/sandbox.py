"""The one place that starts containers: a hardened, long-lived container per program slot,
running the worker (worker.py) with its stdin and stdout attached to the harness.

Why attach instead of `docker exec`: the container's main process reads the harness's
socket, so when the harness exits or is killed the socket closes, the worker sees end of
input and exits, and the container (auto-removed) goes with it. Leftovers of a harness that
died before that are removed at the next start (`remove_leftovers`, by label and owner pid).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.execute.languages import Language, Step, Warm

LABEL = "org.flora-eval.engine"
OWNER_LABEL = "org.flora-eval.owner"  # "<hostname>:<pid>" of the harness that started it
WORKER_SOURCE = (Path(__file__).parent / "worker.py").read_text(encoding="utf-8")
WORKER_HASH = hashlib.sha256(WORKER_SOURCE.encode()).hexdigest()[:12]
RUNNER_GID = 2000
RUNNER_UID0 = 2001  # runner1; the base image has runner1..runner16
WARM_UID0 = 3001  # a lane's warm toolchain process: its own uid and gid (no passwd entry needed)
WORK_ROOT = "/work"
# The worker runs as root inside the container with only what it needs: switch to the
# runners' uids, kill their processes, hand them their files and remove them afterwards.
WORKER_CAPS = ["SETUID", "SETGID", "KILL", "CHOWN", "DAC_OVERRIDE", "FOWNER"]
DOCKER_FIX = "start it with `make docker` (or `sudo scripts/ensure-docker.sh`)"


class SandboxError(Exception):
    """The sandbox itself failed (engine error, worker died): retried, never scored."""


def docker_client():
    """A connected docker SDK client, or a one-line UserError naming the fix."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except Exception as exc:  # DockerException, connection errors, missing socket
        raise UserError(f"the Docker engine is not reachable ({type(exc).__name__}); {DOCKER_FIX}") from None


def size_bytes(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().rstrip("b")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


@dataclass(frozen=True)
class Limits:
    """Resources of one slot (one container). Part of the cache key."""

    memory: str = "1g"
    pids: int = 256
    tmpfs: str = "256m"
    cpus: float = 1.0
    lanes: int = 1
    nofile: int = 4096
    cleanup_s: float = 3.0  # how long the worker tries to kill a program's processes
    # the steps' warm processes: memory and pids the container gets on top, for them (the
    # programs keep theirs); none on the cold path (`--cold-toolchains`)
    warm: tuple[Warm, ...] = ()
    cold: bool = False  # `--cold-toolchains`: every step's own argv, no warm process, no fast start

    @classmethod
    def of(cls, lang: Language, lanes: int = 1, cold: bool = False) -> Limits:
        warm = () if cold else tuple(s.warm for s in lang.warm_steps if s.warm)
        return cls(memory=lang.memory, pids=lang.pids, tmpfs=lang.tmpfs, cpus=float(lanes), lanes=lanes,
                   warm=warm, cold=cold)

    @property
    def container_memory(self) -> int:
        return size_bytes(self.memory) + self.lanes * sum(size_bytes(w.memory) for w in self.warm)

    @property
    def container_pids(self) -> int:
        return self.pids + self.lanes * sum(w.pids for w in self.warm)

    def key(self) -> str:
        # cpus and lanes change speed, not results (timeouts aside); keep them out of the key;
        # so are the warm processes: they observe what the cold commands do (tested equal)
        return f"mem={self.memory},pids={self.pids},tmpfs={self.tmpfs},nofile={self.nofile},w={WORKER_HASH}"


def host_config(client, limits: Limits) -> dict:
    from docker.types import LogConfig, Ulimit

    tmpfs_opts = "rw,exec,nosuid,nodev"
    fsize = size_bytes(limits.tmpfs)
    return client.api.create_host_config(
        network_mode="none",
        read_only=True,
        tmpfs={WORK_ROOT: f"{tmpfs_opts},size={limits.tmpfs},mode=755",
               "/tmp": f"{tmpfs_opts},size=64m,mode=1777"},
        shm_size="16m",
        mem_limit=limits.container_memory,
        memswap_limit=limits.container_memory,
        pids_limit=limits.container_pids,
        init=True,
        nano_cpus=int(limits.cpus * 1e9),
        ulimits=[Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
                 Ulimit(name="fsize", soft=fsize, hard=fsize),
                 Ulimit(name="core", soft=0, hard=0)],
        cap_drop=["ALL"],
        cap_add=WORKER_CAPS,
        security_opt=["no-new-privileges"],
        log_config=LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
        auto_remove=True,
    )


def worker_config(lang: Language, limits: Limits) -> dict:
    def warm(step: Step) -> dict | None:
        if not (limits.warm and step.warm and step in lang.warm_steps):
            return None
        return {"argv": list(step.warm.argv), "quota": step.warm.quota, "start_s": step.warm.start_s}

    def fast(step: Step) -> bool:
        return not limits.cold and step in lang.fast_steps

    return {
        "file": lang.file,
        "steps": [{"argv": list(s.fast_argv if fast(s) else s.argv), "fast": fast(s),
                   "timeout_s": s.timeout_s, "ok_exit": list(s.ok_when.exit_code) or None, "warm": warm(s)}
                  for s in lang.steps],
        "env": dict(lang.env),
        "output_limit": lang.output_limit,
        "needles": list(lang.needles),  # the rules' texts, looked for in the whole streams
        "lanes": limits.lanes,
        "uids": [RUNNER_UID0 + i for i in range(limits.lanes)],
        "warm_uids": [WARM_UID0 + i for i in range(limits.lanes)],
        "gid": RUNNER_GID,
        "root": WORK_ROOT,
        "oom_adj": True,
        "cleanup_s": limits.cleanup_s,
    }


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class WorkerConnection:
    """One running container and its worker: send programs, receive results (by callback
    from a reader thread). `on_line(obj)` gets each JSON answer; `on_close(reason)` once."""

    def __init__(self, client, image: str, lang: Language, limits: Limits, on_line, on_close):
        self.client = client
        self.on_line = on_line
        self.on_close = on_close
        self.stderr = bytearray()
        self._send_lock = threading.Lock()
        self._closed = False
        self.ready = threading.Event()  # set when the worker answered, or when it died first
        self.started = False
        api = client.api
        try:
            created = api.create_container(
                image, command=["python3", "-u", "-c", WORKER_SOURCE], stdin_open=True, detach=False,
                user="0", working_dir="/", labels={LABEL: lang.key, OWNER_LABEL: owner_id()},
                host_config=host_config(client, limits),
            )
            self.id = created["Id"]
            self.sock = api.attach_socket(self.id, params={"stdin": 1, "stdout": 1, "stderr": 1,
                                                           "stream": 1})
            self.raw = getattr(self.sock, "_sock", self.sock)
            api.start(self.id)
        except Exception as exc:
            raise SandboxError(f"cannot start a {lang.key} container from {image}: {exc}") from exc
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.send({"config": worker_config(lang, limits)})

    def send(self, obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode("utf-8")
        try:
            with self._send_lock:
                self.raw.sendall(data)
        except OSError as exc:
            raise SandboxError(f"worker connection lost: {exc}") from exc

    def _read(self) -> None:
        buf = bytearray()
        reason = "worker exited"
        try:
            while True:
                header = self._exactly(8)
                if header is None:
                    break
                stream, size = header[0], struct.unpack(">I", header[4:8])[0]
                payload = self._exactly(size)
                if payload is None:
                    break
                if stream == 2:
                    self.stderr.extend(payload[: max(0, 8192 - len(self.stderr))])
                    continue
                buf.extend(payload)
                while b"\n" in buf:
                    line, _, rest = bytes(buf).partition(b"\n")
                    buf = bytearray(rest)
                    if line.strip():
                        obj = json.loads(line)
                        if obj.get("ready"):
                            self.started = True
                            self.ready.set()
                        else:
                            self.on_line(obj)
        except (OSError, ValueError) as exc:
            reason = f"worker connection failed: {exc}"
        self.ready.set()
        self.on_close(f"{reason}; stderr: {bytes(self.stderr).decode(errors='replace')[-500:]}")

    def _exactly(self, n: int) -> bytes | None:
        data = bytearray()
        while len(data) < n:
            chunk = self.raw.recv(n - len(data))
            if not chunk:
                return None
            data.extend(chunk)
        return bytes(data)

    def stderr_tail(self) -> str:
        return bytes(self.stderr).decode(errors="replace").strip()[-300:]

    def close(self) -> None:
        """Stop and remove the container (closing stdin alone would also end it). A second
        caller (the pool closing while a slot drops the same connection) also waits until the
        container is gone."""
        if self._closed:
            self._wait_until_removed()
            return
        self._closed = True
        try:
            self.raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.client.api.remove_container(self.id, force=True)
        except Exception:  # already gone, being auto-removed, or the engine is down
            pass
        self._wait_until_removed()

    def _wait_until_removed(self, timeout_s: float = 10.0) -> None:
        """auto_remove runs asynchronously after the worker exits: wait until the engine no
        longer lists the container, so "closed" means nothing is left behind."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.client.api.inspect_container(self.id)
            except Exception:  # NotFound: gone (or the engine is down: nothing to wait for)
                return
            time.sleep(0.05)


def remove_leftovers(client) -> int:
    """Remove containers of harnesses on this host that are no longer alive (kill -9)."""
    removed = 0
    host = socket.gethostname()
    for c in client.api.containers(all=True, filters={"label": LABEL}):
        owner = (c.get("Labels") or {}).get(OWNER_LABEL, "")
        owner_host, _, pid = owner.rpartition(":")
        if owner_host == host and pid.isdigit() and _alive(int(pid)):
            continue
        if owner_host not in (host, ""):
            continue
        try:
            client.api.remove_container(c["Id"], force=True)
            removed += 1
        except Exception:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def engine_containers(client) -> list[dict]:
    return client.api.containers(all=True, filters={"label": LABEL})

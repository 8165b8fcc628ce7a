"""Execution on a Dask distributed cluster (`--executor dask --scheduler tls://host:port`).

The client keeps what the local executor keeps (deduplication, the persistent cache, the
results): `DaskExecutor` is an `Executor` whose pools are remote. A language's distinct
programs go to the workers in batches; each worker process runs its batches with the local
machinery on its own node (an `Executor`: the client's image id, its canaries, a `Pool` of
warm containers) and sends back the step outcomes, which the client turns into results as on
one machine. The client sends its `Language` with every batch: limits and steps are the
client's, whatever version is installed on the workers.

Every node runs the client's image id. The client's own Docker engine names it (the image
tagged `flora-eval/<lang>` there); a node whose image has another id, or none, stops the run
with one line naming the node and both ids. A client without a Docker engine or without the
image (a login node) takes the id the first node answers with (built there when missing), and
every other node must have the same. Either way that id, never a label, is the cache key.

Every wait is bounded: a worker that leaves (killed, preempted) while a task is pinned to it
(its first image build) is noticed within `POLL_S`; unpinned batches are run again by Dask on
another worker and each batch's answer is taken once. No worker for `WORKERS_TIMEOUT_S`, or no
batch finished for `STALL_S`, ends the run with one line; what finished is in the cache, so
the same command resumes. Containers die with the worker process that started them (their
socket closes) and `close()` removes any left on every node.

Beyond one machine use TLS: Dask's own configuration (`distributed.comm.tls.*`,
`distributed.comm.require-encryption`; docs/scale-out.md) is honoured, and a plain-TCP
scheduler address that is not loopback prints a warning line.

    dask scheduler --protocol tls --host 10.0.0.1 --port 8786   # with TLS in Dask's config
    dask worker tls://10.0.0.1:8786 --nthreads 2                # on every node with Docker
    flora-eval execute results/run --executor dask --scheduler tls://10.0.0.1:8786
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserError
from harness.execute.engine import Executor
from harness.execute.images import LABEL_PREFIX
from harness.execute.languages import Language

EXTRA_HINT = "pip install 'flora-eval[dask]'"
CONNECT_TIMEOUT_S = 20
WORKERS_TIMEOUT_S = 120  # no worker at all for this long ends the run
WORKERS_TIMEOUT_ENV = "FLORA_EVAL_DASK_WORKERS_TIMEOUT"
POLL_S = 2.0  # how often a wait looks at which workers are alive
TICK_S = 0.05  # how often it looks for finished tasks
STALL_S = 3600.0  # no batch (or image) answered for this long ends the run: a first image build fits
# programs per batch = slots × this: amortises a task's round trip (bench execute --executor
# dask, 2 workers × 1 slot: 4 → 0.83 of the local pool's programs/s, 16 → 0.99)
BATCHES_PER_SLOT = 16
WARNED_ENV = "FLORA_EVAL_WARNED_SCHEDULER"  # the warning is printed once, not again by the child
RESUME = "what finished is cached: run the same command again to resume"
# the client's side of Dask's security config, handed on to processes this one starts (the
# main command's execution process) when it was set in code (dask.config.set), not in a file
CLIENT_SECURITY = ("distributed.comm.require-encryption", "distributed.comm.tls.ca-file",
                   "distributed.comm.tls.client.cert", "distributed.comm.tls.client.key")


def workers_timeout_s() -> float:
    """How long a run waits with no worker at all (FLORA_EVAL_DASK_WORKERS_TIMEOUT, seconds)."""
    return float(os.environ.get(WORKERS_TIMEOUT_ENV) or WORKERS_TIMEOUT_S)


def _distributed():
    try:
        import distributed
    except ModuleNotFoundError:
        raise UserError(f"--executor dask needs the dask extra; {EXTRA_HINT}") from None
    return distributed


def scheduler_address(scheduler: str) -> str:
    """The address a `--scheduler` names: itself, or the one in a scheduler file."""
    as_file = Path(scheduler)
    if "://" not in scheduler and as_file.is_file():
        try:
            return str(json.loads(as_file.read_text()).get("address", ""))
        except (OSError, ValueError, AttributeError):
            return ""
    return scheduler


def plain_tcp_warning(address: str) -> str:
    """Why reaching this scheduler is unsafe ('' when it is TLS or on this machine)."""
    from distributed.comm import parse_address, parse_host_port

    scheme, location = parse_address(address or "tcp://127.0.0.1", strict=False)
    if scheme != "tcp":
        return ""
    host = parse_host_port(location)[0] if location else "127.0.0.1"
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return ""
    return (f"the Dask scheduler {address} is reached over plain TCP: anyone who reaches it can run "
            "code on every worker (and its node's Docker engine); use tls:// with certificates in "
            "Dask's config (docs/scale-out.md)")


def dask_env_name(key: str) -> str:
    """The environment variable Dask reads for a config key (DASK_A__B_C for a.b-c)."""
    return "DASK_" + key.upper().replace(".", "__").replace("-", "_")


def hand_on_security() -> None:
    """Put the client's security settings in the environment, so that a child process reads
    the ones this process uses, wherever they were set."""
    import dask

    for key in CLIENT_SECURITY:
        value = dask.config.get(key, None)
        if value is not None:
            os.environ.setdefault(dask_env_name(key), str(value))


def connect(scheduler: str | None):
    """A Dask client of the scheduler at `tls://host:port` (or tcp://) or named by a scheduler
    file, with the security of Dask's config (`distributed.comm.tls.*`)."""
    distributed = _distributed()
    if not scheduler:
        raise UserError("--executor dask needs --scheduler tls://HOST:PORT (or a scheduler file)")
    address = scheduler_address(scheduler)
    warning = plain_tcp_warning(address)
    if warning and os.environ.get(WARNED_ENV) != address:
        print(f"flora-eval: warning: {warning}", file=sys.stderr, flush=True)
        os.environ[WARNED_ENV] = address  # a spawned execution process inherits it: one line
    hand_on_security()
    try:
        security = distributed.Security()  # Dask's config: distributed.comm.tls.*
        if "://" not in scheduler and Path(scheduler).is_file():
            return distributed.Client(scheduler_file=scheduler, security=security, timeout=CONNECT_TIMEOUT_S)
        return distributed.Client(scheduler, security=security, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        why = type(exc).__name__
        if address.startswith("tls://"):
            raise UserError(f"the Dask scheduler at {scheduler} did not accept a TLS connection ({why}); "
                            "set distributed.comm.tls.ca-file and .client.cert/.key in Dask's config "
                            "(docs/scale-out.md) or fix --scheduler") from None
        raise UserError(f"the Dask scheduler at {scheduler} is not reachable ({why}); "
                        "start one (`dask scheduler`) or fix --scheduler") from None


# ---------------------------------------------------------------------------------------
# Worker side: one Executor per (language, image id) in each worker process, reused by
# every batch it runs
# ---------------------------------------------------------------------------------------
_NODE: dict[tuple[str, str], Executor] = {}
_NODE_LOCK = threading.Lock()
_BUILD_LOCK = threading.Lock()  # one image lookup or build at a time in a worker process
_DOCKER: list = []


def _docker():
    from harness.execute.sandbox import docker_client

    with _NODE_LOCK:
        if not _DOCKER:
            _DOCKER.append(docker_client())
        return _DOCKER[0]


def _node_image(docker, lang: Language, expected: str) -> str:
    """The image id this node runs for `lang`: the client's `expected` id when this engine has
    it (under any tag), else the id of its `flora-eval/<lang>` tag, '' when that is missing
    and an id is expected (a build here would make another id), built when none is."""
    from harness.execute import images

    if expected and images.find_image(docker, expected) is not None:
        return expected
    image = images.language_image(docker, lang)
    if image is not None:
        return image.id
    return "" if expected else images.ensure_language(docker, lang)


def node_facts(lang: Language, expected: str = "") -> dict:
    """This node's image id of the language (see `_node_image`) and its toolchain version."""
    from harness.execute import images

    docker = _docker()
    with _BUILD_LOCK:
        image_id = _node_image(docker, lang, expected)
    found = images.find_image(docker, image_id) if image_id else None
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        worker = ""
    labels = (found.labels if found is not None else None) or {}
    return {"node": socket.gethostname(), "worker": worker, "image": image_id,
            "toolchain": labels.get(f"{LABEL_PREFIX}.toolchain", "unknown")}


def _node_executor(lang: Language, image_id: str, slots: int | None, cold: bool = False) -> Executor:
    with _NODE_LOCK:
        key = (lang.key, image_id, cold)
        if key not in _NODE:
            _NODE[key] = Executor(jobs=slots, cache=None, use_cache=False, images={lang.key: image_id},
                                  cold_toolchains=cold)
        return _NODE[key]


def run_batch(lang: Language, sources: list[str], slots: int | None, expected: str,
              cold: bool = False, alone: bool = False) -> dict:
    """Run one batch in this node's pool of the `expected` image (canaries first, once per
    worker process); a node without that image runs nothing and says which it has. `cold`:
    without warm toolchains; `alone`: in the node's confirmation pool (one container, one
    lane: a timed-out program again)."""
    facts = node_facts(lang, expected)
    if facts["image"] != expected:
        return {"facts": facts, "steps": [], "restarts": 0}
    executor = _node_executor(lang, expected, slots, cold)
    with _NODE_LOCK:
        pool = executor.confirm_pool(lang) if alone else executor.pool(lang)
    steps = dict(pool.run(sources))
    return {"facts": facts, "steps": [steps[i] for i in range(len(sources))], "restarts": pool.restarts,
            "retired": pool.retired, "infra_retries": pool.infra_retries}


def close_node() -> int:
    """Close this worker's pools and remove containers of dead processes on its node."""
    from harness.execute.sandbox import remove_leftovers

    with _NODE_LOCK:
        executors = list(_NODE.values())
        _NODE.clear()
        docker = _DOCKER[0] if _DOCKER else None
    for executor in executors:
        executor.close()
    return remove_leftovers(docker) if docker is not None else 0


# ---------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------
def client_image(lang: Language) -> str:
    """The client's own image id of the language ('' without a Docker engine or that image)."""
    from harness.execute import images
    from harness.execute.sandbox import docker_client

    try:
        image = images.language_image(docker_client(), lang)
    except UserError:  # no Docker engine here: a pure Dask client
        return ""
    return image.id if image is not None else ""


def image_refusal(lang: Language, facts: dict, want: str, own: bool, first: str) -> str:
    """The one line for a node whose image is not the run's."""
    where = f"Dask worker {facts['worker'] or '?'} (node {facts['node']})"
    got, tag = facts["image"], lang.image_tag
    load = f"`docker save {tag} | docker -H ssh://{facts['node']} load`"
    if own and not got:
        return (f"{where} has no {tag} image {want[:19]} (this client's); load it there ({load}), "
                "then run again")
    if own:
        return (f"{where} runs {tag} as {got[:19]}, this client as {want[:19]}; load the client's image "
                f"there ({load}), then run again")
    return (f"Dask workers {first} and {facts['worker'] or facts['node']} run different {tag} images "
            f"({want[:19]} and {got[:19]}); give every node the same image (`docker save {tag}` on one, "
            "`docker load` on the others), then run again")


@dataclass
class RemotePool:
    """A language's pool on the cluster: `run` has the local Pool's shape. `alone`: one
    program per task, one task at a time, each in its node's confirmation pool (timed-out
    programs run again with nothing else of theirs beside them)."""

    owner: DaskExecutor
    lang: Language
    alone: bool = False
    restarts: int = 0  # the node pools' counters (the largest a node reported)
    retired: int = 0
    infra_retries: int = 0

    def run(self, sources: list[str]) -> Iterator[tuple[int, list[dict]]]:
        if self.alone:
            for index, source in enumerate(sources):
                yield from ((index, steps) for _, steps in self._run([source], size=1))
            return
        yield from self._run(sources, self.owner.batch_size())

    def _run(self, sources: list[str], size: int) -> Iterator[tuple[int, list[dict]]]:
        owner = self.owner
        image = owner.image_id(self.lang)
        run_id = uuid.uuid4().hex[:8]
        futures = {}
        for start in range(0, len(sources), size):
            future = owner.client.submit(run_batch, self.lang, sources[start:start + size], owner.jobs, image,
                                         owner.cold_toolchains, self.alone,
                                         key=f"flora-{self.lang.key}-{run_id}-{start}",
                                         pure=False)
            futures[future] = start
        try:
            for future in owner.settle(dict.fromkeys(futures), self.lang):
                answer = owner.answer(future, self.lang)
                owner.record(self.lang, answer["facts"], batches=1)
                self.restarts = max(self.restarts, answer["restarts"])
                self.retired = max(self.retired, answer.get("retired", 0))
                self.infra_retries = max(self.infra_retries, answer.get("infra_retries", 0))
                start = futures.pop(future)
                for offset, steps in enumerate(answer["steps"]):
                    yield start + offset, steps
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        pass


@dataclass
class DaskExecutor(Executor):
    """An Executor whose pools run on Dask workers; `jobs` is the containers per worker
    (default: the worker's cores). The cache and deduplication stay on the client."""

    scheduler: str | None = None
    programs_per_batch: int | None = None
    nodes: dict[str, dict] = field(default_factory=dict)  # worker → node, images, toolchains
    lost: list[str] = field(default_factory=list)  # workers that left while a task was pinned to them
    stall_s: float = STALL_S
    _own: dict[str, bool] = field(default_factory=dict)  # language → the reference id is the client's
    _dask: object = None

    @property
    def client(self):
        if self._dask is None:
            self._dask = connect(self.scheduler)
            try:
                self._dask.wait_for_workers(1, timeout=workers_timeout_s())
            except TimeoutError:
                raise UserError(f"no Dask worker joined {self.scheduler} in {workers_timeout_s():.0f} s; "
                                "start workers (`dask worker SCHEDULER`)") from None
        return self._dask

    def workers(self) -> list[str]:
        return sorted(self.client.nthreads())

    def batch_size(self) -> int:
        if self.programs_per_batch:
            return self.programs_per_batch
        slots = self.jobs or max(list(self.client.nthreads().values()) or [1])
        return max(1, slots * BATCHES_PER_SLOT)

    def image_id(self, lang: Language) -> str:
        """The run's image id of the language (the client's, or the first node's), after every
        worker now has said it runs that id (built there when no id was expected)."""
        if lang.key not in self.images:
            own = client_image(lang)
            if own:
                self.images[lang.key], self._own[lang.key] = own, True
            futures = {self.client.submit(node_facts, lang, own, workers=[w], allow_other_workers=False,
                                          pure=False): w for w in self.workers()}
            for future in self.settle(futures, lang):
                self.record(lang, self.answer(future, lang))
            if lang.key not in self.images:
                raise UserError(f"no Dask worker said which {lang.image_tag} image it runs (every one left); "
                                "start workers, then run again")
        return self.images[lang.key]

    def record(self, lang: Language, facts: dict, batches: int = 0) -> None:
        """Note a node's image and toolchain; refuse an image id that is not the run's."""
        name = facts["worker"] or facts["node"]
        entry = self.nodes.setdefault(name, {"node": facts["node"], "images": {}, "batches": 0})
        entry["batches"] += batches
        entry["images"][lang.key] = {"image": facts["image"], "toolchain": facts["toolchain"]}
        want = self.images.setdefault(lang.key, facts["image"])
        if facts["image"] != want:
            first = next((n for n, e in self.nodes.items()
                          if e["images"].get(lang.key, {}).get("image") == want), "?")
            raise UserError(image_refusal(lang, facts, want, self._own.get(lang.key, False), first))

    def answer(self, future, lang: Language) -> dict:
        """A task's answer; a failure on the worker as one line."""
        distributed = _distributed()
        try:
            return future.result()
        except UserError:
            raise
        except distributed.KilledWorker:
            raise UserError(f"a {lang.key} batch was running on each Dask worker that died in turn "
                            "(distributed.scheduler.allowed-failures); see the workers' logs; "
                            f"{RESUME}") from None
        except Exception as exc:
            raise UserError(f"a Dask worker failed a {lang.key} task ({type(exc).__name__}: "
                            f"{str(exc).strip()[:200]}); {RESUME}") from None

    def settle(self, futures: dict, lang: Language) -> Iterator:
        """Yield `futures` (future → the worker it is pinned to, or None) as they finish. One
        pinned to a worker that left is dropped (the others answer for the run); no worker for
        WORKERS_TIMEOUT_S or nothing finished for `stall_s` ends the run with one line."""
        distributed = _distributed()
        pending = dict(futures)
        finished = distributed.as_completed(list(pending))
        progress = alone_since = looked = time.monotonic()
        while pending:
            done = [f for f in finished.next_batch(block=False) if f in pending]
            for future in done:
                del pending[future]
                progress = time.monotonic()
                yield future
            if done or time.monotonic() - looked < POLL_S:
                time.sleep(0 if done else TICK_S)
                continue
            looked = time.monotonic()
            alive, now = set(self.client.nthreads()), time.monotonic()
            for future, worker in list(pending.items()):
                if worker is not None and worker not in alive:
                    future.cancel()
                    del pending[future]
                    self.lost.append(worker)
            if alive:
                alone_since = now
            elif now - alone_since > workers_timeout_s():
                raise UserError(f"every Dask worker left {self.scheduler} and none joined in "
                                f"{workers_timeout_s():.0f} s while running {lang.key}; start workers; "
                                f"{RESUME}")
            if now - progress > self.stall_s:
                raise UserError(f"no {lang.key} batch finished on the Dask workers in {self.stall_s:.0f} s; "
                                f"see the workers' logs; {RESUME}")

    def pool(self, lang: Language, canary: bool = True) -> RemotePool:
        if lang.key not in self._pools:
            self.image_id(lang)
            self._pools[lang.key] = RemotePool(self, lang)
        return self._pools[lang.key]

    def confirm_pool(self, lang: Language) -> RemotePool:
        key = f"{lang.key}#confirm"
        if key not in self._pools:
            self.image_id(lang)
            self._pools[key] = RemotePool(self, lang, alone=True)
        return self._pools[key]

    def close(self) -> None:
        super().close()
        if self._dask is not None:
            try:
                self._dask.run(close_node)
            except Exception as exc:  # a worker that is gone cannot clean up; its containers died with it
                print(f"flora-eval: warning: the Dask workers' clean-up failed ({type(exc).__name__})",
                      file=sys.stderr)
            finally:
                self._dask.close()
                self._dask = None

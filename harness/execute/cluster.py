"""Execution on a Dask distributed cluster (`--executor dask --scheduler tcp://host:port`).

The client keeps what the local executor keeps (deduplication, the persistent cache, the
results): `DaskExecutor` is an `Executor` whose pools are remote. A language's distinct
programs go to the workers in batches; each worker process runs its batches with the local
machinery on its own node (an `Executor`: the language's image, built there from the same
Dockerfiles the first time it is needed, its canaries, a `Pool` of warm containers) and
sends back the step outcomes, which the client turns into results as on one machine.

Every batch answer names its node, image id and toolchain version; they are recorded
(`nodes`, in the manifest) and nodes whose toolchain versions differ are refused. A worker
lost mid-run: Dask runs its unfinished batches on another worker; a batch's outcome is taken
once, so nothing is lost or scored twice. Containers die with the worker process that
started them (their socket closes) and `close()` removes any left on every node.

    dask scheduler --host 10.0.0.1 --port 8786            # anywhere
    dask worker tcp://10.0.0.1:8786 --nthreads 2          # on every node with Docker
    flora-eval execute results/run --executor dask --scheduler tcp://10.0.0.1:8786
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserError
from harness.execute.engine import Executor
from harness.execute.images import LABEL_PREFIX
from harness.execute.languages import Language, load_language

EXTRA_HINT = "pip install 'flora-eval[dask]'"
CONNECT_TIMEOUT_S = 20
WORKERS_TIMEOUT_S = 120
# programs per batch = slots × this: amortises a task's round trip (bench execute --executor
# dask, 2 workers × 1 slot: 4 → 0.83 of the local pool's programs/s, 16 → 0.99)
BATCHES_PER_SLOT = 16


def _distributed():
    try:
        import distributed
    except ModuleNotFoundError:
        raise UserError(f"--executor dask needs the dask extra; {EXTRA_HINT}") from None
    return distributed


def connect(scheduler: str | None):
    """A Dask client of the scheduler at `tcp://host:port` or named by a scheduler file."""
    distributed = _distributed()
    if not scheduler:
        raise UserError("--executor dask needs --scheduler tcp://HOST:PORT (or a scheduler file)")
    as_file = Path(scheduler)
    try:
        if "://" not in scheduler and as_file.is_file():
            return distributed.Client(scheduler_file=str(as_file), timeout=CONNECT_TIMEOUT_S)
        return distributed.Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UserError(f"the Dask scheduler at {scheduler} is not reachable ({type(exc).__name__}); "
                        "start one (`dask scheduler`) or fix --scheduler") from None


# ---------------------------------------------------------------------------------------
# Worker side: one Executor per worker process, reused by every batch it runs
# ---------------------------------------------------------------------------------------
_NODE: dict[str, Executor] = {}
_FACTS: dict[str, dict] = {}  # language → this node's facts (asked of Docker once)
_NODE_LOCK = threading.Lock()


def _node_executor(slots: int | None) -> Executor:
    with _NODE_LOCK:
        if "executor" not in _NODE:
            _NODE["executor"] = Executor(jobs=slots, cache=None, use_cache=False)
        return _NODE["executor"]


def node_facts(lang_key: str, slots: int | None) -> dict:
    """This node's image of the language (built when missing) and its toolchain version."""
    if lang_key in _FACTS:
        return _FACTS[lang_key]
    executor = _node_executor(slots)
    lang = load_language(lang_key)
    with _NODE_LOCK:
        image_id = executor.image_id(lang)
    labels = executor.client.images.get(image_id).labels or {}
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        worker = ""
    _FACTS[lang_key] = {"node": socket.gethostname(), "worker": worker, "image": image_id,
                        "toolchain": labels.get(f"{LABEL_PREFIX}.toolchain", "unknown")}
    return _FACTS[lang_key]


def run_batch(lang_key: str, sources: list[str], slots: int | None) -> dict:
    """Run one batch in this node's pool (canaries first, once per worker process)."""
    executor = _node_executor(slots)
    lang = load_language(lang_key)
    facts = node_facts(lang_key, slots)
    with _NODE_LOCK:
        pool = executor.pool(lang)
    steps = dict(pool.run(sources))
    return {"facts": facts, "steps": [steps[i] for i in range(len(sources))], "restarts": pool.restarts,
            "retired": pool.retired, "infra_retries": pool.infra_retries}


def close_node() -> int:
    """Close this worker's pools and remove containers of dead processes on its node."""
    from harness.execute.sandbox import remove_leftovers

    with _NODE_LOCK:
        executor = _NODE.pop("executor", None)
        _FACTS.clear()
    if executor is None:
        return 0
    executor.close()
    return remove_leftovers(executor.client)


# ---------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------
@dataclass
class RemotePool:
    """A language's pool on the cluster: `run` has the local Pool's shape."""

    owner: DaskExecutor
    lang: Language
    restarts: int = 0  # the node pools' counters (the largest a node reported)
    retired: int = 0
    infra_retries: int = 0

    def run(self, sources: list[str]) -> Iterator[tuple[int, list[dict]]]:
        distributed = _distributed()
        size = self.owner.batch_size()
        run_id = uuid.uuid4().hex[:8]
        futures = {}
        for start in range(0, len(sources), size):
            future = self.owner.client.submit(run_batch, self.lang.key, sources[start:start + size],
                                              self.owner.jobs, key=f"flora-{self.lang.key}-{run_id}-{start}",
                                              pure=False)
            futures[future] = start
        try:
            for future in distributed.as_completed(list(futures)):
                answer = future.result()
                self.owner.record(self.lang, answer["facts"], batches=1)
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
    _dask: object = None

    @property
    def client(self):
        if self._dask is None:
            self._dask = connect(self.scheduler)
            try:
                self._dask.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
            except TimeoutError:
                raise UserError(f"no Dask worker joined {self.scheduler} in {WORKERS_TIMEOUT_S} s; "
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
        """The language's image on every worker now (built there when missing); one id, or
        the toolchain version where nodes built their own images."""
        if lang.key not in self.images:
            futures = [self.client.submit(node_facts, lang.key, self.jobs, workers=[w],
                                          allow_other_workers=False, pure=False) for w in self.workers()]
            for facts in self.client.gather(futures):
                self.record(lang, facts)
        return self.images[lang.key]

    def record(self, lang: Language, facts: dict, batches: int = 0) -> None:
        """Note a node's image and toolchain; refuse a toolchain that differs from the others'."""
        entry = self.nodes.setdefault(facts["worker"] or facts["node"],
                                      {"node": facts["node"], "images": {}, "batches": 0})
        entry["batches"] += batches
        entry["images"][lang.key] = {"image": facts["image"], "toolchain": facts["toolchain"]}
        seen = {n["images"][lang.key]["toolchain"]: name for name, n in self.nodes.items()
                if lang.key in n["images"]}
        if len(seen) > 1:
            (a, first), (b, second) = list(seen.items())[:2]
            raise UserError(f"Dask workers disagree on the {lang.key} toolchain ({first}: {a!r}, "
                            f"{second}: {b!r}); rebuild with `flora-eval images build --rebuild "
                            f"{lang.key}` on each node")
        ids = {n["images"][lang.key]["image"] for n in self.nodes.values() if lang.key in n["images"]}
        self.images[lang.key] = ids.pop() if len(ids) == 1 else f"toolchain:{facts['toolchain']}"

    def pool(self, lang: Language, canary: bool = True) -> RemotePool:
        if lang.key not in self._pools:
            self.image_id(lang)
            self._pools[lang.key] = RemotePool(self, lang)
        return self._pools[lang.key]

    def confirm_pool(self, lang: Language) -> RemotePool:
        return self.pool(lang)  # timed-out programs run again on the cluster as batches

    def close(self) -> None:
        super().close()
        if self._dask is not None:
            try:
                self._dask.run(close_node)
            finally:
                self._dask.close()
                self._dask = None


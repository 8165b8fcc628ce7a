"""`flora-eval bench execute --executor dask`: programs/s through a Dask cluster's workers
(by default a local cluster of two worker processes on 127.0.0.1) as a ratio to the local
pool with as many jobs in all, on the same programs, in the same run. Both sides are warm
(images checked, canaries run, containers started) before timing, and neither uses the
cache, so every program runs."""

from __future__ import annotations

import contextlib
import statistics
import time


def local_seconds(lang, programs: list[str], jobs: int) -> float:
    from harness.execute.engine import Executor

    with Executor(jobs=jobs, cache=None, use_cache=False) as executor:
        pool = executor.pool(lang)
        list(pool.run([lang.canary.good] * pool.slots))
        start = time.perf_counter()
        for _ in pool.run(programs):
            pass
        return time.perf_counter() - start


def dask_seconds(lang, programs: list[str], per_worker: int, scheduler: str, workers: int) -> float:
    from harness.execute.cluster import DaskExecutor

    with DaskExecutor(jobs=per_worker, cache=None, use_cache=False, scheduler=scheduler) as executor:
        pool = executor.pool(lang)  # every worker's image and toolchain
        list(pool.run([lang.canary.good] * (per_worker * workers * 4)))  # every worker warm
        start = time.perf_counter()
        for _ in pool.run(programs):
            pass
        return time.perf_counter() - start


@contextlib.contextmanager
def cluster(scheduler: str | None, workers: int):
    """The given scheduler, else a local cluster of `workers` processes on loopback."""
    if scheduler:
        yield scheduler
        return
    from harness.execute.cluster import _distributed

    distributed = _distributed()
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=2, processes=True, host="127.0.0.1",
                                  protocol="tcp", dashboard_address=None) as local:
        yield local.scheduler_address


def measure(lang, programs: list[str], jobs: int, repeats: int, scheduler: str | None = None,
            workers: int = 2) -> list[dict]:
    """Rows: the local pool (`jobs` slots) and the cluster (`jobs / workers` slots per worker)."""
    per_worker = max(1, jobs // workers)
    measured: dict[str, list[float]] = {"local": [], "dask": []}
    with cluster(scheduler, workers) as address:
        for _ in range(repeats):  # round-robin, so drifting machine load hits both alike
            measured["local"].append(local_seconds(lang, programs, jobs))
            measured["dask"].append(dask_seconds(lang, programs, per_worker, address, workers))
    rates = {mode: [len(programs) / s for s in secs] for mode, secs in measured.items()}
    local = statistics.median(rates["local"])
    return [{"lang": lang.key, "mode": mode, "programs": len(programs),
             "jobs": jobs if mode == "local" else f"{workers}×{per_worker}",
             "programs_per_s": round(statistics.median(rates[mode]), 2),
             "spread": [round(min(rates[mode]), 2), round(max(rates[mode]), 2)],
             "ratio_to_local": round(statistics.median(rates[mode]) / local, 3)}
            for mode in ("dask", "local")]


def print_table(rows: list[dict], config: dict) -> None:
    import sys

    print(f"bench execute --executor dask: {config['programs']} programs, {config['jobs']} jobs in all, "
          f"{config['workers']} workers, {config['cores']} cores, median of {config['repeats']}",
          file=sys.stderr)
    header = f"{'lang':6} {'mode':6} {'jobs':>6} {'programs':>8} {'programs/s':>11} {'ratio_to_local':>15}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['lang']:6} {r['mode']:6} {r['jobs']!s:>6} {r['programs']:>8} {r['programs_per_s']:>11.2f} "
              f"{r['ratio_to_local']:>15.3f}")

"""The executor: (language, [program]) → results as they finish. Identical programs run
once, results come from the persistent cache when present, and a language's canaries run
before its first program, so a broken image fails loudly instead of scoring 0 %."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from harness.errors import UserError
from harness.execute.cache import ExecCache, cache_key
from harness.execute.languages import TIMEOUT_EXIT_CODE, Language, compile_step_ok, status_of
from harness.execute.pool import Pool
from harness.execute.sandbox import Limits, docker_client, remove_leftovers
from harness.records import ExecResult

CANARY_ATTEMPTS = 2  # a timed-out canary is run once more before the image is called broken


def result_of(lang: Language, program: str, steps: list[dict], timestamp: int | None = None) -> ExecResult:
    """MultiPL-E's result record from the worker's step outcomes: the first compile step
    that failed decides, else the final step's rules."""
    for index, step in enumerate(steps):
        args = (step["exit_code"], step["stdout"], step["stderr"], step["timed_out"])
        if index == len(lang.steps) - 1 or not compile_step_ok(lang, index, *args):
            status = status_of(lang, index, *args)
        elif index == len(steps) - 1:
            status = "Exception"  # cannot happen: the worker stopped after a compile step that passed
        else:
            continue
        exit_code = TIMEOUT_EXIT_CODE if step["timed_out"] else step["exit_code"]
        return ExecResult(program=program, stdout=step["stdout"], stderr=step["stderr"],
                          exit_code=exit_code, status=status,
                          timestamp=int(time.time()) if timestamp is None else timestamp)
    raise ValueError("no step outcomes")


@dataclass
class Stats:
    programs: int = 0
    distinct: int = 0
    cache_hits: int = 0
    executed: int = 0
    seconds: float = 0.0
    restarts: int = 0

    def as_dict(self) -> dict:
        return {"programs": self.programs, "distinct_programs": self.distinct, "cache_hits": self.cache_hits,
                "executed": self.executed, "seconds": round(self.seconds, 2),
                "programs_per_s": round(self.programs / self.seconds, 2) if self.seconds else None,
                "sandbox_restarts": self.restarts}


@dataclass
class Executor:
    """Owns the Docker client, one pool per language and the cache. Use as a context
    manager: leaving it (normally, on Ctrl-C or on an error) removes every container."""

    jobs: int | None = None
    cache: ExecCache | None = None
    use_cache: bool = True
    build_missing: bool = True
    stats: Stats = field(default_factory=Stats)
    images: dict[str, str] = field(default_factory=dict)
    _client: object = None
    _pools: dict[str, Pool] = field(default_factory=dict)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def client(self):
        if self._client is None:
            self._client = docker_client()
            remove_leftovers(self._client)
        return self._client

    @property
    def slots(self) -> int:
        return max(1, self.jobs or os.cpu_count() or 1)

    def image_id(self, lang: Language) -> str:
        if lang.key not in self.images:
            from harness.execute import images

            if self.build_missing:
                self.images[lang.key] = images.ensure_language(self.client, lang)
            else:
                image = images.language_image(self.client, lang)
                if image is None:
                    raise UserError(f"no image for {lang.key}; run `flora-eval images build {lang.key}`")
                self.images[lang.key] = image.id
        return self.images[lang.key]

    def limits(self, lang: Language) -> Limits:
        return Limits.of(lang)

    def pool(self, lang: Language, canary: bool = True) -> Pool:
        if lang.key not in self._pools:
            pool = Pool(self.client, lang, self.image_id(lang), self.slots, self.limits(lang))
            self._pools[lang.key] = pool
            if canary:
                self.check_canary(lang)
        return self._pools[lang.key]

    def canary_results(self, lang: Language) -> tuple[ExecResult, ExecResult]:
        """The known-good and known-bad programs' results. A canary that timed out runs once
        more: on a loaded machine (a cold page cache after memory-hungry programs, busy cores)
        a first start can pass a 5 s limit without anything being wrong with the image."""
        pool = self.pool(lang, canary=False)
        sources = [lang.canary.good, lang.canary.bad]
        for _ in range(CANARY_ATTEMPTS):
            got = dict(pool.run(sources))
            good, bad = result_of(lang, sources[0], got[0]), result_of(lang, sources[1], got[1])
            if TIMEOUT_EXIT_CODE not in (good.exit_code, bad.exit_code):
                break
        return good, bad

    def check_canary(self, lang: Language) -> None:
        problem = canary_problem(lang, *self.canary_results(lang))
        if problem:
            raise UserError(f"{lang.image_tag} failed its canary: {problem}; rebuild it with "
                            f"`flora-eval images build --rebuild {lang.key}`")

    def run_programs(self, lang: Language, programs: list[str]) -> Iterator[tuple[int, ExecResult]]:
        """Yield (index, result) for every program, as results become available."""
        start = time.monotonic()
        self.stats.programs += len(programs)
        where: dict[str, list[int]] = {}
        for i, program in enumerate(programs):
            where.setdefault(program, []).append(i)
        distinct = list(where)
        self.stats.distinct += len(distinct)
        image = self.image_id(lang)
        limits = f"{lang.fingerprint()}|{self.limits(lang).key()}"
        keys = [cache_key(p, image, limits) for p in distinct]
        cached = self.cache.get_many(keys) if (self.cache and self.use_cache) else {}
        todo = []
        for program, key in zip(distinct, keys, strict=True):
            hit = cached.get(key)
            if hit is None:
                todo.append((program, key))
                continue
            self.stats.cache_hits += len(where[program])
            result = ExecResult(program=program, **hit)
            for i in where[program]:
                yield i, result
        if todo:
            pool = self.pool(lang)
            for index, steps in pool.run([p for p, _ in todo]):
                program, key = todo[index]
                result = result_of(lang, program, steps)
                self.stats.executed += 1
                if self.cache is not None:
                    self.cache.put(key, {k: getattr(result, k)
                                         for k in ("stdout", "stderr", "exit_code", "status", "timestamp")})
                for i in where[program]:
                    yield i, result
            self.stats.restarts = sum(p.restarts for p in self._pools.values())
        self.stats.seconds += time.monotonic() - start

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def canary_problem(lang: Language, good: ExecResult, bad: ExecResult) -> str:
    """Why the canaries show a broken image ('' when they behave)."""
    if not good.passed:
        detail = (good.stderr or good.stdout).strip().splitlines()[-1:] or [""]
        return f"the known-good program gave {good.status} (exit {good.exit_code}: {detail[0][:200]})"
    if bad.passed:
        return "the known-bad program passed"
    if lang.canary.bad_status and bad.status != lang.canary.bad_status:
        return f"the known-bad program gave {bad.status}, expected {lang.canary.bad_status}"
    return ""

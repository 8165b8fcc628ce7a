"""The executor: (language, [program]) → results as they finish. Identical programs run
once, results come from the persistent cache when present, and a language's canaries run
before its first program, so a broken image fails loudly instead of scoring 0 %."""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from harness.errors import UserError
from harness.execute.cache import ExecCache, cache_key
from harness.execute.languages import Language, result_of
from harness.execute.pool import Pool
from harness.execute.sandbox import Limits, docker_client, remove_leftovers
from harness.records import ExecResult

CANARY_ATTEMPTS = 2  # a timed-out canary is run once more before the image is called broken
SHARE_JUMP = 0.05  # a Timeout share this far above the earlier median (and twice it) is a jump
MIN_PROGRAMS_TO_WARN = 20  # fewer results say little about a share


@dataclass
class LanguageCounts:
    """One language's Timeout share: results (duplicates and cache hits included), those the
    sandbox stopped at a time limit (from the observation, whatever the language's status
    for it), and the first-run timeouts run again alone and timed out again."""

    programs: int = 0
    timeouts: int = 0
    reruns: int = 0
    confirmed: int = 0
    median_before: float | None = None  # the earlier executions' share (same image)

    def add(self, other: LanguageCounts) -> None:
        self.programs += other.programs
        self.timeouts += other.timeouts
        self.reruns += other.reruns
        self.confirmed += other.confirmed
        if other.median_before is not None:
            self.median_before = other.median_before

    @property
    def share(self) -> float:
        return self.timeouts / self.programs if self.programs else 0.0

    def as_dict(self) -> dict:
        return {"programs": self.programs, "timeouts": self.timeouts, "timeout_share": round(self.share, 4),
                "timeout_reruns": self.reruns, "timeouts_confirmed": self.confirmed,
                "timeout_share_before": None if self.median_before is None else round(self.median_before, 4)}


@dataclass
class Stats:
    programs: int = 0
    distinct: int = 0
    cache_hits: int = 0
    executed: int = 0
    seconds: float = 0.0
    restarts: int = 0
    retired: int = 0
    infra_retries: int = 0
    languages: dict[str, LanguageCounts] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"programs": self.programs, "distinct_programs": self.distinct, "cache_hits": self.cache_hits,
                "executed": self.executed, "seconds": round(self.seconds, 2),
                "programs_per_s": round(self.programs / self.seconds, 2) if self.seconds else None,
                "sandbox_restarts": self.restarts, "containers_retired": self.retired,
                "infra_retries": self.infra_retries,
                "languages": {key: counts.as_dict() for key, counts in self.languages.items()}}


def timeout_jump(share: float, history: list[float]) -> float | None:
    """The earlier executions' median share when `share` jumped above it (by more than
    `SHARE_JUMP` and to more than twice it), else None."""
    if not history:
        return None
    median = statistics.median(history)
    return median if share > median + SHARE_JUMP and share > 2 * median else None


@dataclass
class Executor:
    """Owns the Docker client, one pool per language and the cache. Use as a context
    manager: leaving it (normally, on Ctrl-C or on an error) removes every container.

    `use_cache=False` (`--no-cache`) executes every program again (results still refresh the
    cache). `lanes` programs run at once in each container. A program that timed out runs
    once more, alone (one container of one lane, nothing else of the language running),
    after the language's other programs: only that second result is recorded, and only a
    confirmed Timeout is cached. The cache holds observations; every result is judged from
    its observation with the language's current rules."""

    jobs: int | None = None
    cache: ExecCache | None = None
    use_cache: bool = True
    build_missing: bool = True
    lanes: int = 1
    confirm_timeouts: bool = True
    cold_toolchains: bool = False  # never the steps' warm processes (the equality tests' reference)
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
        return Limits.of(lang, self.lanes, cold=self.cold_toolchains)

    def limits_key(self, lang: Language) -> str:
        """Everything besides the image that decides an observation (the language's steps
        and resources, the sandbox's limits, the worker's hash, the observation's version),
        and nothing that only decides a status: part of the cache key and recorded in
        results files (`limits`)."""
        return f"{lang.fingerprint()}|{self.limits(lang).key()}"

    def pool(self, lang: Language, canary: bool = True) -> Pool:
        if lang.key not in self._pools:
            pool = Pool(self.client, lang, self.image_id(lang), self.slots, self.limits(lang))
            self._pools[lang.key] = pool
            if canary:
                self.check_canary(lang)
        return self._pools[lang.key]

    def confirm_pool(self, lang: Language) -> Pool:
        """Where timed-out programs run again: one container of one lane, so one program
        runs at a time (the language's own pool when it is just that)."""
        limits = self.limits(lang)
        if limits.lanes == 1 and self.slots == 1:
            return self.pool(lang)
        key = f"{lang.key}#confirm"
        if key not in self._pools:
            alone = dataclasses.replace(limits, lanes=1, cpus=1.0)
            self._pools[key] = Pool(self.client, lang, self.image_id(lang), 1, alone)
        return self._pools[key]

    def canary_results(self, lang: Language) -> tuple[ExecResult, ExecResult]:
        """The known-good and known-bad programs' results. A canary that timed out runs once
        more: on a loaded machine (a cold page cache after memory-hungry programs, busy cores)
        a first start can pass a 5 s limit without anything being wrong with the image."""
        pool = self.pool(lang, canary=False)
        sources = [lang.canary.good, lang.canary.bad]
        for _ in range(CANARY_ATTEMPTS):
            got = dict(pool.run(sources))
            good, bad = result_of(lang, sources[0], got[0]), result_of(lang, sources[1], got[1])
            if not (good.timed_out or bad.timed_out):
                break
        return good, bad

    def check_canary(self, lang: Language) -> None:
        problem = canary_problem(lang, *self.canary_results(lang))
        if problem:
            raise UserError(f"{lang.image_tag} failed its canary: {problem}; rebuild it with "
                            f"`flora-eval images build --rebuild {lang.key}`")

    def run_programs(self, lang: Language, programs: list[str],
                     held: list[int] | None = None) -> Iterator[tuple[int, ExecResult]]:
        """Yield (index, result) for every program, as results become available (a program
        that timed out only once it timed out again, alone). `held`: a list that takes the
        indices of programs that timed out instead (not yielded): `confirm` runs them later,
        when nothing else runs (the main command, once generation is done)."""
        start = time.monotonic()
        self.stats.programs += len(programs)
        counts = LanguageCounts()
        where = positions(programs)
        self.stats.distinct += len(where)
        image = self.image_id(lang)
        keys = {p: cache_key(p, image, self.limits_key(lang)) for p in where}
        cached = self.cache.get_many(list(keys.values())) if (self.cache and self.use_cache) else {}
        todo = []
        for program, key in keys.items():
            hit = cached.get(key)
            if not hit or not hit.get("observation"):  # rows of older versions hold no observation
                todo.append(program)
                continue
            self.stats.cache_hits += len(where[program])
            result = result_of(lang, program, hit["observation"], hit.get("timestamp"))
            yield from self._deliver(counts, where[program], result)
        if todo:
            again = []
            for index, steps in self.pool(lang).run(todo):
                program = todo[index]
                self.stats.executed += 1
                if self.confirm_timeouts and any(step["timed_out"] for step in steps):
                    again.append(program)
                    continue
                yield from self._store(counts, where[program], keys[program], lang, program, steps)
            if held is not None:
                held.extend(i for program in again for i in where[program])
            else:
                yield from self._confirm(lang, counts, again, {p: where[p] for p in again}, keys)
            self._pool_stats()
            self._timeout_history(lang, image, counts)
        self.stats.languages.setdefault(lang.key, LanguageCounts()).add(counts)
        self.stats.seconds += time.monotonic() - start

    def confirm(self, lang: Language, programs: list[str]) -> Iterator[tuple[int, ExecResult]]:
        """Run programs that timed out once more, one at a time (`confirm_pool`); yield
        (index, result) as each finishes. Each result is recorded and cached."""
        start = time.monotonic()
        counts = LanguageCounts()
        where = positions(programs)
        image = self.image_id(lang)
        keys = {p: cache_key(p, image, self.limits_key(lang)) for p in where}
        yield from self._confirm(lang, counts, list(where), where, keys)
        self._pool_stats()
        self.stats.languages.setdefault(lang.key, LanguageCounts()).add(counts)
        self.stats.seconds += time.monotonic() - start

    def _confirm(self, lang: Language, counts: LanguageCounts, again: list[str], where: dict[str, list[int]],
                 keys: dict[str, str]):
        counts.reruns += len(again)
        for index, steps in (self.confirm_pool(lang).run(again) if again else ()):
            program = again[index]
            counts.confirmed += any(step["timed_out"] for step in steps)
            yield from self._store(counts, where[program], keys[program], lang, program, steps)

    def _pool_stats(self) -> None:
        pools = self._pools.values()
        self.stats.restarts = sum(p.restarts for p in pools)
        self.stats.retired = sum(p.retired for p in pools)
        self.stats.infra_retries = sum(p.infra_retries for p in pools)

    def _deliver(self, counts: LanguageCounts, indices: list[int], result: ExecResult):
        counts.programs += len(indices)
        counts.timeouts += len(indices) * result.timed_out
        return [(i, result) for i in indices]

    def _store(self, counts: LanguageCounts, indices: list[int], key: str, lang: Language, program: str,
               steps: list[dict]):
        """Cache the observation (never the status: that is judged again on every read)."""
        result = result_of(lang, program, steps)
        if self.cache is not None:
            self.cache.put(key, {"observation": steps, "timestamp": result.timestamp})
        return self._deliver(counts, indices, result)

    def _timeout_history(self, lang: Language, image: str, counts: LanguageCounts) -> None:
        """Compare this execution's Timeout share with earlier ones of the language on the
        same image (a jump: warn on stderr), then add it to the history."""
        if self.cache is None or not counts.programs:
            return
        history = self.cache.timeout_shares(lang.key, image)
        if history:
            counts.median_before = statistics.median(history)
        median = timeout_jump(counts.share, history)
        if median is not None and counts.programs >= MIN_PROGRAMS_TO_WARN:
            print(f"flora-eval: warning: {lang.key}: {counts.share:.1%} of programs timed out "
                  f"({counts.timeouts}/{counts.programs}) against a median of {median:.1%} in "
                  f"{len(history)} earlier executions on this image; a loaded machine turns correct "
                  "programs into timeouts: lower --jobs or stop other work, then run again with --no-cache",
                  file=sys.stderr)
        self.cache.record_timeouts(lang.key, image, counts.programs, counts.timeouts)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def positions(programs: list[str]) -> dict[str, list[int]]:
    """Each distinct program → its positions in `programs` (identical programs run once)."""
    where: dict[str, list[int]] = {}
    for i, program in enumerate(programs):
        where.setdefault(program, []).append(i)
    return where


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

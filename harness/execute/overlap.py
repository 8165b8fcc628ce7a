"""Overlapped stages: execution fed with completions files while generation goes on.

    generate ── a completions file is complete ──► bounded queue ──► execution thread
                                                                     (drains the queue, runs
                                                                      each language's programs,
                                                                      writes results files)

The main command hands `Overlap.submit` to the generate stage, which calls it with each
completions file as soon as it is written. The execution thread takes whatever has arrived
as one batch (so the pool sees many programs at once), skips files that already have
results, and writes results files exactly as `execute_run` would: a run made this way has
the same files and scores as generate-then-execute. `finish` executes what is left (files
completed before this run, or by a path that did not call `submit`), waits, and reports how
much the stages overlapped.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.execute import ExecutionSummary, execute_language, summary_of
from harness.runs import RunDir

QUEUE_SIZE = 4096  # completions files waiting; generation blocks beyond it
# Generation holds the GIL between its torch calls; the execution threads (socket I/O) wait
# for it at every switch. A shorter switch interval while both run keeps them from starving
# (measured: execution 1.5× slower overlapped at Python's default 5 ms).
SWITCH_INTERVAL_S = 0.0005
_STOP = object()


@dataclass
class Clock:
    """When each stage was active (perf_counter seconds), for the manifest."""

    start: float = field(default_factory=time.perf_counter)
    generate: tuple[float, float] | None = None
    busy: list[tuple[float, float]] = field(default_factory=list)  # execution batches

    def report(self, end: float) -> dict:
        g0, g1 = self.generate or (self.start, self.start)
        both = sum(max(0.0, min(b, g1) - max(a, g0)) for a, b in self.busy)
        return {"wall_s": round(end - self.start, 2), "generate_s": round(g1 - g0, 2),
                "execute_busy_s": round(sum(b - a for a, b in self.busy), 2),
                "both_active_s": round(both, 2), "execute_batches": len(self.busy),
                "execute_after_generate_s": round(max([b for _, b in self.busy] + [g1]) - g1, 2)}


class Overlap:
    """The execution side of the overlapped pipeline, around an open executor."""

    def __init__(self, executor, langs: tuple[str, ...] | list[str] = ()):
        """`langs`: languages to make ready (image, canaries, warm containers) while the
        model loads, before the first file arrives."""
        self.executor = executor
        self.langs = list(langs)
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.clock = Clock()
        self.seen: set[Path] = set()
        self.error: BaseException | None = None
        self.bar = None
        self.switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self.switch_interval, SWITCH_INTERVAL_S))
        self.thread = threading.Thread(target=self._loop, daemon=True, name="execute")
        self.thread.start()

    # -- the generation side ------------------------------------------------------------
    def submit(self, completions_path: Path) -> None:
        """A completions file is complete: queue it for execution (an execution error stops
        generation here)."""
        if self.error is not None:
            raise self.error
        self.queue.put(Path(completions_path))

    def generation_started(self) -> None:
        self.clock.generate = (time.perf_counter(), time.perf_counter())

    def generation_done(self) -> None:
        start = self.clock.generate[0] if self.clock.generate else self.clock.start
        self.clock.generate = (start, time.perf_counter())

    def finish(self, run: RunDir) -> ExecutionSummary:
        """Queue every completions file of the run still without results, wait for all."""
        from harness.execute.inputs import run_tasks

        for task in run_tasks(run.root, out_dir=None):
            self.queue.put(_completions_of(task.out))
        self.queue.put(_STOP)
        self.thread.join()
        self._close()
        if self.error is not None:
            raise self.error
        return summary_of(self.executor)

    def abort(self) -> None:
        """Generation failed: stop the execution thread without running what is queued."""
        self.error = self.error or RuntimeError("aborted")
        try:
            self.queue.put_nowait(_STOP)
        except queue.Full:
            pass
        self.thread.join(timeout=60)
        self._close()

    def _close(self) -> None:
        sys.setswitchinterval(self.switch_interval)
        if self.bar is not None:
            self.bar.close()

    def report(self) -> dict:
        return self.clock.report(time.perf_counter())

    # -- the execution thread -----------------------------------------------------------
    def _loop(self) -> None:
        from harness.execute.languages import load_language

        try:
            for key in self.langs:
                self.executor.pool(load_language(key))
        except BaseException as exc:
            self.error = exc
        stop = False
        while not stop:
            batch = [self.queue.get()]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(path is _STOP for path in batch)
            paths = [p for p in batch if p is not _STOP]
            if self.error is not None:
                continue  # aborted: drain until the stop
            try:
                self._execute(paths)
            except BaseException as exc:  # raised to the generation side (submit, finish)
                self.error = exc

    def _execute(self, paths: list[Path]) -> None:
        from harness.execute.inputs import task_of
        from harness.execute.languages import load_language
        from harness.files import read_completions, results_path_for

        tasks = []
        for path in dict.fromkeys(paths):
            out = results_path_for(path)
            if path in self.seen or out.exists():
                continue
            self.seen.add(path)
            tasks.append(task_of(read_completions(path), out))
        if not tasks:
            return
        started = time.perf_counter()
        by_lang: dict[str, list] = {}
        for task in tasks:
            by_lang.setdefault(task.lang, []).append(task)
        bar = self._bar()
        bar.total += sum(len(t.completions.completions) for t in tasks)
        bar.refresh()
        for key, lang_tasks in by_lang.items():
            execute_language(self.executor, load_language(key), lang_tasks, bar=bar)
        self.clock.busy.append((started, time.perf_counter()))

    def _bar(self):
        if self.bar is None:
            from tqdm import tqdm

            # below the generate bar (position 0), so both stay visible
            self.bar = tqdm(total=0, desc="execute", unit="prog", file=sys.stderr, position=1,
                            dynamic_ncols=True, mininterval=0.5)
        return self.bar


def _completions_of(results_path: Path) -> Path:
    from harness.runs import COMPLETIONS_SUFFIX, RESULTS_SUFFIX

    return results_path.with_name(results_path.name[: -len(RESULTS_SUFFIX)] + COMPLETIONS_SUFFIX)

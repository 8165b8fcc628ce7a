"""Overlapped stages: execution fed with completions files while generation goes on.

    generate ── a completions file is complete ──► bounded queue ──► execution thread
                                                                     (drains the queue, runs
                                                                      each language's programs,
                                                                      writes results files)

The main command hands `Overlap.submit` to the generate stage, which calls it with each
completions file as soon as it is written. Execution runs in a process of its own (spawned:
generation holds the GIL between its torch calls, and execution's socket threads starved
behind it in one process) with its own executor (`open_executor(**spec)`, so the local pool
or a Dask cluster). It takes whatever has arrived
as one batch (so the pool sees many programs at once), skips files that already have
results, and writes results files exactly as `execute_run` would: a run made this way has
the same files and scores as generate-then-execute. `finish` executes what is left (files
completed before this run, or by a path that did not call `submit`), waits, and reports how
much the stages overlapped.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.execute import ExecutionSummary, confirm_held, execute_language, summary_of
from harness.runs import RunDir

QUEUE_SIZE = 4096  # completions files waiting; generation blocks beyond it
STOP, ABORT = "stop", "abort"


@dataclass
class Clock:
    """When each stage was active (wall-clock seconds, comparable across processes)."""

    start: float = field(default_factory=time.time)
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
    """The generation side's handle on the execution process.

    `spec`: open_executor's arguments (kind, jobs, use_cache, scheduler); `langs`: languages
    to make ready (image, canaries, warm containers) while the model loads."""

    def __init__(self, spec: dict, langs: tuple[str, ...] | list[str] = ()):
        context = multiprocessing.get_context("spawn")  # never fork a process holding torch threads
        self.inbox = context.Queue(maxsize=QUEUE_SIZE)
        self.outbox = context.Queue()
        self.clock = Clock()
        self.error: BaseException | None = None
        self.summary: ExecutionSummary | None = None
        self.process = context.Process(target=serve, args=(spec, list(langs), self.inbox, self.outbox),
                                       daemon=True, name="flora-execute")
        self.process.start()

    # -- the generation side ------------------------------------------------------------
    def submit(self, completions_path: Path) -> None:
        """A completions file is complete: queue it for execution (an execution error stops
        generation here)."""
        self._poll(block=False)
        if self.error is not None:
            raise self.error
        self.inbox.put(str(completions_path))

    def generation_started(self) -> None:
        self.clock.generate = (time.time(), time.time())

    def generation_done(self) -> None:
        start = self.clock.generate[0] if self.clock.generate else self.clock.start
        self.clock.generate = (start, time.time())

    def finish(self, run: RunDir) -> ExecutionSummary:
        """Queue every completions file of the run still without results, wait for all."""
        from harness.execute.inputs import run_tasks

        for task in run_tasks(run.root, out_dir=None):
            self.inbox.put(str(_completions_of(task.out)))
        self.inbox.put(STOP)
        while self.summary is None and self.error is None:
            self._poll(block=True)
        self.process.join(timeout=60)
        if self.error is not None:
            raise self.error
        return self.summary

    def abort(self) -> None:
        """Generation failed: the execution process stops without running what is queued."""
        if self.process.is_alive():
            try:
                self.inbox.put(ABORT, timeout=5)
            except queue.Full:
                pass
            self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.terminate()  # its containers exit with it (their sockets close)

    def report(self) -> dict:
        return self.clock.report(time.time())

    def _poll(self, block: bool) -> None:
        try:
            kind, payload, busy = self.outbox.get(timeout=1.0) if block else self.outbox.get_nowait()
        except queue.Empty:
            if block and not self.process.is_alive():
                self.error = RuntimeError(f"the execution process died (exit {self.process.exitcode}); "
                                          "run the same command again to resume")
            return
        self.clock.busy = busy
        if kind == "error":
            self.error = payload
        else:
            self.summary = payload


# ---------------------------------------------------------------------------------------
# The execution process
# ---------------------------------------------------------------------------------------
def serve(spec: dict, langs: list[str], inbox, outbox) -> None:
    """Run batches of completions files until STOP (or ABORT); answer with the summary."""
    from harness.execute import open_executor
    from harness.execute.languages import load_language

    consumer = None
    try:
        with open_executor(**spec) as executor:
            consumer = Consumer(executor)
            for key in langs:
                executor.pool(load_language(key))
            while True:
                batch = [inbox.get()]
                while True:
                    try:
                        batch.append(inbox.get_nowait())
                    except queue.Empty:
                        break
                if ABORT in batch:
                    break
                consumer.execute([Path(p) for p in batch if p != STOP])
                if STOP in batch:
                    consumer.confirm_held()  # generation is done: confirm timeouts alone
                    break
            consumer.close()
            outbox.put(("done", summary_of(executor), consumer.busy))
    except BaseException as exc:
        outbox.put(("error", _picklable(exc), consumer.busy if consumer else []))


@dataclass
class Consumer:
    """Executes completions files into results files (each once), with one progress bar.
    Programs that timed out are confirmed only in `confirm_held`, once generation is done
    (a confirmation runs alone): until then their results files are held."""

    executor: object
    seen: set[Path] = field(default_factory=set)
    holding: list = field(default_factory=list)  # LanguageBatches with programs to confirm
    busy: list[tuple[float, float]] = field(default_factory=list)
    bar: object = None

    def execute(self, paths: list[Path]) -> None:
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
        started = time.time()
        by_lang: dict[str, list] = {}
        for task in tasks:
            by_lang.setdefault(task.lang, []).append(task)
        bar = self._bar()
        bar.total += sum(len(t.completions.completions) for t in tasks)
        bar.refresh()
        for key, lang_tasks in by_lang.items():
            batch = execute_language(self.executor, load_language(key), lang_tasks, bar=bar, hold=True)
            if batch.held:
                self.holding.append(batch)
        self.busy.append((started, time.time()))

    def confirm_held(self) -> None:
        """Run the held timeouts again, one at a time, and write the files they held."""
        if self.holding:
            started = time.time()
            for batch in self.holding:
                confirm_held(self.executor, batch, bar=self._bar())
            self.holding.clear()
            self.busy.append((started, time.time()))

    def _bar(self):
        if self.bar is None:
            from tqdm import tqdm

            # below the generate bar (position 0), so both stay visible
            self.bar = tqdm(total=0, desc="execute", unit="prog", file=sys.stderr, position=1,
                            dynamic_ncols=True, mininterval=0.5)
        return self.bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _completions_of(results_path: Path) -> Path:
    from harness.runs import COMPLETIONS_SUFFIX, RESULTS_SUFFIX

    return results_path.with_name(results_path.name[: -len(RESULTS_SUFFIX)] + COMPLETIONS_SUFFIX)

"""Overlapped stages: execution fed with completions files while generation goes on.

    generate ── a completions file is complete ──► pipe ──► execution process
                                                            (reads the pipe as it fills,
                                                             plans and runs each batch,
                                                             writes results files)

The main command hands `Overlap.submit` to the generate stage, which calls it with each
completions file as soon as it is written. Execution runs in a process of its own with its
own executor (`open_executor(**spec)`, so the local pool or a Dask cluster). It is started
as `python -m harness.execute.overlap`, a fresh interpreter: never forked (generation holds
the GIL between its torch calls and torch's threads, and execution's socket threads starved
behind it in one process) and never multiprocessing's spawn, which re-imports the caller's
`__main__` (a script without an `if __name__ == "__main__":` guard would run again in the
child). The two sides talk over two pipes (`multiprocessing.connection.Connection`).

The execution process takes whatever has arrived as one batch (so the pool sees many
programs at once) and decides what to run with the plan every path uses
(execute/plan.py: results made by another image, other limits or from other programs run
again, `--no-cache` runs everything once): a run made this way has the same files and
scores as generate-then-execute. `finish` plans the whole run (files completed before this
run, or by a path that did not call `submit`), waits, and reports how much the stages
overlapped.

Every wait is bounded by the other side's life: a watcher interrupts generation within
POLL_S of the execution process's end (`watching`), `submit` checks that it is alive before
queueing (the pipe never fills: the process reads it continuously), and `finish` polls for
its answer. A dead execution process ends the run with one line; every finished completions
and results file is kept, so running the same command again resumes. If the main process
dies instead, the execution process sees its pipe close and stops.
"""

from __future__ import annotations

import _thread
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from harness.errors import UserError
from harness.execute import ExecutionSummary, confirm_held, execute_language, summary_of

STOP, ABORT = "stop", "abort"
POLL_S = 0.5  # how often a waiting side checks that the other is alive
EXIT_WAIT_S = 60  # for the execution process to end after STOP or ABORT
WATCH_SIGNAL = signal.SIGUSR1  # how the watcher interrupts generation (simulated: no signal is sent)


class Interrupted(BaseException):
    """Raised in the generating thread when the execution process ended while it worked
    (a BaseException, as KeyboardInterrupt: no `except Exception` on the way swallows it)."""


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
        self.clock = Clock()
        self.error: BaseException | None = None
        self.summary: ExecutionSummary | None = None
        self.lock = threading.Lock()  # submit may be called from a torchrun receiver thread
        self.process, self.inbox, self.outbox = start_process()
        self._send(("start", spec, list(langs)))

    # -- the generation side ------------------------------------------------------------
    def submit(self, completions_path: Path) -> None:
        """A completions file is complete: queue it for execution (an execution error, or
        a dead execution process, stops generation here)."""
        self._poll(0)
        self._raise()
        self._send(str(completions_path))

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Around generation: a watcher thread checks every POLL_S that the execution process
        lives, and when it has ended, interrupts generation where it is (between two files
        is not soon enough: a batch can hold every file open until its end); the interruption
        comes out as the execution process's own error, or the one line of its death. Only
        in the main thread, which alone receives the interruption; elsewhere `submit` and
        `finish` still notice."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        stop = threading.Event()

        def interrupted(signum, frame) -> None:
            if not stop.is_set():
                raise Interrupted

        def watch() -> None:
            while not stop.wait(POLL_S):
                if self.process.poll() is not None:
                    if not stop.is_set():
                        _thread.interrupt_main(WATCH_SIGNAL)
                    return

        previous = signal.signal(WATCH_SIGNAL, interrupted)
        watcher = threading.Thread(target=watch, name="flora-execute-watch", daemon=True)
        watcher.start()
        try:
            yield
        except Interrupted:
            raise self.failure() from None
        finally:
            stop.set()
            watcher.join(timeout=5)
            signal.signal(WATCH_SIGNAL, previous)  # a trip still pending is then skipped

    def failure(self) -> BaseException:
        """Why the execution process ended early: its own error, else its death."""
        try:
            self._poll(0)
        except Exception:  # a message torn by the interruption: the death is what matters
            pass
        if self.error is None:
            self.error = self._died()
        return self.error

    def generation_started(self) -> None:
        self.clock.generate = (time.time(), time.time())

    def generation_done(self) -> None:
        start = self.clock.generate[0] if self.clock.generate else self.clock.start
        self.clock.generate = (start, time.time())

    def finish(self, run) -> ExecutionSummary:
        """Plan and execute the whole run (`run`: its RunDir) and wait for all of it."""
        self._poll(0)
        self._raise()
        self._send(("finish", str(run.root)))
        self._send(STOP)
        while self.summary is None and self.error is None:
            self._poll(POLL_S)
        self._end(EXIT_WAIT_S)
        self._raise()
        return self.summary

    def abort(self) -> None:
        """Generation failed: the execution process stops without running what is queued."""
        if self.process.poll() is None:
            try:
                with self.lock:
                    self.inbox.send(ABORT)
            except OSError:  # gone meanwhile: nothing to stop
                pass
        self._end(EXIT_WAIT_S)

    def report(self) -> dict:
        return self.clock.report(time.time())

    # -- the pipes ----------------------------------------------------------------------
    def _send(self, message) -> None:
        if self.error is not None:
            raise self.error
        try:
            with self.lock:
                self.inbox.send(message)
        except OSError:  # BrokenPipeError: the execution process is gone
            self._poll(0)
            if self.error is None:
                self.error = self._died()
            raise self.error from None

    def _poll(self, wait: float) -> None:
        """Take the execution process's answer if there is one; note its death if it died."""
        if self.error is not None or self.summary is not None:
            return
        try:
            ready = self.outbox.poll(wait)
            if not ready and self.process.poll() is not None:
                ready = self.outbox.poll(0)  # what it wrote before it ended
            if not ready:
                if self.process.poll() is not None:
                    self.error = self._died()
                return
            kind, payload, busy = self.outbox.recv()
        except (EOFError, OSError):
            self.error = self._died()
            return
        self.clock.busy = busy
        if kind == "error":
            self.error = payload
        else:
            self.summary = payload

    def _raise(self) -> None:
        if self.error is not None:
            self._end(5)
            raise self.error

    def _died(self) -> UserError:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        how = ("still running, its pipe closed" if code is None else
               f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}")
        return UserError(f"the execution process (pid {self.process.pid}) died ({how}); every finished "
                         "completions and results file is kept: run the same command again to resume")

    def _end(self, wait: float) -> None:
        """Wait up to `wait` s for the execution process to end, then end it (its containers
        go with it: their sockets close)."""
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        for end in (self.inbox, self.outbox):
            end.close()


def start_process() -> tuple[subprocess.Popen, Connection, Connection]:
    """`python -m harness.execute.overlap INBOX_FD OUTBOX_FD`, and this side's pipe ends."""
    inbox_r, inbox_w = os.pipe()
    outbox_r, outbox_w = os.pipe()
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the harness package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    try:
        command = [sys.executable, "-m", "harness.execute.overlap", str(inbox_r), str(outbox_w)]
        process = subprocess.Popen(command, pass_fds=(inbox_r, outbox_w), stdin=subprocess.DEVNULL, env=env)
    finally:
        os.close(inbox_r)
        os.close(outbox_w)
    return process, Connection(inbox_w, readable=False), Connection(outbox_r, writable=False)


# ---------------------------------------------------------------------------------------
# The execution process
# ---------------------------------------------------------------------------------------
def main(argv: list[str]) -> None:
    inbox = Connection(int(argv[0]), writable=False)
    outbox = Connection(int(argv[1]), readable=False)
    _, spec, langs = inbox.recv()
    serve(spec, langs, reader(inbox), outbox)


def reader(inbox: Connection) -> queue.Queue:
    """The pipe read continuously into a queue (so the generation side never waits on a full
    pipe); the pipe closing (the main process died) reads as ABORT."""
    messages: queue.Queue = queue.Queue()

    def read() -> None:
        while True:
            try:
                messages.put(inbox.recv())
            except (EOFError, OSError):
                messages.put(ABORT)
                return

    threading.Thread(target=read, name="flora-execute-inbox", daemon=True).start()
    return messages


def serve(spec: dict, langs: list[str], inbox: queue.Queue, outbox: Connection) -> None:
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
                consumer.execute([Path(p) for p in batch if isinstance(p, str) and p != STOP])
                for message in batch:
                    if isinstance(message, tuple) and message[0] == "finish":
                        consumer.finish(Path(message[1]))
                if STOP in batch:
                    consumer.confirm_held()  # generation is done: confirm timeouts alone
                    break
            consumer.close()
            answer(outbox, ("done", summary_of(executor, consumer.planned), consumer.busy))
    except BaseException as exc:
        answer(outbox, ("error", _picklable(exc), consumer.busy if consumer else []))


def answer(outbox: Connection, message: tuple) -> None:
    """Send the answer; a main process that is gone (its pipe closed) needs none."""
    try:
        outbox.send(message)
    except OSError:
        pass


@dataclass
class Consumer:
    """Executes completions files into results files (each once, as the plan says), with one
    progress bar. Programs that timed out are confirmed only in `confirm_held`, once
    generation is done (a confirmation runs alone): until then their results files are held."""

    executor: object
    seen: set[Path] = field(default_factory=set)
    holding: list = field(default_factory=list)  # LanguageBatches with programs to confirm
    busy: list[tuple[float, float]] = field(default_factory=list)
    planned: dict[str, int] = field(default_factory=dict)  # the plans' counts, summed
    bar: object = None

    def execute(self, paths: list[Path]) -> None:
        from harness.execute.inputs import task_of
        from harness.files import read_completions, results_path_for

        fresh = [path for path in dict.fromkeys(paths) if path not in self.seen]
        self.seen.update(fresh)
        self.run_plan([task_of(read_completions(path), results_path_for(path)) for path in fresh])

    def finish(self, root: Path) -> None:
        """The whole run: every completions file not seen yet, and results whose
        completions file is gone."""
        from harness.execute.inputs import run_tasks
        from harness.execute.plan import orphan_results

        tasks = [task for task in run_tasks(root, out_dir=None) if _completions_of(task.out) not in self.seen]
        self.seen.update(_completions_of(task.out) for task in tasks)
        self.run_plan(tasks, orphan_results(root))

    def run_plan(self, tasks: list, orphans: list[Path] = ()) -> None:
        from harness.execute.languages import load_language
        from harness.execute.plan import plan_execution, remove_orphans

        if not tasks and not orphans:
            return
        plan = plan_execution(tasks, self.executor, orphans=orphans)
        for key, count in plan.summary().items():
            self.planned[key] = self.planned.get(key, 0) + count
        remove_orphans(plan)
        if not plan.todo:
            return
        started = time.time()
        bar = self._bar()
        if note := plan.note():
            bar.write(note, file=sys.stderr)
        by_lang: dict[str, list] = {}
        for task in plan.todo:
            by_lang.setdefault(task.lang, []).append(task)
        bar.total += sum(len(t.completions.completions) for t in plan.todo)
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


if __name__ == "__main__":
    main(sys.argv[1:])

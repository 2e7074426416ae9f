"""Executors run stage Work items: `local` (in this process, one at a time), `processes` (N local
worker processes) and, from plugins, `ray` or anything registered through `register_executors`.

The contract: the driver submits up to `capacity` items, then calls `collect(on_event, timeout)`,
which waits for finished items and returns their Outcomes; events that running stages emit
(answers bought, job ids) reach `on_event` during `collect`, before the Outcome of their stage.
`cancel()` stops everything in flight (Ctrl-C); `close()` frees the workers. Executors never
touch the store: the driver does.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable, ClassVar

from .. import plugins
from ..api import W2SError
from ..validation import did_you_mean
from .stages import execute
from .work import Event, Outcome, Work


@dataclass
class ExecutorOptions:
    """How to run: from `--executor/--jobs/--ray-address` or the study's `[executor]` table."""

    name: str = "local"
    jobs: int | None = None  # stages at once
    threads: int | None = None  # torch threads per stage (same threads, bit-identical numbers on any executor)
    ray_address: str | None = None
    artifact_root: str | None = None  # checkpoints; every worker must reach it
    gpus_per_stage: float | None = None


class Executor:
    """Runs Work items and hands back Outcomes (see the module docstring)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, options: ExecutorOptions):
        self.options = options

    @property
    def capacity(self) -> int:
        return 1

    @classmethod
    def stages_at_once(cls, options: ExecutorOptions) -> int | None:
        """How many stages it will run at once, known before it starts (the dry run's wall time);
        None when only a connection tells (a remote cluster's size)."""
        return 1

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        return self.name

    def submit(self, work: Work) -> None:
        raise NotImplementedError

    def collect(self, on_event: Callable[[Event], None], timeout: float) -> list[Outcome]:
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop the work in flight."""

    def close(self) -> None:
        """Release workers and connections."""


class LocalExecutor(Executor):
    """In this process, one stage at a time, in plan order (the default)."""

    name = "local"
    description = "in this process, one stage at a time"

    def __init__(self, options: ExecutorOptions):
        super().__init__(options)
        self._queue: deque[Work] = deque()

    def submit(self, work: Work) -> None:
        work.threads = self.options.threads  # None: torch's default, every core
        self._queue.append(work)

    def collect(self, on_event, timeout: float) -> list[Outcome]:
        return [execute(self._queue.popleft(), on_event)] if self._queue else []


_events = None  # a worker process's end of the event queue


def _start_worker(events) -> None:
    """Worker processes: Ctrl-C is the driver's to handle; progress bars would interleave."""
    global _events
    _events = events
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["W2S_PROGRESS"] = "0"


def _run_in_worker(work: Work) -> Outcome:
    return execute(work, _events.put)


class ProcessExecutor(Executor):
    """N local worker processes (spawned), each stage with cores / N torch threads."""

    name = "processes"
    description = "N local worker processes"

    def __init__(self, options: ExecutorOptions):
        super().__init__(options)
        self.jobs = self.stages_at_once(options)
        self.threads = options.threads or max(1, (os.cpu_count() or 1) // self.jobs)
        self._context = multiprocessing.get_context("spawn")
        self._events = self._context.SimpleQueue()  # writes reach the pipe before a worker returns its outcome
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict = {}

    @property
    def capacity(self) -> int:
        return self.jobs

    @classmethod
    def stages_at_once(cls, options: ExecutorOptions) -> int:
        return options.jobs or os.cpu_count() or 1

    def describe(self) -> str:
        return f"processes ({self.jobs} workers, {self.threads} torch thread(s) each)"

    def submit(self, work: Work) -> None:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=self._context, initializer=_start_worker, initargs=(self._events,))
        work.threads = self.threads
        self._futures[self._pool.submit(_run_in_worker, work)] = work.key

    def collect(self, on_event, timeout: float) -> list[Outcome]:
        done, _ = wait(list(self._futures), timeout=timeout, return_when=FIRST_COMPLETED) if self._futures else (set(), None)
        self._drain(on_event)
        outcomes, broken = [], False
        for future in done:
            key = self._futures.pop(future)
            try:
                outcomes.append(future.result())
            except BrokenProcessPool:
                broken = True
                outcomes.append(Outcome(key, None, "the worker process died (killed, or out of memory); rerun to retry the stage"))
        code = self._dead_worker()
        if broken or code is not None:  # a dead worker breaks the pool: every stage in it ends; the next submit starts a new pool
            why = "another worker died" if code is None else f"a worker process died (exit code {code}; -9 is a kill, e.g. out of memory)"
            for future, key in self._futures.items():
                outcomes.append(Outcome(key, None, f"the worker pool broke when {why}; rerun to retry the stage"))
            self.cancel()
        return outcomes

    def _dead_worker(self) -> int | None:
        """The exit code of a pool worker that has died, if one has. The pool's own check can miss a death: a worker
        OOM-killed mid-fit stayed a zombie for minutes while the pool waited on it (its sentinel pipe was still held
        open elsewhere), so the driver polls the processes too."""
        for process in list((getattr(self._pool, "_processes", None) or {}).values()):
            if process.exitcode is not None:
                return process.exitcode
        return None

    def _drain(self, on_event) -> None:
        while not self._events.empty():
            on_event(self._events.get())

    def cancel(self) -> None:
        if self._pool is not None:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.terminate()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._futures.clear()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


BUILT_IN: dict[str, type[Executor]] = {"local": LocalExecutor, "processes": ProcessExecutor}


def make_executor(options: ExecutorOptions) -> Executor:
    """The named executor (built in, or from a plugin), or a one-line error with did-you-mean."""
    return executor_class(options)(options)


def executor_class(options: ExecutorOptions) -> type[Executor]:
    """The class `make_executor` would build, without building it (nothing is started or connected)."""
    if options.jobs is not None and options.jobs < 1:
        raise W2SError(f"--jobs {options.jobs}: run at least one stage at a time; use --jobs 1 or more")
    if options.threads is not None and options.threads < 1:
        raise W2SError(f"--threads {options.threads}: give each stage at least one thread; use --threads 1 or more")
    available = {**BUILT_IN, **{name: entry.obj for name, entry in plugins.executors().items()}}
    if options.name not in available:
        hint = did_you_mean(options.name, available)
        raise W2SError(f"executor {options.name!r}: unknown{hint}; valid: {', '.join(sorted(available))}")
    return available[options.name]

"""What travels between the driver and a worker: Work out, Events and an Outcome back.

A Work item is self-contained: the stage's JSON spec, its inputs already resolved by the driver,
what earlier attempts left (answers bought, job ids), and where to write artifacts. A worker
never opens the store; `WorkerContext` is the StageContext it gives the model, and turns durable
progress into events that the driver persists as they arrive.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ..api import Resources, Validation
from ..train import progress_disabled


@dataclass
class StageResult:
    """What a stage returns to the driver; only the driver writes the store."""

    predictions: dict = field(default_factory=dict)  # split -> (ids, probs, labels)
    metrics: dict = field(default_factory=dict)  # (split, name) -> value
    curves: list = field(default_factory=list)  # (step, name, value)
    artifacts: dict = field(default_factory=dict)  # kind -> path
    output: dict = field(default_factory=dict)  # small JSON (flags, notes)
    tables: dict = field(default_factory=dict)  # table -> extra rows stored with the stage (eval_prompts)


@dataclass
class Work:
    """One stage, ready to run in any process on any node."""

    key: str
    kind: str  # fit | predict | evaluate | eval
    title: str
    spec: dict
    inputs: dict  # resolved: examples, arrays, predictions, checkpoint paths
    artifact_dir: str
    resume: dict = field(default_factory=dict)  # {"partial": {split: {id: probs}}, "jobs": {provider: job}}
    resources: Resources = field(default_factory=Resources)
    threads: int | None = None  # torch threads for this stage; None keeps the process default


@dataclass
class Event:
    """Durable progress from a running stage: started, partial (one answer), job (a remote job id), message."""

    key: str
    kind: str
    data: dict


@dataclass
class Outcome:
    """How a Work item ended: its result, or a one-line error plus the traceback."""

    key: str
    result: StageResult | None
    error: str | None = None
    detail: str | None = None
    started: float = 0.0  # unix time, measured in the worker
    finished: float = 0.0
    worker: dict = field(default_factory=dict)  # host, pid

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def worker_identity() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


class WorkerContext:
    """The StageContext of a running stage: logs are returned with the result, durable progress is emitted."""

    def __init__(self, work: Work, emit: Callable[[Event], None]):
        self.stage_key = work.key
        self.seed = work.spec.get("seed") or 0
        self.artifact_dir = Path(work.artifact_dir)
        self.split: str | None = work.spec.get("split")
        self.validation: Validation | None = None
        self.output: dict = {}
        self.curves: list[tuple[int, str, float]] = []
        self.metrics: dict = {}
        self._emit = emit
        self._partial = {split: dict(rows) for split, rows in work.resume.get("partial", {}).items()}
        self._jobs = dict(work.resume.get("jobs", {}))

    def log_curve(self, step: int, name: str, value: float) -> None:
        self.curves.append((int(step), name, float(value)))

    def log_metric(self, split: str, name: str, value: float) -> None:
        self.metrics[(split, name)] = float(value)

    def echo(self, message: str) -> None:
        self._emit(Event(self.stage_key, "message", {"text": message}))

    def partial_predictions(self, split: str) -> dict[str, list[float]]:
        return dict(self._partial.get(split, {}))

    def save_partial_prediction(self, split: str, example_id: str, probs) -> None:
        probs = [float(p) for p in probs]
        self._partial.setdefault(split, {})[example_id] = probs
        self._emit(Event(self.stage_key, "partial", {"split": split, "example_id": example_id, "probs": probs}))

    def find_job(self, provider: str) -> dict | None:
        return self._jobs.get(provider)

    def remember_job(self, provider: str, job_id: str, info: dict) -> None:
        self._jobs[provider] = {"job_id": job_id, "status": info.get("status"), "info": info}
        self._emit(Event(self.stage_key, "job", {"provider": provider, "job_id": job_id, "info": info}))

    def progress(self, iterable, total: int | None = None, desc: str = ""):
        return tqdm(iterable, total=total, desc=desc, leave=False, disable=progress_disabled())

"""One run's walk over a study's DAG: every stage whose deps are done is claimed and submitted, up to
the executor's capacity; a stage another run holds is waited for; every outcome is recorded."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from ..api import Resources, W2SError
from ..planning.stage import CheckpointOf, PredictionsOf, Stage
from ..storing.claims import Claims, Heartbeat, is_live
from ..storing.store import Store
from .executors import Executor
from .work import Event, Outcome, Work

POLL_SECONDS = 0.5  # how often a stage held by another run is checked


class Schedule:
    def __init__(self, store: Store, study_id: str, stages: list[Stage], executor: Executor, claims: Claims,
                 heartbeat: Heartbeat, artifact_root: Path, echo: Callable[[str], None]):
        self.store, self.study_id, self.executor, self.claims = store, study_id, executor, claims
        self.heartbeat, self.artifact_root, self.echo = heartbeat, artifact_root, echo
        self.index = {stage.key: i for i, stage in enumerate(stages, 1)}
        self.total = len(stages)
        self.pending: list[Stage] = list(stages)
        self.running: dict[str, tuple[Stage, str]] = {}  # key -> (stage, attempt id)
        self.waiting: dict[str, Stage] = {}  # held by another run
        self.state: dict[str, str] = {}  # key -> done | failed

    def run(self) -> set[str]:
        """Run until every stage is done, failed or skipped; returns the keys that did not finish."""
        try:
            while self.pending or self.running or self.waiting:
                self.advance()
                outcomes = self.executor.collect(self.on_event, timeout=0.2) if self.running else []
                for outcome in outcomes:
                    self.record(outcome)
                if self.waiting:
                    self.poll_waiting()
                    if not self.running and not outcomes:
                        time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            self.executor.cancel()
            for key, (stage, attempt) in self.running.items():
                self.claims.fail(key, attempt, "interrupted (Ctrl-C or SIGTERM)", None, status="interrupted")
            raise
        return {key for key, state in self.state.items() if state == "failed"}

    def prefix(self, stage: Stage) -> str:
        return f"[{self.index[stage.key]}/{self.total}] {stage.title}"

    def advance(self) -> None:
        """Skip what failed upstream, report what is cached, and claim ready stages while there is room."""
        for stage in list(self.pending):
            deps = [d for d in stage.deps if d in self.index]
            if any(self.state.get(d) == "failed" for d in deps):
                self.pending.remove(stage)
                self.state[stage.key] = "failed"
                self.echo(f"{self.prefix(stage)}: skipped (an upstream stage failed)")
            elif all(self.state.get(d) == "done" for d in deps):
                if self.store.stage_status(stage.key) == "done":
                    self.pending.remove(stage)
                    self.done(stage, "cached")
                elif len(self.running) < self.executor.capacity:
                    self.pending.remove(stage)
                    self.claim(stage)

    def claim(self, stage: Stage) -> None:
        claim = self.claims.claim(stage.key, self.study_id, stage.row)
        if claim.status == "done":
            self.done(stage, "cached")
        elif claim.status == "live":
            self.waiting[stage.key] = stage
            self.echo(f"{self.prefix(stage)}: waiting for {stage.title} (running in pid {claim.owner['pid']} on {claim.owner['host']})")
        else:
            try:
                work = self.work(stage)
            except W2SError as exc:
                self.claims.fail(stage.key, claim.attempt, str(exc), None)
                self.state[stage.key] = "failed"
                self.echo(f"{self.prefix(stage)}: FAILED: {exc}")
                return
            self.running[stage.key] = (stage, claim.attempt)
            self.heartbeat.keys.add(stage.key)
            self.echo(f"{self.prefix(stage)}: running")
            self.executor.submit(work)

    def work(self, stage: Stage) -> Work:
        """The self-contained Work item: inputs resolved from the store, plus what earlier attempts left."""
        inputs = {name: self.resolve(value) for name, value in stage.inputs.items()}
        resume = {"partial": self.store.all_partial_predictions(stage.key), "jobs": self.store.jobs(stage.key)}
        resources = stage.model.resources(stage.kind) if stage.model is not None else Resources()
        return Work(stage.key, stage.kind, stage.title, stage.spec, inputs, str(self.artifact_root / stage.key), resume, resources)

    def resolve(self, value):
        if isinstance(value, PredictionsOf):
            rows = self.store.predictions(value.stage, value.split)
            if not rows:
                raise W2SError(f"stage {value.stage} has no stored {value.split} predictions; rerun to recompute it")
            return rows
        if isinstance(value, CheckpointOf):
            path = self.store.artifact(value.stage)
            if path is None or not path.exists():
                raise W2SError(f"the checkpoint of stage {value.stage} is missing ({path}); delete that stage's row "
                               f"(sqlite3 {self.store.path} \"DELETE FROM stages WHERE key = '{value.stage}'\") and rerun")
            return str(path)
        return value

    def on_event(self, event: Event) -> None:
        """Persist a running stage's durable progress at once (late events of a recorded stage are dropped)."""
        if event.key not in self.running:
            return
        data = event.data
        if event.kind == "started":
            self.claims.started(event.key, self.running[event.key][1], data, time.time())
        elif event.kind == "partial":
            self.store.save_partial_prediction(event.key, data["split"], data["example_id"], data["probs"])
        elif event.kind == "job":
            self.store.remember_job(event.key, data["provider"], data["job_id"], data["info"])
        elif event.kind == "message":
            self.echo(f"  {data['text']}")

    def record(self, outcome: Outcome) -> None:
        stage, attempt = self.running.pop(outcome.key)
        self.heartbeat.keys.discard(outcome.key)
        if outcome.error is not None:
            host = outcome.worker.get("host")
            where = f" (on worker host {host})" if host and host != self.claims.owner.host else ""
            self.claims.fail(outcome.key, attempt, f"{outcome.error}{where}\n{outcome.detail or ''}".rstrip(), outcome.seconds or None)
            self.state[outcome.key] = "failed"
            self.echo(f"{self.prefix(stage)}: FAILED: {outcome.error}{where}")
        elif self.claims.finish(outcome.key, attempt, outcome):
            self.done(stage, f"done in {outcome.seconds:.1f}s")
        else:  # our claim went stale and another run took the stage over: its result stands
            self.waiting[outcome.key] = stage
            self.echo(f"{self.prefix(stage)}: finished, but another run took the stage over meanwhile; using that run's result")

    def poll_waiting(self) -> None:
        for key, stage in list(self.waiting.items()):
            row = self.store.stage(key) or {}
            if row.get("status") == "done":
                del self.waiting[key]
                self.done(stage, "done by another run")
            elif not is_live(json.loads(row.get("owner_json") or "null"), row.get("heartbeat"), self.claims.owner):
                del self.waiting[key]
                self.pending.insert(0, stage)  # the other run is gone or gave up: claim it ourselves

    def done(self, stage: Stage, how: str) -> None:
        self.state[stage.key] = "done"
        self.echo(f"{self.prefix(stage)}: {how}")

"""The driver: plans a study, records it, and walks its DAG on an executor.

    stages, links = plan_study(study)          # planning/: the protocol as stage descriptions
    confirm(stages)                            # e.g. paid API work: tokens and cost, asked first
    record the study, its splits and links     # the store: only the driver writes it
    Schedule(...).run()                        # claim, submit, wait, record (schedule.py)
    instant.record(...)                        # every stage done: a rerun is answered from the store (instant.py)

Done stages are skipped, so a crash or Ctrl-C loses only the stages in flight and a rerun resumes;
several drivers may share one store (storing/claims.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from ..api import W2SError
from ..planning.legacy import adopt_legacy_stages, adoptable
from ..planning.protocol import plan_study
from ..planning.stage import Stage, pending_models
from ..planning.study import Study
from ..storing.claims import Claims, Heartbeat, Owner
from ..storing.store import Store
from .executors import ExecutorOptions, make_executor
from . import instant
from .instant import versions
from .schedule import Schedule


def executor_options(study: Study, name: str | None = None, jobs: int | None = None, ray_address: str | None = None,
                     threads: int | None = None, artifact_root: str | None = None) -> ExecutorOptions:
    """The study's `[executor]` table, overridden by command-line flags."""
    table = study.spec.executor
    options = ExecutorOptions(**(table.model_dump() if table else {}))
    if table and table.artifact_root and study.path and not Path(table.artifact_root).expanduser().is_absolute():
        options.artifact_root = str((study.path.parent / table.artifact_root).resolve())
    if artifact_root is not None:
        artifact_root = str(Path(artifact_root).expanduser().resolve())
    for field, value in (("name", name), ("jobs", jobs), ("ray_address", ray_address), ("threads", threads), ("artifact_root", artifact_root)):
        if value is not None:
            setattr(options, field, value)
    return options


class Driver:
    """Runs studies on one store through one executor; the only process that writes the store."""

    def __init__(self, store: Store, options: ExecutorOptions | None = None,
                 echo: Callable[[str], None] = lambda s: click.echo(s, err=True)):
        self.store = store
        self.options = options or ExecutorOptions()
        self.echo = echo
        self._splits: list[tuple] = []
        self._pools: list = []  # per task: (train, test) examples

    def plan(self, study: Study) -> tuple[list[Stage], list]:
        """The stages and their study links; nothing is written to the store."""
        stages, links, self._splits, self._pools = plan_study(study)
        return stages, links

    def check_models(self, stages: list[Stage], status: dict) -> None:
        """Each model with pending stages can be loaded here (Model.check_available), before any stage runs."""
        for model in pending_models(stages, status):
            model.check_available()

    def adopt_legacy(self, study: Study, links: list) -> int:
        """Rename the done stages an older store holds under scheme-1 keys (planning/legacy.py); returns how many."""
        renamed = adopt_legacy_stages(self.store, study, links, self._pools)
        if renamed:
            self.echo(f"rekeyed {renamed} stage(s) stored under older keys (absolute data paths, every option); they stay cached")
        return renamed

    def status(self, stages: list[Stage], study: Study | None = None, links: list | None = None) -> dict[str, str | None]:
        """Each stage's stored status; with the study and links, a stage done under its older key counts as done."""
        older = adoptable(self.store, study, links, self._pools) if study is not None else {}
        return {s.key: "done" if s.key in older else self.store.stage_status(s.key) for s in stages}

    def run(self, study: Study, confirm: Callable[[list[Stage], dict], None] | None = None) -> str:
        """Run (or resume) a study; returns its id. Raises KeyboardInterrupt after recording it.

        `confirm(stages, status)` runs after planning and before any stage: it may raise to stop.
        """
        before = instant.snapshot(study)  # data files and code before planning reads them: a file changed meanwhile is not recorded
        stages, links = self.plan(study)
        executor = make_executor(self.options)  # a bad executor choice fails before anything is stored
        self.adopt_legacy(study, links)  # before confirm: a paid stage stored under an older key is not paid again
        status = self.status(stages)
        self.check_models(stages, status)
        if confirm is not None:
            confirm(stages, status)
        study_id = self.record(study, links)
        owner = Owner.me()
        artifact_root = Path(self.options.artifact_root).expanduser() if self.options.artifact_root else self.store.artifacts_root
        try:
            with executor, Heartbeat(self.store.path, owner) as heartbeat:
                if executor.name != "local":
                    self.echo(f"executor: {executor.describe()}")
                claims = Claims(self.store, owner, executor.name)
                failed = Schedule(self.store, study_id, stages, executor, claims, heartbeat, artifact_root, self.echo).run()
        except KeyboardInterrupt:
            self.store.set_study_status(study_id, "interrupted")
            raise
        if not failed:
            instant.record(self.store, study_id, before, [s.title for s in stages], [s.key for s in stages])  # a rerun is answered from the store
        self.store.set_study_status(study_id, "failed" if failed else "done")
        if failed:
            raise W2SError(f"{len(failed)} stage(s) failed or were skipped; see `w2s study show {study_id}`. Fix the cause and rerun to resume")
        return study_id

    def record(self, study: Study, links: list) -> str:
        """Store the study, its splits and its links to the planned stages (dropping links the plan no longer has)."""
        for split in self._splits:
            self.store.record_split(*split)
        study_id = self.store.upsert_study(
            study.name, study.toml_text, study.spec_json(), study.hash(), str(study.path) if study.path else None, versions())
        self.store.unlink_stale(study_id, {(stage.key, role) for stage, role, _ in links})
        for stage, role, labels in links:
            self.store.link_stage(study_id, stage.key, role, {k: labels.get(k) for k in ("task", "weak", "strong", "loss", "seed")})
        return study_id

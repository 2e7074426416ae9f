"""The weak-to-strong protocol as a DAG of content-addressed stages; done stages are skipped.

For each (weak W, strong S, loss, seed), with seeded disjoint splits A (weak_train),
B (transfer) and T (test):

    weak         = fit(W, A, ground truth)      weak_labels = predict(weak, B)
    student_loss = fit(S, B, weak_labels, loss) ceiling     = fit(S, B, ground truth)
    *_test       = predict(model, T)            evaluate    = PGR, CIs, agreement, flags

Optional, from the study: a grid of weak x strong pairs, a strong baseline (S before
fine-tuning), an oracle student with ground-truth early stopping on V (carved from B) and
bootstrapping chains. Their rules live in methods.py.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import click
import numpy as np

from . import __version__, plugins
from .api import Example, Loss, Model, Task, Trained, W2SError, fingerprint
from .evals import plan_evals, prompt_tables
from .methods import Validation, baseline_model, grid_pairs, plan_chain
from .metrics import agreement, bootstrap_accuracy, bootstrap_pgr, choice_accuracy, classification_metrics, pgr, pgr_flags
from .store import Store
from .study import Study


@dataclass
class StageResult:
    """What a stage returns to the driver; only the driver writes the store."""

    predictions: dict = field(default_factory=dict)  # split -> (ids, probs, labels)
    metrics: dict = field(default_factory=dict)  # (split, name) -> value
    curves: list = field(default_factory=list)  # (step, name, value)
    artifacts: dict = field(default_factory=dict)  # kind -> path
    output: dict = field(default_factory=dict)  # small JSON (flags, notes)
    trained: Trained | None = None  # kept in memory for downstream stages, never stored
    tables: dict = field(default_factory=dict)  # table -> extra rows stored with the stage (eval_prompts)


@dataclass
class Stage:
    key: str
    kind: str  # fit | predict | evaluate
    role: str  # weak | weak_labels | student | ceiling | weak_test | student_test | ceiling_test | evaluate
    title: str
    labels: dict  # task, weak, strong, loss, seed: how the stage appears in results
    row: dict  # descriptive columns of the stages table
    deps: list[str]
    run: Callable[["RunContext"], StageResult]
    model: Model | None = None
    task: Task | None = None
    split: str | None = None  # predict stages: the split they label
    examples: list = field(default_factory=list, repr=False)  # the examples it fits on / labels (cost estimates)


@dataclass
class Split:
    name: str
    key: str
    examples: list[Example]

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    @property
    def labels(self) -> np.ndarray:
        return np.array([e.label for e in self.examples])


class RunContext:
    """The StageContext a running stage sees."""

    def __init__(self, stage: Stage, seed: int, store: Store, engine: "Engine"):
        self.stage_key = stage.key
        self.seed = seed
        self.artifact_dir = store.artifacts_root / stage.key
        self.curves: list[tuple[int, str, float]] = []
        self.validation: Validation | None = None  # set for oracle (ground-truth early stopping) fits
        self.split = stage.split  # predict stages: the split name (keys partial predictions)
        self.metrics: dict = {}  # (split, name) -> value, logged by the model
        self.output: dict = {}  # small JSON notes from the model (e.g. how soft labels were used)
        self._store = store
        self.engine = engine

    def log_curve(self, step: int, name: str, value: float) -> None:
        self.curves.append((int(step), name, float(value)))

    def log_metric(self, split: str, name: str, value: float) -> None:
        """Record a stage metric (e.g. how many answers lacked a label token)."""
        self.metrics[(split, name)] = float(value)

    def partial_predictions(self, split: str) -> dict[str, list[float]]:
        return self._store.partial_predictions(self.stage_key, split)

    def save_partial_prediction(self, split: str, example_id: str, probs) -> None:
        self._store.save_partial_prediction(self.stage_key, split, example_id, probs)

    def find_job(self, provider: str) -> dict | None:
        return self._store.find_job(self.stage_key, provider)

    def remember_job(self, provider: str, job_id: str, info: dict) -> None:
        self._store.remember_job(self.stage_key, provider, job_id, info)

    def progress(self, iterable, total: int | None = None, desc: str = ""):
        from tqdm.auto import tqdm

        from .train import progress_disabled

        return tqdm(iterable, total=total, desc=desc, leave=False, disable=progress_disabled())


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(labels), k), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def has_own_choices(task: Task, examples: list[Example]) -> bool:
    """True when each example carries its own choice list (e.g. legal chess moves): predictions are ragged."""
    return task.kind != "binary" and bool(examples) and examples[0].choices is not None


def ground_truth_targets(task: Task, examples: list[Example]):
    """One-hot targets: an (n, num_labels) array, or one array per example over its own choices."""
    if has_own_choices(task, examples):
        return [one_hot(np.array([e.label]), len(e.choices))[0] for e in examples]
    return one_hot(np.array([e.label for e in examples]), task.num_labels)


def as_targets(task: Task, examples: list[Example], rows):
    """Predictions or stored probabilities as fit targets: an (n, K) array, or a list of 1-D arrays."""
    if has_own_choices(task, examples):
        return [np.asarray(r, dtype=np.float32) for r in rows]
    return np.asarray(rows, dtype=np.float32)


def prediction_metrics(task: Task, examples: list[Example], probs, labels: np.ndarray) -> dict[str, float]:
    """classification_metrics, or for per-example choices accuracy plus the task's own `metrics` hook."""
    if not has_own_choices(task, examples):
        return classification_metrics(probs, labels)
    out = choice_accuracy(probs, labels)
    hook = getattr(task, "metrics", None)
    return {**out, **(hook(examples, probs) if callable(hook) else {})}


def data_fingerprint(examples: list[Example]) -> str:
    return fingerprint([[e.id, e.text, e.label] for e in examples])


class Protocol:
    """Builds the stage DAG of one study."""

    def __init__(self, study: Study, store: Store):
        self.study = study
        self.store = store
        self.task = study.task
        self.stages: dict[str, Stage] = {}
        self._pools: tuple[list[Example], list[Example]] | None = None
        self._data: dict | None = None
        self.split_records: dict[str, tuple] = {}  # written by Engine.run, so a dry run stores nothing
        self.ground_truth = plugins.make_loss("xent", {}, "ground-truth loss")

    # -- data ----------------------------------------------------------------
    def pools(self) -> tuple[list[Example], list[Example]]:
        if self._pools is None:
            train, test = self.task.load("train"), self.task.load("test")
            if not train or not test:
                raise W2SError(f"task {self.task.name}: the {'train' if not train else 'test'} split is empty; check task.data_dir")
            self._pools = (train, test)
        return self._pools

    def splits(self, seed: int) -> tuple[Split, Split, Split]:
        """Seeded, disjoint weak_train (A) and transfer (B) from the train pool; test (T) from test."""
        spec = self.study.spec.task
        train, test = self.pools()
        need = spec.n_weak_train + spec.n_transfer
        if need > len(train):
            raise W2SError(
                f"task.n_weak_train + task.n_transfer = {need} but {self.task.name} has only {len(train)} train examples; lower them"
            )
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(train))
        a = [train[i] for i in order[: spec.n_weak_train]]
        b = [train[i] for i in order[spec.n_weak_train : need]]
        n_test = min(spec.n_test or len(test), len(test))
        t_idx = np.sort(np.random.default_rng(seed + 10_000).permutation(len(test))[:n_test])
        t = [test[i] for i in t_idx]
        return tuple(self.split(name, examples, seed) for name, examples in (("weak_train", a), ("transfer", b), ("test", t)))

    def split(self, name: str, examples: list[Example], seed: int) -> Split:
        """A named split with a content key; its example ids are recorded in the store when the study runs."""
        if self._data is None:
            train, test = self.pools()
            self._data = {"task": self.task.spec(), "train": data_fingerprint(train), "test": data_fingerprint(test)}
        key = fingerprint({**self._data, "seed": seed, "split": name, "n": len(examples), "ids": fingerprint([e.id for e in examples])})
        self.split_records[key] = (key, self.task.name, name, seed, [e.id for e in examples])
        return Split(name, key, examples)

    def transfer_splits(self, seed: int, k: int) -> list[Split]:
        """k disjoint transfer splits after A, for chains; the first one is the usual B."""
        spec = self.study.spec.task
        train, _ = self.pools()
        need = spec.n_weak_train + k * spec.n_transfer
        if need > len(train):
            raise W2SError(
                f"task.n_transfer: a chain with {k} fresh transfer splits needs n_weak_train + {k} x n_transfer = {need} train examples, "
                f"{self.task.name} has {len(train)}; lower them or set study.chain_transfer = \"same\""
            )
        order = np.random.default_rng(seed).permutation(len(train))
        starts = [spec.n_weak_train + i * spec.n_transfer for i in range(k)]
        return [self.split("transfer" if i == 0 else f"transfer_{i + 1}", [train[j] for j in order[s : s + spec.n_transfer]], seed)
                for i, s in enumerate(starts)]

    def validation_split(self, transfer: Split, seed: int) -> tuple[Split, Split | None]:
        """With gt_early_stopping, V is the last n_val examples of B and B keeps the rest."""
        oracle = self.study.spec.gt_early_stopping
        if oracle is None:
            return transfer, None
        if oracle.n_val > len(transfer.examples) - 2:
            raise W2SError(f"gt_early_stopping.n_val = {oracle.n_val} leaves too few of the {len(transfer.examples)} transfer examples; lower it")
        examples = transfer.examples
        return self.split("transfer", examples[: -oracle.n_val], seed), self.split("validation", examples[-oracle.n_val :], seed)

    # -- stages --------------------------------------------------------------
    def add(self, stage: Stage) -> Stage:
        return self.stages.setdefault(stage.key, stage)

    def fit_stage(self, role: str, model: Model, split: Split, loss: Loss, targets: Stage | None, seed: int, labels: dict,
                  validation: Split | None = None) -> Stage:
        model.check_fit(split.examples, loss, self.task)
        spec = {
            "kind": "fit",
            "task": self.task.spec(),
            "data": split.key,
            "model": model.spec(),
            "loss": loss.spec(),
            "targets": targets.key if targets else "ground_truth",
            "seed": seed,
        }
        if validation is not None:  # oracle: checkpoint chosen by ground-truth accuracy on V
            spec["gt_early_stopping"] = {"validation": validation.key, "eval_every": self.study.spec.gt_early_stopping.eval_every}
        key = fingerprint(spec)
        source = f"{targets.labels.get('weak')} labels" if targets else "ground truth"
        title = f"fit {role} {model.label}" + (f" [{loss.name}]" if role == "student" else "") + f" on {split.name} ({source})"

        def run(rc: RunContext) -> StageResult:
            if targets is None:
                soft = ground_truth_targets(self.task, split.examples)
            else:
                stored = self.store.predictions(targets.key, targets.split or "transfer")
                soft = as_targets(self.task, split.examples, [stored[e.id] for e in split.examples])
            if validation is not None:
                rc.validation = Validation(validation.examples, validation.labels, spec["gt_early_stopping"]["eval_every"])
            trained = model.fit(split.examples, soft, loss, self.task, rc)
            path = rc.artifact_dir / "checkpoint"
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            trained.save(path)
            return StageResult(curves=rc.curves, metrics=rc.metrics, output=rc.output, artifacts={"checkpoint": path}, trained=trained)

        row = self._row("fit", role, model, loss, seed, spec, [targets.key] if targets else [])
        return self.add(Stage(key, "fit", role, title, labels, row, [targets.key] if targets else [], run, model, self.task,
                              examples=split.examples))

    def predict_stage(self, role: str, fit: Stage, split: Split, seed: int, labels: dict) -> Stage:
        spec = {"kind": "predict", "fit": fit.key, "data": split.key}
        key = fingerprint(spec)

        def run(rc: RunContext) -> StageResult:
            trained = rc.engine.trained(fit)
            probs = as_targets(self.task, split.examples, trained.predict(split.examples, self.task, rc))
            metrics = {**rc.metrics, **{(split.name, k): v for k, v in prediction_metrics(self.task, split.examples, probs, split.labels).items()}}
            return StageResult(predictions={split.name: (split.ids, probs, split.labels)}, metrics=metrics, curves=rc.curves, output=rc.output,
                               tables=prompt_tables(rc.stage_key, split.name, split.examples, self.task, fit.model))

        title = f"predict {fit.model.label} ({fit.role}{' ' + fit.labels['loss'] if fit.role == 'student' else ''}) on {split.name}"
        row = self._row("predict", role, fit.model, None, seed, spec, [fit.key])
        return self.add(Stage(key, "predict", role, title, labels, row, [fit.key], run, fit.model, self.task, split=split.name,
                              examples=split.examples))

    def evaluate_stage(self, weak_test: Stage, student_test: Stage, ceiling_test: Stage, seed: int, labels: dict,
                       role: str = "evaluate", baseline_test: Stage | None = None) -> Stage:
        spec = {"kind": "evaluate", "weak": weak_test.key, "student": student_test.key, "ceiling": ceiling_test.key, "v": 1}
        if baseline_test is not None:
            spec["baseline"] = baseline_test.key
        key = fingerprint(spec)

        def run(rc: RunContext) -> StageResult:
            return evaluate_pair(self.store, weak_test.key, student_test.key, ceiling_test.key, seed, spec.get("baseline"))

        title = f"{role.replace('_', ' ')} {labels['weak']} -> {labels['strong']} [{labels['loss']}]"
        deps = [weak_test.key, student_test.key, ceiling_test.key] + ([baseline_test.key] if baseline_test else [])
        row = {"task": self.task.name, "model": labels["strong"], "loss": labels["loss"], "seed": seed,
               "spec_json": json.dumps(spec), "upstream_json": json.dumps(deps), "kind": "evaluate", "role": role}
        return self.add(Stage(key, "evaluate", role, title, labels, row, deps, run))

    def _row(self, kind: str, role: str, model: Model, loss: Loss | None, seed: int, spec: dict, upstream: list[str]) -> dict:
        return {
            "kind": kind,
            "role": role,
            "task": self.task.name,
            "model": model.label,
            "model_json": json.dumps(model.spec()),
            "loss": loss.name if loss else None,
            "seed": seed,
            "spec_json": json.dumps(spec, default=str),
            "upstream_json": json.dumps(upstream),
        }

    # -- the protocol ----------------------------------------------------------
    def plan(self) -> list[tuple[Stage, str, dict]]:
        """Every (stage, role, labels) link of the study, in run order."""
        links: list[tuple[Stage, str, dict]] = []
        for seed in self.study.seeds:
            a, b, t = self.splits(seed)
            if self.study.chain:
                links += plan_chain(self, seed, a, t)
                continue
            b, v = self.validation_split(b, seed)
            for weak, strongs in grid_pairs(self.study.weak, self.study.strong):
                base = {"task": self.task.name, "weak": weak.label, "seed": seed}
                weak_fit = self.fit_stage("weak", weak, a, self.ground_truth, None, seed, {**base, "strong": None, "loss": None})
                weak_labels = self.predict_stage("weak_labels", weak_fit, b, seed, weak_fit.labels)
                weak_test = self.predict_stage("weak_test", weak_fit, t, seed, weak_fit.labels)
                links += [(weak_fit, "weak", weak_fit.labels), (weak_labels, "weak_labels", weak_fit.labels), (weak_test, "weak_test", weak_fit.labels)]
                for strong in strongs:
                    links += self.pair(weak_labels, weak_test, strong, (a, b, v, t), seed, {**base, "strong": strong.label})
        return plan_evals(self, links)  # [[eval]]: cross-task stages after each fit (core/evals.py)

    def pair(self, weak_labels: Stage, weak_test: Stage, strong: Model, splits: tuple, seed: int, pair: dict) -> list[tuple[Stage, str, dict]]:
        """Ceiling, optional baseline, and per loss a student (plus its oracle twin) for one weak/strong pair."""
        a, b, v, t = splits
        ceiling = self.fit_stage("ceiling", strong, b, self.ground_truth, None, seed, {**pair, "loss": None})
        ceiling_test = self.predict_stage("ceiling_test", ceiling, t, seed, ceiling.labels)
        links = [(ceiling, "ceiling", ceiling.labels), (ceiling_test, "ceiling_test", ceiling.labels)]
        baseline_test = None
        header = self.study.spec.study
        probe = baseline_model(strong, header.baseline, header.baseline_k_shot)
        if probe is not None:  # strong before fine-tuning (k-shot prompt or linear probe), fit on A's ground truth
            baseline = self.fit_stage("baseline", probe, a, self.ground_truth, None, seed, {**pair, "loss": None})
            baseline_test = self.predict_stage("baseline_test", baseline, t, seed, baseline.labels)
            links += [(baseline, "baseline", baseline.labels), (baseline_test, "baseline_test", baseline.labels)]
        for loss in self.study.losses:
            labels = {**pair, "loss": loss.name}
            student = self.fit_stage("student", strong, b, loss, weak_labels, seed, labels)
            student_test = self.predict_stage("student_test", student, t, seed, labels)
            evaluate = self.evaluate_stage(weak_test, student_test, ceiling_test, seed, labels, baseline_test=baseline_test)
            links += [(student, "student", labels), (student_test, "student_test", labels), (evaluate, "evaluate", labels)]
            if v is not None and "early_stopping" in strong.capabilities:  # oracle diagnostic, never the headline PGR
                oracle = self.fit_stage("student_oracle", strong, b, loss, weak_labels, seed, labels, validation=v)
                oracle_test = self.predict_stage("student_oracle_test", oracle, t, seed, labels)
                oracle_eval = self.evaluate_stage(weak_test, oracle_test, ceiling_test, seed, labels, role="oracle_evaluate")
                links += [(oracle, "student_oracle", labels), (oracle_test, "student_oracle_test", labels), (oracle_eval, "oracle_evaluate", labels)]
        return links


def evaluate_pair(store: Store, weak_key: str, student_key: str, ceiling_key: str, seed: int, baseline_key: str | None = None) -> StageResult:
    """PGR with a paired bootstrap CI over test examples, agreement and sanity flags."""
    keys = (("weak", weak_key), ("student", student_key), ("ceiling", ceiling_key)) + ((("baseline", baseline_key),) if baseline_key else ())
    preds = {name: _test_predictions(store, key) for name, key in keys}
    ids = sorted(preds["weak"])
    labels = np.array([preds["weak"][i][1] for i in ids])
    pred = {name: np.array([preds[name][i][0] for i in ids]) for name in preds}
    correct = {name: (pred[name] == labels) for name in pred}
    acc = {name: float(correct[name].mean()) for name in correct}
    low, high = bootstrap_pgr(correct["weak"], correct["student"], correct["ceiling"], seed=seed)
    metrics = {("test", f"{name}_acc"): acc[name] for name in acc}
    for name in acc:
        lo, hi = bootstrap_accuracy(correct[name], seed=seed)
        metrics[("test", f"{name}_acc_ci_low")], metrics[("test", f"{name}_acc_ci_high")] = lo, hi
    metrics[("test", "pgr")] = pgr(acc["weak"], acc["student"], acc["ceiling"])
    metrics[("test", "pgr_ci_low")], metrics[("test", "pgr_ci_high")] = low, high
    metrics[("test", "n_test")] = float(len(ids))
    metrics.update({("test", k): v for k, v in agreement(pred["student"], pred["weak"], labels).items()})
    metrics = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in metrics.items()}
    return StageResult(metrics=metrics, output={"flags": pgr_flags(acc["weak"], acc["ceiling"], acc.get("baseline"))})


def _test_predictions(store: Store, key: str) -> dict[str, tuple[int, int]]:
    rows = store.db.query("SELECT example_id, pred, label FROM predictions WHERE stage_key = ? AND split = 'test'", [key])
    return {r["example_id"]: (r["pred"], r["label"]) for r in rows}


def versions() -> dict:
    """Versions that can change a result: w2s, python, key libraries and every plugin."""
    import importlib.metadata as md

    out = {"w2s": __version__, "python": platform.python_version()}
    for lib in ("torch", "transformers", "datasets", "scikit-learn", "numpy"):
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            pass
    out["plugins"] = {r.name: r.version for r in plugins.everything()}
    return out


class Engine:
    """The local, sequential executor and driver: walks the DAG, skips done stages, records."""

    def __init__(self, store: Store, echo: Callable[[str], None] = lambda s: click.echo(s, err=True)):
        self.store = store
        self.echo = echo
        self._trained: dict[str, Trained] = {}
        self._split_records: dict[str, tuple] = {}

    def plan(self, study: Study) -> tuple[list[Stage], list[tuple[Stage, str, dict]]]:
        """The stages and their study links; nothing is written to the store."""
        protocol = Protocol(study, self.store)
        try:
            links = protocol.plan()
        except W2SError as exc:
            raise W2SError(f"{study.path or '<study>'}: {exc}") from None
        self._split_records = protocol.split_records
        stages = list({stage.key: stage for stage, _, _ in links}.values())
        return stages, links

    def status(self, stages: list[Stage]) -> dict[str, str | None]:
        return {s.key: self.store.stage_status(s.key) for s in stages}

    def run(self, study: Study, confirm: Callable[[list[Stage], dict], None] | None = None) -> str:
        """Run (or resume) a study; returns its id. Raises KeyboardInterrupt after recording it.

        `confirm(stages, status)` runs after planning and before any stage: it may raise to stop.
        """
        stages, links = self.plan(study)
        if confirm is not None:
            confirm(stages, self.status(stages))
        for record in self._split_records.values():
            self.store.record_split(*record)
        study_id = self.store.upsert_study(
            study.name, study.toml_text, study.spec_json(), study.hash(), str(study.path) if study.path else None, versions()
        )
        self.store.unlink_stale(study_id, {(stage.key, role) for stage, role, _ in links})
        for stage, role, labels in links:
            self.store.link_stage(study_id, stage.key, role, {k: labels.get(k) for k in ("task", "weak", "strong", "loss", "seed")})
        failed: set[str] = set()
        for i, stage in enumerate(stages, 1):
            prefix = f"[{i}/{len(stages)}] {stage.title}"
            if self.store.stage_status(stage.key) == "done":
                self.echo(f"{prefix}: cached")
                continue
            blocked = [d for d in stage.deps if d in failed]
            if blocked:
                failed.add(stage.key)
                self.echo(f"{prefix}: skipped (an upstream stage failed)")
                continue
            if not self._run_stage(study_id, stage, prefix):
                failed.add(stage.key)
            self._release(stages[i:])
        self._release([])
        status = "failed" if failed else "done"
        self.store.set_study_status(study_id, status)
        if failed:
            raise W2SError(f"{len(failed)} stage(s) failed or were skipped; see `w2s study show {study_id}`. Fix the cause and rerun to resume")
        return study_id

    def _run_stage(self, study_id: str, stage: Stage, prefix: str) -> bool:
        self.echo(f"{prefix}: running")
        self.store.begin_stage(study_id, stage.key, stage.row)
        rc = RunContext(stage, stage.labels.get("seed") or 0, self.store, self)
        start = time.perf_counter()
        try:
            result = stage.run(rc)
        except KeyboardInterrupt:
            self.store.fail_stage(stage.key, time.perf_counter() - start, "interrupted (Ctrl-C)", status="interrupted")
            self.store.set_study_status(study_id, "interrupted")
            raise
        except Exception as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.store.fail_stage(stage.key, time.perf_counter() - start, f"{type(exc).__name__}: {message}\n{traceback.format_exc()}")
            self.echo(f"{prefix}: FAILED: {type(exc).__name__}: {message}")
            return False
        seconds = time.perf_counter() - start
        self.store.finish_stage(stage.key, seconds, result)
        if result.trained is not None:
            self._trained[stage.key] = result.trained
        self.echo(f"{prefix}: done in {seconds:.1f}s")
        return True

    def trained(self, fit: Stage) -> Trained:
        """The fitted model of a fit stage: from memory, else reloaded from its checkpoint."""
        if fit.key not in self._trained:
            path = self.store.artifact(fit.key)
            if path is None or not path.exists():
                raise W2SError(f"checkpoint of stage {fit.key} is missing; delete that stage (w2s query) and rerun")
            self._trained[fit.key] = fit.model.load(path, fit.task)
        return self._trained[fit.key]

    def _release(self, remaining: list[Stage]) -> None:
        """Free fitted models that no remaining stage needs."""
        needed = {d for s in remaining for d in s.deps}
        for key in [k for k in self._trained if k not in needed]:
            self._trained.pop(key).free()

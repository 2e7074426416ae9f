"""The weak-to-strong protocol as a DAG of content-addressed stage descriptions.

For each (weak W, strong S, loss, seed), with seeded disjoint splits A (weak_train),
B (transfer) and T (test):

    weak         = fit(W, A, ground truth)      weak_labels = predict(weak, B)
    student_loss = fit(S, B, weak_labels, loss) ceiling     = fit(S, B, ground truth)
    *_test       = predict(model, T)            evaluate    = PGR, CIs, agreement, flags

Optional, from the study: a grid of weak x strong pairs, a strong baseline (S before
fine-tuning), an oracle student with ground-truth early stopping on V (carved from B),
bootstrapping chains (methods.py) and cross-task evals (evals.py). Nothing here runs a stage.
"""

from __future__ import annotations

import json

import numpy as np

from .. import plugins
from ..api import KEY_SCHEME, Example, Loss, Model, W2SError, check_reward_model, fingerprint, is_pairwise
from .evals import plan_evals
from .folding import fold_predictions
from .methods import baseline_model, grid_pairs, plan_chain
from .stage import CheckpointOf, PredictionsOf, Split, Stage
from .study import Study, StudyTask

Link = tuple[Stage, str, dict]  # a stage, its role in the study, and its result labels


def data_fingerprint(examples: list[Example]) -> str:
    return fingerprint([[e.id, e.text, e.label] for e in examples])


class Protocol:
    """Builds the stage DAG of one study on one of its tasks (a [[task]] grid plans one Protocol per task)."""

    def __init__(self, study: Study, task: StudyTask | None = None):
        task = task or study.tasks[0]
        self.study = study
        self.task = task.task
        self.label = task.label  # how results name the task
        self.task_spec = task.spec
        self.stages: dict[str, Stage] = {}
        self._pools: tuple[list[Example], list[Example]] | None = None
        self._data: dict | None = None
        self.split_records: dict[str, tuple] = {}  # recorded when the study runs, so a dry run stores nothing
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
        spec = self.task_spec
        train, test = self.pools()
        need = spec.n_weak_train + spec.n_transfer
        if need > len(train):
            raise W2SError(
                f"task.n_weak_train + task.n_transfer = {need} but {self.task.name} has only {len(train)} train examples; lower them"
            )
        order = np.random.default_rng(seed).permutation(len(train))
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
            self._data = {"task": self.task.identity(), "train": data_fingerprint(train), "test": data_fingerprint(test)}
        key = fingerprint({**self._data, "seed": seed, "split": name, "n": len(examples), "ids": fingerprint([e.id for e in examples])})
        self.split_records[key] = (key, self.task.name, name, seed, [e.id for e in examples])
        return Split(name, key, examples)

    def transfer_splits(self, seed: int, k: int) -> list[Split]:
        """k disjoint transfer splits after A, for chains; the first one is the usual B."""
        spec = self.task_spec
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
                  validation: Split | None = None, init: Stage | None = None) -> Stage:
        check_reward_model(model, self.task)
        model.check_fit(split.examples, loss, self.task)
        keyed = {"kind": "fit", "task": self.task.identity(), "data": split.key, "model": model.spec(), "loss": loss.spec(),
                 "targets": targets.key if targets else "ground_truth", "seed": seed}
        if init is not None:  # starts from the weights of an adapt stage, not the pretrained ones
            keyed["init"] = init.key
        if validation is not None:  # oracle: checkpoint chosen by ground-truth accuracy on V
            keyed["gt_early_stopping"] = {"validation": validation.key, "eval_every": self.study.spec.gt_early_stopping.eval_every}
        source = f"{targets.labels.get('weak')} labels" if targets else "ground truth"
        title = f"fit {role} {model.label}" + (f" [{loss.name}]" if role == "student" else "") + f" on {split.name} ({source})"
        spec = {"task": self.task.spec(), "model": model.recipe(), "loss": loss.recipe(), "seed": seed,
                "eval_every": keyed.get("gt_early_stopping", {}).get("eval_every")}
        inputs = {"examples": split.examples, "targets": PredictionsOf(targets.key, targets.spec["split"]) if targets else None,
                  "validation": validation.examples if validation is not None else None,
                  "init": CheckpointOf(init.key) if init is not None else None}
        deps = [targets.key] if targets else []
        deps += [init.key] if init is not None else []
        title += " from adapted weights" if init is not None else ""
        row = self._row("fit", role, model, loss, seed, keyed, deps)
        return self.add(Stage(fingerprint(keyed), "fit", role, title, labels, row, deps, spec, inputs, model, self.task))

    def adapt_stage(self, model: Model, split: Split, seed: int, labels: dict) -> Stage:
        """Unsupervised task adaptation (Burns et al. 5.2.2): the strong model's LM loss on `split`'s text, no labels."""
        keyed = {"kind": "adapt", "task": self.task.identity(), "data": split.key, "model": model.spec(), "adapt": model.adaptation,
                 "seed": seed}
        texts = [side for e in split.examples for side in e.pair] if is_pairwise(self.task) else [self.task.render(e) for e in split.examples]
        spec = {"task": self.task.spec(), "model": model.recipe(), "adapt": model.adaptation, "seed": seed}
        row = self._row("adapt", "adapt", model, None, seed, keyed, [])
        title = f"adapt {model.label} on {split.name} text (no labels)"
        return self.add(Stage(fingerprint(keyed), "adapt", "adapt", title, labels, row, [], spec, {"texts": texts}, model, self.task))

    def predict_stage(self, role: str, fit: Stage, split: Split, seed: int, labels: dict) -> Stage:
        keyed = {"kind": "predict", "fit": fit.key, "data": split.key}
        title = f"predict {fit.model.label} ({fit.role}{' ' + fit.labels['loss'] if fit.role == 'student' else ''}) on {split.name}"
        spec = {"task": self.task.spec(), "model": fit.spec["model"], "seed": seed, "split": split.name}
        inputs = {"examples": split.examples, "checkpoint": CheckpointOf(fit.key)}
        row = self._row("predict", role, fit.model, None, seed, keyed, [fit.key])
        return self.add(Stage(fingerprint(keyed), "predict", role, title, labels, row, [fit.key], spec, inputs, fit.model, self.task))

    def evaluate_stage(self, weak_test: Stage, student_test: Stage, ceiling_test: Stage, seed: int, labels: dict,
                       role: str = "evaluate", baseline_test: Stage | None = None, chain_test: Stage | None = None) -> Stage:
        """PGR of student_test between weak_test and ceiling_test; with chain_test (the direct transfer of a chain), also
        the chain's last student against this direct student, on the same test examples."""
        keyed = {"kind": "evaluate", "weak": weak_test.key, "student": student_test.key, "ceiling": ceiling_test.key,
                 "v": 2 if KEY_SCHEME.get() == 2 else 1}  # v2: gap CI, one-class and majority flags
        if baseline_test is not None:
            keyed["baseline"] = baseline_test.key
        if chain_test is not None:
            keyed["chain"] = chain_test.key
        sources = {name: keyed[name] for name in ("weak", "student", "ceiling", "baseline", "chain") if name in keyed}
        inputs = {name: PredictionsOf(key, "test") for name, key in sources.items()}
        title = f"{role.replace('_', ' ')} {labels['weak']} -> {labels['strong']} [{labels['loss']}]"
        deps = list(sources.values())
        row = {"task": self.label, "model": labels["strong"], "loss": labels["loss"], "seed": seed,
               "spec_json": json.dumps(keyed), "upstream_json": json.dumps(deps), "kind": "evaluate", "role": role}
        return self.add(Stage(fingerprint(keyed), "evaluate", role, title, labels, row, deps, {"seed": seed}, inputs))

    def _row(self, kind: str, role: str, model: Model, loss: Loss | None, seed: int, keyed: dict, upstream: list[str]) -> dict:
        return {"kind": kind, "role": role, "task": self.label, "model": model.label, "model_json": json.dumps(model.spec()),
                "loss": loss.name if loss else None, "seed": seed, "spec_json": json.dumps(keyed, default=str),
                "upstream_json": json.dumps(upstream)}

    # -- the protocol ----------------------------------------------------------
    def plan(self) -> list[Link]:
        """Every (stage, role, labels) link of the study, in run order."""
        links: list[Link] = []
        for seed in self.study.seeds:
            a, b, t = self.splits(seed)
            if self.study.chain:
                links += plan_chain(self, seed, a, t)
                continue
            b, v = self.validation_split(b, seed)
            for weak, strongs in grid_pairs(self.study.weak, self.study.strong):
                base = {"task": self.label, "weak": weak.label, "seed": seed}
                weak_fit = self.fit_stage("weak", weak, a, self.ground_truth, None, seed, {**base, "strong": None, "loss": None})
                weak_labels = self.predict_stage("weak_labels", weak_fit, b, seed, weak_fit.labels)
                weak_test = self.predict_stage("weak_test", weak_fit, t, seed, weak_fit.labels)
                links += [(weak_fit, "weak", weak_fit.labels), (weak_labels, "weak_labels", weak_fit.labels), (weak_test, "weak_test", weak_fit.labels)]
                for strong in strongs:
                    links += self.pair(weak_labels, weak_test, strong, (a, b, v, t), seed, {**base, "strong": strong.label})
        return plan_evals(self, links)  # [[eval]]: cross-task stages after each fit (evals.py)

    def pair(self, weak_labels: Stage, weak_test: Stage, strong: Model, splits: tuple, seed: int, pair: dict) -> list[Link]:
        """Ceiling, optional baseline, and per loss a student (plus its oracle twin) for one weak/strong pair."""
        a, b, v, t = splits
        links = []
        init = None
        if strong.adaptation is not None:  # the ceiling and every student start from the adapted weights
            init = self.adapt_stage(strong, b, seed, {**pair, "loss": None})
            links.append((init, "adapt", init.labels))
        ceiling = self.fit_stage("ceiling", strong, b, self.ground_truth, None, seed, {**pair, "loss": None}, init=init)
        ceiling_test = self.predict_stage("ceiling_test", ceiling, t, seed, ceiling.labels)
        links += [(ceiling, "ceiling", ceiling.labels), (ceiling_test, "ceiling_test", ceiling.labels)]
        baseline_test = None
        header = self.study.spec.study
        probe = baseline_model(strong, header.baseline, header.baseline_k_shot)
        if probe is not None:  # strong before fine-tuning (k-shot prompt or linear probe), fit on A's ground truth
            baseline = self.fit_stage("baseline", probe, a, self.ground_truth, None, seed, {**pair, "loss": None})
            baseline_test = self.predict_stage("baseline_test", baseline, t, seed, baseline.labels)
            links += [(baseline, "baseline", baseline.labels), (baseline_test, "baseline_test", baseline.labels)]
        for loss in self.study.losses:
            labels = {**pair, "loss": loss.name}
            student = self.fit_stage("student", strong, b, loss, weak_labels, seed, labels, init=init)
            student_test = self.predict_stage("student_test", student, t, seed, labels)
            evaluate = self.evaluate_stage(weak_test, student_test, ceiling_test, seed, labels, baseline_test=baseline_test)
            links += [(student, "student", labels), (student_test, "student_test", labels), (evaluate, "evaluate", labels)]
            if v is not None and "early_stopping" in strong.capabilities:  # oracle diagnostic, never the headline PGR
                oracle = self.fit_stage("student_oracle", strong, b, loss, weak_labels, seed, labels, validation=v, init=init)
                oracle_test = self.predict_stage("student_oracle_test", oracle, t, seed, labels)
                oracle_eval = self.evaluate_stage(weak_test, oracle_test, ceiling_test, seed, labels, role="oracle_evaluate")
                links += [(oracle, "student_oracle", labels), (oracle_test, "student_oracle_test", labels), (oracle_eval, "oracle_evaluate", labels)]
        return links


def folded(study: Study, links: list[Link]) -> list[Link]:
    """With keep_checkpoints = "needed" (the default), fits that only their own predict stages load predict in their stage."""
    return fold_predictions(links) if study.spec.study.keep_checkpoints == "needed" else links


def plan_study(study: Study) -> tuple[list[Stage], list[Link], list[tuple], list[tuple]]:
    """The study's stages (run order), their study links, the split records to store when it runs, and each task's data pools."""
    links: list[Link] = []
    records: dict[str, tuple] = {}
    pools = []
    for task in study.tasks:
        protocol = Protocol(study, task)
        try:
            links += protocol.plan()
        except W2SError as exc:
            where = f" (task {task.label})" if len(study.tasks) > 1 else ""
            raise W2SError(f"{study.path or '<study>'}{where}: {exc}") from None
        if len(study.tasks) > 1:  # progress lines and the dry run say which task a stage belongs to
            for stage in protocol.stages.values():
                stage.title = f"{task.label}: {stage.title}"
        records.update(protocol.split_records)
        pools.append(protocol.pools())
    links = folded(study, links)
    stages = list({stage.key: stage for stage, _, _ in links}.values())
    return stages, links, list(records.values()), pools
